"""SMTP delivery agent: one route's jobs to a smarthost or the recipients' MX hosts.

Owns: grouping recipients by destination (all to the smarthost or wrapper; else one group
per recipient domain), resolving through the injected resolver, trying hosts and addresses
in order, the TLS mode, AUTH, per-stage timers and the mapping of replies to one Outcome per
recipient. The wire protocol is `masq.proto.smtp_client`, sockets and TLS `masq.net`, TLS
contexts `masq.outbound.tls`. Does not: read the queue, schedule retries, bounce, or pick
routes. Nothing blocks; every wait is a loop timer; errors come back as Outcomes.

Use: `SMTPAgent(loop, Settings.from_route(route, hostname), resolver)`, then
`deliver(job, done)` or `deliver_many(jobs, done_each)`: one connection per destination
carries every message of that call (RSET between; jobs with recipients in several domains
are split into one transaction per domain); separate calls never share a connection. At
most `max_sessions` destinations are served at once.

Failure rules (FAULTS.md 4.4). The next address/MX is tried after a connect failure, a
4xx/5xx greeting (treated as 4xx, as Postfix does), a refused EHLO, a 421, a TLS or AUTH
problem, a timeout or a dropped connection, for the messages not yet tried; a transaction
that had started keeps its result (a drop or timeout in it is a temp failure; after the
final dot the text says the message may have been delivered twice). 5xx to MAIL or DATA or
after the dot fails the transaction's recipients, 5xx to RCPT that recipient; every 4xx and
every local or protocol fault is temporary. Hostile replies never raise.
TLS modes: none; opportunistic (STARTTLS when offered; a failed handshake, certificate
checks included, is retried once on that address without TLS, and then without AUTH);
starttls (required: not offered, refused or failed defers 4.7.x, no fallback, no AUTH);
tls (implicit; port 465 unless `port` is set). With a `wrapper` (argv by sh rules, never a
shell; its stderr is ours), 'tls' means the wrapper encrypts. AUTH runs only when
`auth_user` is set, by `choose_mechanism`'s rules; if the server offers AUTH but no
mechanism safe on this link, the host is deferred; if it offers none, mail goes unauthed.
"""

import os
import shlex
import signal
import socket
from collections import deque

from masq import net
from masq.outbound import tls
from masq.outbound.outcome import Outcome
from masq.proto import smtp_client as C
from masq.proto.reply import RemoteProtocolError

# RFC 5321 §4.5.3.2 (connect and command are ours); seconds.
TIMEOUTS = {"connect": 30.0, "greeting": 300.0, "command": 300.0, "mail": 300.0,
            "rcpt": 300.0, "data": 120.0, "block": 180.0, "final": 600.0, "quit": 10.0}
_TIMER_FOR = {"GREETING": "greeting", "EHLO": "command", "HELO": "command",
              "STARTTLS": "command", "AUTH": "command", "RSET": "command", "QUIT": "quit",
              "MAIL": "mail", "RCPT": "rcpt", "DATA": "data", "DOT": "final"}
LOW_WATER = 65536   # message text buffered for the socket before reading more


class Settings:
    """The route values the agent uses; `from_route` reads them from a config section."""

    DEFAULTS = {"smarthost": None, "port": 25, "tls": "opportunistic", "tls_verify": True,
                "tls_ca": None, "auth_user": None, "auth_pass": None, "helo": "localhost",
                "wrapper": None, "connect_error_fail": False, "pipelining": True,
                "max_sessions": 4, "timeouts": None}

    def __init__(self, **values):
        unknown = set(values) - set(self.DEFAULTS)
        if unknown:
            raise TypeError("unknown SMTP settings: %s" % ", ".join(sorted(unknown)))
        for name, default in self.DEFAULTS.items():
            setattr(self, name, values.get(name, default))
        self.timeouts = dict(TIMEOUTS, **(self.timeouts or {}))
        helo = self.helo or "localhost"
        self.helo = "[%s]" % helo if _is_ip(helo) else helo if helo.isascii() else "localhost"

    @classmethod
    def from_route(cls, route, hostname="localhost"):
        """Return Settings for a route section (masq.config); helo defaults to hostname."""
        port = route.port
        if route.tls == "tls" and not route.is_set("port"):
            port = 465
        timeouts = {}
        if route.is_set("timeout"):
            timeouts = {name: route.timeout for name in TIMEOUTS if name != "connect"}
        return cls(smarthost=route.smarthost, port=port, tls=route.tls,
                   tls_verify=route.tls_verify, tls_ca=route.tls_ca,
                   auth_user=route.auth_user, auth_pass=route.auth_pass,
                   helo=route.helo or hostname, wrapper=route.wrapper,
                   connect_error_fail=route.connect_error_fail, timeouts=timeouts)


