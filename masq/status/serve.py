"""The status page's requests: each client's HTTP engine, the routes and who may use them.

Owns what masq.status.web describes under "who may use them": the Host check, HTTP Basic
with `status_password` (remembered under a per-daemon secret), CSRF tokens (HMAC-SHA256
over the cookie nonce), the routes (GET / page, GET /status.json, POST /flush, /online, /retry,
/delete), and each connection's engine (masq.proto.http) and idle deadline.

Imported by masq.status.web at the first client, never by an idle daemon: it brings the
HTTP engine, the page (masq.status.page) and hashlib. Hostile input: every request. Bad
requests get 4xx; a bug answers 500 and is logged.
"""

import hashlib
import hmac
import os
import re
import time

from masq.base import compat, net
from masq.base.ip import is_loopback
from masq.outbound.removal import remove_messages
from masq.policy.users import may_force, may_remove, trusted, user_name
from masq.proto import http
from masq.status import page, peer

IDLE_TIMEOUT = 30.0
MAX_BODY = 64 * 1024
REMEMBER = 3600.0
FAILURE_DELAY = 1.0
COOKIE = "masq"
_NONCE = re.compile(r"[0-9a-f]{32}\Z")


class Guard:
    """Who may do what: the password, CSRF tokens, failure limits."""

    def __init__(self, password):
        from masq.inbound.auth import Limiter
        self.secret = os.urandom(32)
        self.password = password or None
        self.good = {}                # HMAC of a good Authorization value -> expiry
        self.limiter = Limiter()

    def token(self, nonce):
        """Return the CSRF token for a cookie nonce."""
        return hmac.new(self.secret, b"csrf:" + nonce.encode(), hashlib.sha256).hexdigest()

    def token_ok(self, nonce, given):
        """Return True if given is the token of nonce (constant time)."""
        return bool(nonce and given) and hmac.compare_digest(self.token(nonce), given)

    def basic(self, value, now):
        """Return True if an `Authorization: Basic` value holds the password.

        The hash is costly (PBKDF2, tens of ms on a router) and the page polls: a good
        value is remembered, under the secret, for a while."""
        credentials = http.parse_basic(value)
        if credentials is None:
            return False
        key = hmac.new(self.secret, value.encode("latin-1"), hashlib.sha256).digest()
        if self.good.get(key, 0) > now:
            return True
        from masq.policy import passwords
        if not passwords.verify(self.password, credentials[1]):
            return False
        self.good = {k: t for k, t in self.good.items() if t > now}
        if len(self.good) < 8:
            self.good[key] = now + REMEMBER
        return True


def new_nonce():
    """Return a fresh random cookie nonce."""
    return os.urandom(16).hex()


