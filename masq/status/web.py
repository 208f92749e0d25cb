"""The status page: HTTP on `status_listen`, served from the daemon's own loop.

Owns the listening socket, its connections (masq.base.net.Stream over the sans-IO engine in
masq.proto.http), the routes (GET / page, GET /status.json, POST /flush, /online, /retry,
/delete) and who may use them:
- Listening on anything but loopback needs `status_password` (start-up fails otherwise);
  then every request needs HTTP Basic with it (any user name; the browser asks and keeps
  it). Failures are answered after a delay and limited per client address.
  On loopback without a password there is no login, but the Host header must name a
  loopback address (a DNS-rebinding page cannot ride on the browser).
- Viewing needs nothing more. Actions (POST) change the queue, so they need the authority
  the control socket asks for: with a password, knowing it (the administrator); without
  one, the client must be a local user the kernel names (masq.status.peer), and that user
  may do what `masq` commands allow the same user (control_commands: trusted users may do
  anything, others retry and flush online routes, and delete only their own mail).
  A client that cannot be named gets 403 (docs/CONFIG.md, "The status page").
- Every POST carries a CSRF token: HMAC-SHA256 under a per-daemon secret over the nonce in
  the `masq` cookie (HttpOnly, SameSite=Strict), delivered in the page, checked with
  hmac.compare_digest. A POST whose Origin is not this host is refused.
This module is what an idle daemon holds: the socket and the start-up checks. The requests
(masq.status.serve: the HTTP engine, the page, the routes, hashlib for CSRF tokens) are
imported at the first client, so an idle router does not hold them (about 4 MB of RSS).
Hostile input: every request. Bad requests get 4xx; a bug answers 500 and is logged.
Does not: speak TLS (Basic and the password cross the LAN in clear: keep it on loopback or
a trusted LAN), nor render HTML (masq.status.page does).
"""

from masq.base import exits, net
from masq.base.host import Component
from masq.base.ip import is_loopback

MAX_CONNECTIONS = 32
SERVE_MODULES = ("masq.status.serve", "masq.policy.passwords")


def parse_listen(text):
    """Return (ip, port) for a status_listen value `HOST:PORT` or `[V6]:PORT`."""
    from masq.config.kinds import parse_ip_port   # the configuration checked it with this
    try:
        return parse_ip_port(text)
    except ValueError:
        raise exits.Failure("status_listen %r: use IP:PORT (e.g. 127.0.0.1:8025 or "
                            "[::1]:8025)" % text, exits.CONFIG) from None


class StatusWeb(Component):
    """The status page component of the daemon."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.loop = daemon.loop
        self.log = daemon.log
        self.sock = None
        self.guard = None
        self.settings = None          # (status_listen, status_password) in force
        self.connections = set()

    def start(self):
        """Bind status_listen (if set); refuse a non-loopback address without a password."""
        self._open(self.daemon.cfg.main)

    def _open(self, main):
        self.settings = (main.status_listen, main.status_password)
        self.guard = None
        if not main.status_listen:
            return
        ip, port = parse_listen(main.status_listen)
        if not main.status_password and not is_loopback(ip):
            raise exits.Failure("status_listen %s is not a loopback address: set "
                                "status_password (the page would be open to the network)"
                                % main.status_listen, exits.CONFIG)
        if main.status_password and not _hashed(main.status_password):
            self.log.warning("status_password is plain text: store a hash as `masq passwd` "
                             "makes")
        try:
            self.sock = net.listen(ip, port)
        except OSError as exc:
            raise exits.Failure("cannot listen on status_listen %s: %s"
                                % (main.status_listen, exc.strerror), exits.CONFIG) from None
        self.loop.add_reader(self.sock, self._accept)
        self.log.info("status page on http://%s/", main.status_listen)

    def stop(self):
        """Close the socket and every connection."""
        if self.sock is not None:
            self.loop.remove_reader(self.sock)
            self.sock.close()
            self.sock = None
        for conn in list(self.connections):
            conn.stream.close("shutdown")

    def reload(self, cfg):
        """Re-open on a changed address or password; on a bad one, stop listening."""
        main = cfg.main
        if (main.status_listen, main.status_password) == self.settings:
            return
        self.stop()
        try:
            self._open(main)
        except exits.Failure as exc:
            self.log.error("status page closed: %s", exc)

    def _accept(self):
        for _ in range(16):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.log.error("status page: accept failed: %s", exc.strerror)
                return
            if len(self.connections) >= MAX_CONNECTIONS:
                _refuse(sock)
                continue
            from masq.status import serve
            if self.guard is None:      # at the first client: its secret, its limits
                self.guard = serve.Guard(self.settings[1])
            conn = serve.Connection(self, sock, addr[0])
            self.connections.add(conn)
            conn.start()

    def handle(self, conn, req):
        """Answer one request (now, or later through the context)."""
        from masq.status import serve
        serve.handle(self, conn, req)


def _hashed(password):
    from masq.policy import passwords
    return passwords.is_hashed(password)


def _refuse(sock):
    """Answer 503 (best effort, never blocking) and close: too many connections."""
    try:
        sock.setblocking(False)
        sock.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                  b"Retry-After: 1\r\nConnection: close\r\n\r\n")
    except OSError:
        pass
    sock.close()