def _is_ip(text):
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return True
        except (OSError, ValueError):
            pass
    return False


def split_host_port(text, default_port):
    """Return (host, port) from 'host', 'host:port', '[v6]' or '[v6]:port'."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":") if text.count(":") == 1 else (text, "", "")
    return host, int(port) if port.isdigit() else default_port


class SMTPAgent:
    """Delivers Jobs over SMTP for one route: `deliver(job, done)`."""

    def __init__(self, loop, settings, resolver):
        self.loop = loop
        self.settings = settings if isinstance(settings, Settings) \
            else Settings.from_route(settings)
        self.resolver = resolver
        self._active, self._waiting = 0, deque()

    def deliver(self, job, done):
        """Deliver one job; done(list of Outcome in job.recipients order)."""
        self.deliver_many([job], lambda job, outcomes: done(outcomes))

    def deliver_many(self, jobs, done_each):
        """Deliver jobs sharing connections per destination; done_each(job, outcomes)."""
        groups = {}
        for job in jobs:
            result = _Result(job, done_each)
            by_key = {}
            for i, address in enumerate(job.recipients):
                key = None if self.settings.smarthost or self.settings.wrapper \
                    else address.rpartition("@")[2].lower()
                by_key.setdefault(key, []).append(i)
            for key, indices in by_key.items():
                groups.setdefault(key, []).append(_Part(job, indices, result))
        for key, parts in groups.items():
            self._waiting.append(_Destination(self, key, parts))
        self._start_waiting()

    def _start_waiting(self):
        while self._waiting and self._active < self.settings.max_sessions:
            self._active += 1
            self._waiting.popleft().start()

    def _destination_done(self):
        self._active -= 1
        self.loop.call_soon(self._start_waiting)


class _Result:
    """One job's outcomes as its parts finish; reports once, when all are in."""

    def __init__(self, job, done_each):
        self.job, self.done_each = job, done_each
        self.outcomes = [None] * len(job.recipients)
        self.left = len(job.recipients)
        if not self.left:
            done_each(job, [])

    def set(self, indices, outcomes):
        for i, outcome in zip(indices, outcomes):
            self.left -= self.outcomes[i] is None
            self.outcomes[i] = outcome
        if self.left == 0:
            self.left = -1
            self.done_each(self.job, self.outcomes)


class _Part:
    """Some recipients of one job going to one destination: one mail transaction."""

    __slots__ = ("job", "indices", "result")

    def __init__(self, job, indices, result):
        self.job, self.indices, self.result = job, indices, result

    def envelope(self):
        job, pick = self.job, self.indices
        return C.Envelope(job.sender, tuple(job.recipients[i] for i in pick), job.size or 0,
                          job.body8bit, job.smtputf8, job.ret, job.envid,
                          tuple(job.notify[i] for i in pick), tuple(job.orcpt[i] for i in pick))

    def finish(self, outcomes):
        self.result.set(self.indices, outcomes)