def handle(web, conn, req):
    """Answer one request to web (now, or later through the context)."""
    ctx = Context(web, conn, req)
    try:
        _route(web, ctx)
    except http.ProtocolError as exc:     # framing in doubt: close after it
        close = (("Connection", "close"),) if exc.reply in (400, 411, 413) else ()
        ctx.answer(json_response(exc.reply, {"ok": False, "error": exc.what}, close))
    except Exception as exc:        # a bug: logged, never a traceback to the client
        import traceback
        web.log.error("status page: internal error: %s", "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)).strip())
        ctx.answer(json_response(500, {"ok": False, "error": "internal error"}))


def _route(web, ctx):
    req = ctx.req
    handlers = ROUTES.get(req.path)
    if handlers is None:
        raise http.ProtocolError("no such page", 404)
    method = "GET" if req.method == "HEAD" else req.method
    if method not in handlers:
        ctx.answer(json_response(405, {"ok": False, "error": "method not allowed"},
                                 (("Allow", ", ".join(sorted(handlers))),)))
        return
    handler = handlers[method]
    if not (web.guard.password or is_loopback_host(req.header("host"))):
        raise http.ProtocolError("use a loopback address (Host header)", 403)
    if method == "POST":
        ctx.read_form()
    if not ctx.authenticate():
        return
    if method == "POST" and not web.guard.token_ok(ctx.nonce, ctx.form.get("csrf")):
        raise http.ProtocolError("bad or missing CSRF token: reload the page", 403)
    if method == "POST" and not web.guard.password:
        ctx.uid = ctx.conn.peer_uid()
        if ctx.uid is None:
            raise http.ProtocolError("actions need status_password, or a "
                                     "client on this host that masq can name", 403)
    handler(ctx)


def is_loopback_host(value):
    """Return True if a Host header value names a loopback address (or is absent)."""
    if value is None:
        return True
    host = http.host_of(value)
    if host.lower() == "localhost":
        return True
    return is_loopback(host)


class Context:
    """One request as the route handlers see it."""

    def __init__(self, web, conn, req):
        self.web, self.conn, self.req = web, conn, req
        self.daemon, self.guard = web.daemon, web.guard
        self.form = {}
        nonce = http.parse_cookies(req.header("cookie")).get(COOKIE)
        self.nonce = nonce if nonce and _NONCE.match(nonce) else None
        self.cookie_set = None         # a nonce to hand out with the answer
        self.answered = False
        self.uid = None                # the local user asking for an action (no password)

    def read_form(self):
        """Parse the POST body as a form; check Content-Length and Origin."""
        if self.req.header("content-length") is None:
            raise http.ProtocolError("POST needs Content-Length", 411)
        origin = self.req.header("origin")
        if origin is not None and origin.partition("://")[2] != self.req.header("host", ""):
            raise http.ProtocolError("cross-origin request refused", 403)
        self.form = http.parse_form(self.req.body)
        if self.req.header("x-csrf-token"):
            self.form.setdefault("csrf", self.req.header("x-csrf-token"))

    def authenticate(self):
        """Return True if the client may go on; else answer 401 or 429 (maybe later)."""
        guard, now, ip = self.guard, self.web.loop.time(), self.conn.ip
        if not guard.password:
            return True
        value = self.req.header("authorization")
        if value is None:
            self.denied()
            return False
        if guard.limiter.blocked(ip, now):
            raise http.ProtocolError("too many failed logins: try again later", 429)
        if guard.basic(value, now):
            return True
        guard.limiter.failed(ip, now)
        self.web.log.warning("status page: failed login from %s", ip)
        self.web.loop.call_later(FAILURE_DELAY, self.denied)
        return False

    @property
    def admin(self):
        """Return True if the client proved the page's password (it may do anything)."""
        return bool(self.guard.password)

    def who(self):
        """Return who asks, for the log: the address, and the local user if known."""
        if self.uid is None:
            return "the status page (%s)" % self.conn.ip
        return "the status page (%s, user %s)" % (self.conn.ip, user_name(self.uid))

    def scheduler(self):
        """Return the daemon's scheduler (503 when no delivery service runs)."""
        if self.daemon.scheduler is None:
            raise http.ProtocolError("no delivery service runs", 503)
        return self.daemon.scheduler

    def message(self):
        """Return the queued message named by the form's `id` (404 if there is none)."""
        msg = self.daemon.queue.get(self.form.get("id", ""))
        if msg is None:
            raise http.ProtocolError("no such message", 404)
        return msg

    def run_done(self, what):
        """Return a done(summary) callback: the answer if it comes at once, else a log line."""
        def done(summary):
            if not self.answered:
                self.answer(json_response(200, dict(summary, ok=True, started=False)))
            else:
                self.web.log.info("status page %s: %d delivered, %d deferred, %d bounced",
                                  what, summary["delivered"], summary["deferred"],
                                  summary["bounced"])
        self.web.loop.call_soon(lambda: self.answer(json_response(
            200, {"ok": True, "started": True})))
        return done

    def denied(self):
        """Answer 401 with a Basic challenge."""
        challenge = ("WWW-Authenticate", 'Basic realm="masq status", charset="UTF-8"')
        if self.req.path == "/":
            self.answer_page(page.DENIED, 401, (challenge,))
        else:
            self.answer(json_response(401, {"ok": False, "error": "log in"}, (challenge,)))

    def ensure_nonce_token(self):
        """Return the CSRF token, handing out a cookie nonce if the client has none."""
        if self.nonce is None:
            self.nonce = self.cookie_set = new_nonce()
        return self.guard.token(self.nonce)

    def answer_page(self, html, status=200, headers=()):
        """Answer with an HTML page (with its Content-Security-Policy)."""
        self.answer(http.Response(status, (("Content-Type", "text/html; charset=utf-8"),
                                           ("Content-Security-Policy", page.CSP)) + headers,
                                  html.encode("utf-8")))

    def answer(self, response):
        """Send response with the common headers (and the cookie, if a new one is due)."""
        if self.answered:
            return
        self.answered = True
        headers = list(response.headers) + common_headers(self.web.loop.time())
        if self.cookie_set:
            headers.append(("Set-Cookie", "%s=%s; Path=/; HttpOnly; SameSite=Strict"
                             % (COOKIE, self.cookie_set)))
        self.conn.answer(http.Response(response.status, tuple(headers), response.body))


def json_response(status, obj, headers=()):
    """Return a JSON response."""
    return http.Response(status, (("Content-Type", "application/json"),) + tuple(headers),
                         compat.dumps(obj).encode("utf-8"))


def common_headers(now):
    """Return the headers every answer carries (the date now, no caching, no sniffing, no
    framing)."""
    return [("Date", http.format_date(time.gmtime(now))), ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer")]


class Connection:
    """One HTTP client: the engine, its stream, the idle timer (it also bounds sending
    the last answer to a client that does not read)."""

    def __init__(self, web, sock, ip):
        self.web, self.ip = web, ip
        self.loop = web.loop
        self.engine = http.HTTPServer(max_body=MAX_BODY)
        self.stream = net.Stream(self.loop, sock, self._data, self._closed)
        self.timer = None
        self.busy = False
        try:
            self.ends = (sock.getsockname(), sock.getpeername())
        except OSError:
            self.ends = None

    def peer_uid(self):
        """Return the uid of the local user at the other end, or None if it is not one."""
        return None if self.ends is None else peer.uid_of(*self.ends)

    def start(self):
        """Start reading, with the idle deadline."""
        self.stream.resume_reading()
        self._arm()

    def _arm(self):
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(IDLE_TIMEOUT, lambda: self.stream.close("idle"))

    def _data(self, data):
        self.engine.receive_data(data)
        self._pump()

    def _pump(self):
        while not self.busy and not self.stream.closed:
            try:
                event = self.engine.next_event()
            except http.ProtocolError as exc:
                self.busy = True
                self.answer(http.error_response(exc))
                return
            if event is http.NEED_DATA or event is http.PAUSED:
                break
            if isinstance(event, http.ConnectionClosed):
                self._close_when_sent()
                return
            if isinstance(event, http.ExpectContinue):
                self.stream.write(self.engine.send_continue())
                continue
            self.busy = True
            self.timer.cancel()                 # re-armed by the answer
            self.web.handle(self, event)
        if self.stream.closed:
            return
        if self.engine.wants_data:
            self.stream.resume_reading()
        else:
            self.stream.pause_reading()

    def answer(self, response):
        """Send the answer to the current request (a no-op once the client is gone)."""
        if self.stream.closed or not self.busy:
            return
        self.busy = False
        self.stream.write(self.engine.send(response))
        if self.engine.closing:
            self._close_when_sent()
            return
        self._arm()
        self.loop.call_soon(self._pump)

    def _close_when_sent(self):
        """Close once the answer is out (a big one outgrows the socket buffer), or at the
        idle deadline for a client that does not read it."""
        self._arm()
        self.stream.close_when_flushed()

    def _closed(self, reason):
        if self.timer is not None:
            self.timer.cancel()
        self.web.connections.discard(self)


# the routes

def _page(ctx):
    ctx.answer_page(page.render(ctx.ensure_nonce_token()))


def _status_json(ctx):
    ctx.answer(json_response(200, ctx.daemon.status()))


def _flush(ctx):
    name = ctx.form.get("route") or None
    if name is not None and name not in ctx.daemon.online.by_name:
        raise http.ProtocolError("no route named %r" % name, 404)
    refusal = None if ctx.admin or name is None else may_force(ctx.daemon, ctx.uid, name)
    if refusal:
        raise http.ProtocolError(refusal, 403)
    scheduler = ctx.scheduler()
    ctx.web.log.info("%s: flush %s", ctx.who(), name or "all routes")
    scheduler.flush(name, forced=name is not None, done=ctx.run_done("flush"))


def _online(ctx):
    """`masq online ROUTE up|down|auto` from the page: root, the daemon's user, trusted
    users, or whoever has the status password."""
    name, how = ctx.form.get("route"), ctx.form.get("how")
    if name not in ctx.daemon.online.by_name:
        raise http.ProtocolError("no route named %r" % name, 404)
    if how not in ("up", "down", "auto"):
        raise http.ProtocolError("say up, down or auto", 400)
    if not ctx.admin and not trusted(ctx.daemon, ctx.uid):
        raise http.ProtocolError("permission denied: only root, the daemon's "
                                 "user and trusted users set a route up or down", 403)
    ctx.daemon.online.set_override(name, how, ctx.daemon.loop.time())
    route = ctx.daemon.online.get(name)
    ctx.web.log.info("%s: route %s set %s: now %s", ctx.who(), name, how,
                     "online" if route.online else "offline")
    ctx.answer(json_response(200, {"ok": True, "route": route.to_json()}))


def _retry(ctx):
    msg = ctx.message()
    ctx.web.log.info("%s: retry %s", ctx.who(), msg.id)
    ctx.scheduler().flush(None, done=ctx.run_done("retry"), ids=[msg.id])


def _delete(ctx):
    msg = ctx.message()
    who = ctx.who()
    may = (lambda m: True) if ctx.admin else may_remove(ctx.daemon, ctx.uid)
    if not may(msg):
        raise http.ProtocolError("permission denied: %s is not your message"
                                 % msg.id, 403)

    def removed(reply):
        status = 200 if reply["ok"] else 500 if reply["removed"] else 404
        ctx.answer(json_response(status, reply))
    remove_messages(ctx.daemon, [msg.id], who, may, removed)


ROUTES = {           # path -> {method: handler}
    "/": {"GET": _page},
    "/status.json": {"GET": _status_json},
    "/flush": {"POST": _flush},
    "/online": {"POST": _online},
    "/retry": {"POST": _retry},
    "/delete": {"POST": _delete},
}