class _Destination:
    """One smarthost or one recipient domain: its candidate addresses and its parts."""

    def __init__(self, agent, key, parts):
        self.agent, self.key, self.settings = agent, key, agent.settings
        self.pending = deque(parts)     # parts not yet started on any connection
        self.candidates = deque()       # (host name, ip, port)
        self.connected = False          # some attempt got past connect()
        self.error = None

    def start(self):
        """Resolve the destination, then try its addresses in order."""
        s, resolver = self.settings, self.agent.resolver
        if s.wrapper:
            host = split_host_port(s.smarthost, s.port)[0] if s.smarthost else "wrapper"
            self.candidates.append((host, None, None))
        elif s.smarthost or (self.key or "").startswith("["):
            text = s.smarthost or self.key.replace("ipv6:", "")
            host, port = split_host_port(text, s.port)
            if not _is_ip(host):
                return resolver.resolve_host(host, lambda r: self._resolved(r, host, port))
            self.candidates.append((host, host, port))
        elif not self.key:
            return self._give_up(Outcome.perm("5.1.3", "recipient address has no domain"))
        else:
            return resolver.resolve_mx(self.key, self._resolved)
        self.next_attempt()

    def _resolved(self, result, host=None, port=None):
        if result.error is not None:
            error = result.error
            make = Outcome.temp if error.temporary else Outcome.perm
            return self._give_up(make(error.status, error.text))
        if host is not None:
            hosts = [(host, result.addresses)]
        else:
            hosts, port = result.hosts, self.settings.port
        self.candidates.extend((name, ip, port) for name, ips in hosts for ip in ips)
        self.next_attempt()

    def next_attempt(self, plaintext=False):
        """Open a session to the next candidate (or the same one, without TLS)."""
        if not self.pending:
            return self._finished()
        if not self.candidates:
            return self._give_up(self.error or Outcome.temp(
                "4.4.3", "no address to connect to for %s" % (self.key or "the smarthost")))
        host, ip, port = self.candidates.popleft()
        _Session(self, host, ip, port, plaintext).start()

    def take_part(self):
        """Return the next part to send, or None."""
        return self.pending.popleft() if self.pending else None

    def session_over(self, session, outcome, retry):
        """Go on after a session: retry is None, "next" (address) or "plain" (same, no TLS)."""
        self.connected |= session.connected
        self.error = outcome or self.error
        if retry == "plain":
            self.candidates.appendleft((session.host, session.ip, session.port))
        if retry and self.pending:
            return self.agent.loop.call_soon(lambda: self.next_attempt(retry == "plain"))
        self._give_up(outcome)

    def _give_up(self, outcome):
        if self.pending and outcome is None:
            outcome = Outcome.temp("4.4.0", "session ended early")
        if outcome and self.settings.connect_error_fail and not self.connected:
            outcome = Outcome.perm("5.4.4", outcome.text + " (connect_error_fail)")
        while self.pending:
            part = self.pending.popleft()
            part.finish([outcome] * len(part.indices))
        self._finished()

    def _finished(self):
        if self.agent is not None:
            agent, self.agent = self.agent, None
            agent._destination_done()


class _Stream(net.Stream):
    """A net.Stream that calls `on_drain` (once, next turn) when its buffer runs low."""

    on_drain = None

    def _flush(self):
        super()._flush()
        if self.on_drain is not None and not self.closed and len(self.out) < LOW_WATER:
            callback, self.on_drain = self.on_drain, None
            self.loop.call_soon(callback)


class _Session:
    """One connection (or wrapper process) and the transactions sent over it."""

    def __init__(self, dest, host, ip, port, plaintext):
        self.dest, self.settings, self.loop = dest, dest.settings, dest.agent.loop
        self.host, self.ip, self.port = host, ip, port
        self.name = host if not ip else "[%s]" % ip if ip == host else "%s[%s]" % (host, ip)
        self.plaintext = plaintext      # a retry after a failed opportunistic handshake
        self.client = C.Client(self.settings.helo, self.settings.pipelining)
        self.stream = self.connector = self.timer = self.child = self.part = None
        self.body = self.armed = None
        self.implicit = self.settings.tls == "tls" and not self.settings.wrapper
        self.encrypted = self.settings.tls == "tls" and bool(self.settings.wrapper)
        self.tls_refused = self.authed = self.connected = self.over = False
        self.sent = 0

    def start(self):
        """Connect (or spawn the wrapper) and let the greeting drive the rest."""
        if self.settings.wrapper:
            return self._spawn()
        self.connector = net.Connector(self.loop, self.ip, self.port, self._connected,
                                       self.settings.timeouts["connect"])

    def _spawn(self):
        """Run the wrapper on one end of a socketpair (argv by sh rules, never a shell)."""
        ours = theirs = None
        try:
            argv = shlex.split(self.settings.wrapper)
            ours, theirs = socket.socketpair()
            fd = theirs.fileno()
            self.child = os.posix_spawnp(argv[0], argv, os.environ, setsigdef=(
                signal.SIGPIPE,), file_actions=[(os.POSIX_SPAWN_DUP2, fd, 0),
                                                (os.POSIX_SPAWN_DUP2, fd, 1)])
        except (OSError, ValueError, IndexError) as exc:
            if ours is not None:
                ours.close()
            return self._end(Outcome.temp("4.4.1", "cannot run wrapper %r: %s"
                                          % (self.settings.wrapper, exc)), None)
        finally:
            if theirs is not None:
                theirs.close()
        self.loop.watch_child(self.child, self._child_exited)
        self._connected(ours, None)

    def _child_exited(self, status):
        self.child = None

    def _connected(self, sock, error):
        self.connector = None
        if error is not None:
            return self._end(Outcome.temp("4.4.1", "connect to %s: %s" % (self.name, error)),
                             "next")
        self.connected = True
        self.stream = _Stream(self.loop, sock, self._on_data, self._on_close)
        if self.implicit:
            self._start_tls()
        else:
            self.stream.resume_reading()
        self._arm()

    # Reading: bytes into the engine, events through the _EVENTS table.

    def _on_data(self, data):
        self.client.receive_data(data)
        try:
            while self.stream is not None and not self.stream.closed:
                event = self.client.next_event()
                if event is C.NEED_DATA:
                    break
                if not self.over or type(event) in (C.QuitReply, C.ConnectionClosed):
                    _EVENTS[type(event)](self, event)
        except RemoteProtocolError as exc:
            return self._lost(self.client.state, "protocol error: %s" % exc.reply.text[0],
                              exc.reply.enhanced or "4.5.0")
        self._flush()
        self._arm()

    def _on_close(self, reason):
        if not self.over:
            self._lost(self.client.state, reason)

    def _flush(self):
        data = self.client.data_to_send()
        if data and self.stream is not None:
            self.stream.write(data)

    # Timers: one per awaited reply (re-armed only when a reply completes, so slow-drip
    # replies still time out), one per block of message text, one for the handshake.

    def _arm(self):
        kind = self.client.waiting_for
        if self.over or self.client.state in (C.BODY, C.HANDSHAKE) or kind is None:
            return
        if (kind, self.client.replies) != self.armed:
            self._set_timer(_TIMER_FOR[kind], "waiting for the reply to %s" % kind)
            self.armed = (kind, self.client.replies)

    def _set_timer(self, stage, doing):
        if self.timer is not None:
            self.timer.cancel()
        self.armed = None
        self.timer = self.loop.call_later(self.settings.timeouts[stage],
                                          lambda: self._lost(self.client.state,
                                                             "timeout " + doing))

    # Events

    def _on_greeting(self, event):
        if self.client.state == C.REFUSED:
            self._refused(event.reply, "greeting")

    def _on_hello(self, event):
        if self.client.state == C.REFUSED:
            return self._refused(event.reply, "EHLO/HELO")
        self._proceed()

    def _refused(self, reply, what):
        status = "4" + reply.enhanced[1:] if reply.enhanced else "4.4.0"
        self._end(Outcome.temp(status, "%s refused the session (%s): %s"
                               % (self.name, what, reply)), "next")

    def _proceed(self):
        """After EHLO: STARTTLS if the mode wants it, then AUTH if configured, then mail."""
        s, ext = self.settings, self.client.extensions
        if s.tls in ("opportunistic", "starttls") and not (
                self.encrypted or self.plaintext or self.tls_refused):
            if "STARTTLS" in ext:
                return self.client.starttls()
            if s.tls == "starttls":
                return self._end(Outcome.temp("4.7.0", "%s does not offer STARTTLS, which "
                                              "the route requires" % self.name), "next")
        if s.auth_user and not self.authed:
            mechanism = None if self.plaintext else C.choose_mechanism(
                ext.auth, self.encrypted, plaintext_ok=s.tls == "none")
            if mechanism:
                return self.client.authenticate(mechanism, s.auth_user, s.auth_pass or "")
            if ext.auth:
                return self._end(Outcome.temp("4.7.0", "%s: not sending credentials without "
                                              "TLS (server offers AUTH %s)" % (
                                                  self.name, " ".join(sorted(ext.auth)))),
                                 "next")
        self._next_message()

    def _on_starttls(self, event):
        if event.reply.code == 220:
            return self._start_tls()
        if self.settings.tls == "starttls":
            return self._end(Outcome.temp("4.7.0", "%s refused STARTTLS: %s"
                                          % (self.name, event.reply)), "next")
        self.tls_refused = True
        self._proceed()

    def _start_tls(self):
        context, error = tls.context(self.settings.tls_verify, self.settings.tls_ca)
        if error is None:
            try:
                name = self.host.encode("ascii")
            except UnicodeError:
                error = "host name %r is not ASCII" % self.host
        if error is not None:
            return self._tls_failed(error)
        self._set_timer("command", "in the TLS handshake")
        self.stream.start_tls(context, False, self._handshake_done, server_hostname=name)

    def _handshake_done(self, error):
        if self.over:
            return
        if error is not None:
            return self._tls_failed(tls.describe_failure(error, self.name))
        self.encrypted = True
        if not self.implicit:
            self.client.tls_done()
            self._flush()
        self._arm()

    def _tls_failed(self, text):
        if self.settings.tls == "opportunistic":
            return self._end(Outcome.temp("4.7.5", text + "; retrying without TLS"), "plain",
                             close=True)
        self._end(Outcome.temp("4.7.5", text), "next", close=True)

    def _on_auth(self, event):
        if event.reply.is_positive():
            self.authed = True
            return self._next_message()
        status = "4" + event.reply.enhanced[1:] if event.reply.enhanced else "4.7.8"
        self._end(Outcome.temp(status, "%s: authentication failed: %s"
                               % (self.name, event.reply)), "next")

    def _next_message(self):
        part = self.dest.take_part()
        if part is None:
            return self._end(None, None)
        if self.sent:
            self.client.reset()
        self.sent += 1
        self.part = part
        self.client.send_mail(part.envelope())

    def _on_body(self, event):
        try:
            self.body = iter(self.part.job.open_body())
        except OSError as exc:
            return self._abort(Outcome.temp("4.3.0", "cannot read the message: %s" % exc))
        self._pump()

    def _pump(self):
        """Feed message text while the socket keeps up; then wait for it to drain."""
        while not self.over and self.client.state == C.BODY:
            if len(self.stream.out) >= LOW_WATER:
                self.stream.on_drain = self._pump
                return self._set_timer("block", "sending the message text")
            try:
                chunk = next(self.body, None)
            except OSError as exc:
                return self._abort(Outcome.temp("4.3.0", "cannot read the message: %s" % exc))
            if chunk is None:
                self.body = None
                self.client.end_body()
            else:
                self.client.send_body(chunk)
            self._flush()
        self._arm()

    def _on_done(self, event):
        part, self.part = self.part, None
        part.finish(_outcomes(event, len(part.indices), self.name))
        replies = (event.mail, event.data, event.final) + event.rcpts
        if any(r is not None and r.code == 421 for r in replies):
            return self._end(Outcome.temp("4.4.2", "%s closed the session (421)" % self.name),
                             "next")
        self._next_message()

    def _on_reset(self, event):
        pass    # a failed RSET shows in the MAIL reply that follows

    def _on_quit(self, event):
        self._close()

    def _on_eof(self, event):
        self._lost(event.state, "connection closed by the server")

    # Ending

    def _lost(self, state, why, status="4.4.2"):
        """The connection failed (drop, timeout, protocol error) in engine state `state`."""
        if self.over:
            return self._close()
        if state == C.DOT and not (self.stream is not None and self.stream.out):
            why += (" after the end of the message, before the reply: the message may have "
                    "been delivered and may be delivered twice")
        elif state in (C.BODY, C.DOT):
            why += " while sending the message text (not delivered)"
        self._abort(Outcome.temp(status, "%s: %s" % (self.name, why)))

    def _abort(self, outcome):
        if self.part is not None:
            part, self.part = self.part, None
            part.finish([outcome] * len(part.indices))
        self._end(outcome, "next", close=True)

    def _end(self, outcome, retry, close=False):
        """Stop this session (politely with QUIT unless close) and report to the destination."""
        if self.over:
            return
        self.over = True
        if self.connector is not None:
            self.connector.cancel()
        if not close and self.stream is not None and self.client.state in (C.READY,
                                                                            C.REFUSED):
            self.client.quit()
            self._flush()
            self._set_timer("quit", "waiting for the reply to QUIT")
        else:
            self._close()
        self.dest.session_over(self, outcome, retry)

    def _close(self):
        if self.timer is not None:
            self.timer.cancel()
        if self.body is not None and hasattr(self.body, "close"):
            self.body.close()
        self.body = None
        if self.stream is not None:
            self.stream.on_drain = None
            self.stream.close("closed by us")
        if self.child is not None:
            try:
                os.kill(self.child, signal.SIGTERM)
            except OSError:
                pass


_EVENTS = {
    C.Greeting: _Session._on_greeting, C.Hello: _Session._on_hello,
    C.StartTLSReply: _Session._on_starttls, C.AuthReply: _Session._on_auth,
    C.BodyRequest: _Session._on_body, C.TransactionDone: _Session._on_done,
    C.ResetReply: _Session._on_reset, C.QuitReply: _Session._on_quit,
    C.ConnectionClosed: _Session._on_eof,
}


def _said(reply, what, where):
    return Outcome.from_reply(reply, "%s (reply to %s)" % (where, what))


def _outcomes(done, count, where):
    """Return the Outcomes a finished transaction means for its recipients."""
    if not done.mail.is_positive():
        return [_said(done.mail, "MAIL FROM", where)] * count
    outcomes = []
    for reply in done.rcpts:
        if reply is None:
            outcomes.append(Outcome.temp("4.4.2", "%s: no reply to RCPT TO" % where))
        elif not reply.is_positive():
            outcomes.append(_said(reply, "RCPT TO", where))
        elif done.final is not None:
            outcomes.append(_said(done.final, "end of data", where))
        elif done.data is not None and not done.data.is_positive():
            outcomes.append(_said(done.data, "DATA", where))
        else:
            outcomes.append(Outcome.temp("4.4.2", "%s: transaction ended early" % where))
    return outcomes
