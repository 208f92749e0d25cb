"""SMTP listeners: the sockets of `list listen`, accepting clients into Sessions.

Owns the listen URLs (`smtp://HOST:PORT`, `submission://…` where every transaction needs
AUTH, `smtps://…` with TLS from the first byte, `qmtp://…` and `qmqp://…` whose sessions
are `masq.inbound.qmtp`'s; `?auth=plain` lets AUTH be offered without
TLS on that listener), the TLS server context (`tls_cert`, `tls_key`; with `relay_cert`
it asks clients for a certificate, checked against `tls_client_ca`, and notes a listed
one on the session's peer), the limits that are not one session's business (connections
in all and per client address, an IPv6 client counted by its /64, the client timeout that
shrinks under load, for sessions already running too, free space), and the settings
sessions read.

Never dies on accept errors (EMFILE: accepting pauses for a second). A client over a limit
gets `421 4.7.0` and is closed without a session.

An idle daemon holds only the socket: the session, the SMTP engine, relay policy (and
ipaddress) are imported at the first client, so a router that never receives mail over
SMTP never loads them (about 1 MB of RSS). With `option user` the daemon imports them
before it drops root (SESSION_MODULES).
"""

import os

from masq.base import net
from masq.base.host import Component, MessagesQueued
from masq.config.kinds import fingerprint
from masq.outbound import maillog
from masq.inbound import auth
from masq.proto.reply import Reply

SESSION_MODULES = ("masq.inbound.session", "masq.policy.local", "masq.policy.relay",
                   "masq.proto.smtp_server")

KINDS = ("smtp", "submission", "smtps", "qmtp", "qmqp")
LOAD_TIMEOUT = 10.0
MIN_FREE = 1 << 20


class ListenError(Exception):
    """A listen URL is malformed or cannot be bound."""


def parse_url(url):
    """Return (kind, host, port, allow_plain_auth) for a listen URL."""
    kind, sep, rest = url.partition("://")
    if not sep or kind not in KINDS:
        raise ListenError("listen %r: use smtp://, submission://, smtps://, qmtp:// or "
                          "qmqp://" % url)
    rest, _, query = rest.partition("?")
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port[1:]
    else:
        host, _, port = rest.rpartition(":")
    default = {"smtp": 25, "submission": 587, "smtps": 465, "qmtp": 209, "qmqp": 628}[kind]
    try:
        port = int(port) if port else default
    except ValueError:
        raise ListenError("listen %r: bad port" % url) from None
    return kind, host or "0.0.0.0", port, query == "auth=plain"


class ListenerSettings:
    """What sessions need from the configuration, computed once per (re)load."""

    def __init__(self, cfg):
        main = cfg.main
        self.hostname = main.hostname
        self._main = main
        self._locality = None
        self.relay_net = tuple(main.relay_net)
        self._relay_nets = None
        self.max_recipients = main.max_recipients
        self.max_size = main.max_message_size
        self.timeout = main.smtp_timeout
        self.min_data_rate = main.smtp_min_data_rate
        self.refuse_bare = main.bare_line_ends == "refuse"
        self.save_envelope_to = main.do_save_envelope_to
        self.defer_all = main.defer_all
        self.max_connections = main.max_connections
        self.max_per_ip = main.max_connections_per_ip
        self.local_users = tuple(main.local_users)
        self.caseless = main.caseless_matching
        self.relay_certs = frozenset(fingerprint(text) for text in main.relay_cert)
        # AUTH accounts: a user section without a password only names a mailbox
        self.users = {name: u for name, u in cfg.users.items() if u.password}
        self.greet_delay = main.smtp_greet_delay
        self.check_helo = main.check_helo
        self.check_sender_domain = main.check_sender_domain
        self.checks = (tuple(main.dnsbl), tuple(main.dnswl), main.dnsbl_threshold,
                       main.check_helo, main.check_sender_domain, main.dns_server,
                       main.hosts_file)
        self.checking = bool(main.dnsbl or main.dnswl or main.check_helo or
                             main.check_sender_domain)
        self.greylist = None        # greylisting's settings (masq/policy/greylist.py), if on
        if main.greylist:
            from masq.policy import greylist
            self.greylist = greylist.Settings(main)
        self.archive = None         # archive copies (masq/policy/archive.py), if configured
        if cfg.copies_wanted():
            from masq.policy import archive
            self.archive = archive.Rules(main)

    @property
    def locality(self):
        """Return which addresses are local (policy.local.Locality), built at the first
        client."""
        if self._locality is None:
            from masq.policy import local
            self._locality = local.Locality.from_config(self._main)
        return self._locality

    @property
    def relay_nets(self):
        """Return the relay_net networks, parsed when the first client asks."""
        if self._relay_nets is None:
            from masq.policy import relay
            self._relay_nets = relay.parse_networks(self.relay_net)
        return self._relay_nets


class Listener(Component):
    """One listening socket and its sessions (a component of the daemon or of `-bs`)."""

    def __init__(self, host, url, shared):
        self.host = host
        self.loop = host.loop
        self.log = host.log
        self.queue = host.queue
        self.url = url
        self.kind, self.address, self.port, self.plain_auth = parse_url(url)
        self.shared = shared          # connection counts and aliases shared by every listener
        shared.setdefault("listeners", []).append(self)
        self.settings = ListenerSettings(host.cfg)
        self.limiter = shared.setdefault("limiter", auth.Limiter())
        self.auth_delay = auth.FAILURE_DELAY
        self.tls_context = None
        self.sock = None
        self.sessions = set()

    def start(self):
        """Build the TLS context and bind the socket."""
        self.tls_context = _tls_context(self.host.cfg.main, self.kind)
        try:
            self.sock = net.listen(self.address, self.port)
        except OSError as exc:
            raise ListenError("cannot listen on %s: %s" % (self.url, exc.strerror)) from None
        self.loop.add_reader(self.sock, self._accept)
        self.log.info("listening on %s", self.url)

    def stop(self):
        """Close the socket and say goodbye to every session."""
        if self.sock is not None:
            self.loop.remove_reader(self.sock)
            self.sock.close()
            self.sock = None
        for session in list(self.sessions):
            session.transport.write(session.engine.shutdown())
            session.transport.close("shutdown")
        if self in self.shared.get("listeners", ()):
            self.shared["listeners"].remove(self)
        if not self.shared.get("listeners") and self.shared.get("checks") is not None:
            self.shared.pop("checks").close()
        if "greylist" in self.shared:
            self.shared["greylist"].save()

    def reload(self, cfg):
        """Take new settings (a changed listen list needs a restart)."""
        self.settings = ListenerSettings(cfg)

    # accepting

    def _accept(self):
        for _ in range(16):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.log.error("accept on %s failed: %s", self.url, exc.strerror)
                self.loop.remove_reader(self.sock)
                self.loop.call_later(1.0, self._resume)
                return
            self._admit(conn, addr[0])

    def _resume(self):
        if self.sock is not None:
            self.loop.add_reader(self.sock, self._accept)

    def _admit(self, conn, ip):
        counts = self.shared.setdefault("per_ip", {})
        total, key = sum(counts.values()), net.client_key(ip)
        refusal = None
        if total >= self.settings.max_connections:
            refusal = "too many connections"
        elif counts.get(key, 0) >= self.settings.max_per_ip:
            refusal = "too many connections from %s" % key
        if refusal:
            _refuse(conn, Reply(421, "4.7.0", "%s %s; try again later" % (self.settings.hostname,
                                                                      refusal)))
            self.log.warning("refused %s: %s", ip, refusal)
            return
        counts[key] = counts.get(key, 0) + 1
        if not self._busy(total) and self._busy(total + 1):    # every timeout shrinks now
            for listener in self.shared["listeners"]:
                for session in listener.sessions:
                    session.reschedule()
        self._session(conn, ip)

    def _session(self, conn, ip):
        from masq.inbound.session import SMTPServerSession
        from masq.policy import relay
        peer = relay.Peer(ip, relay.in_networks(ip, self.settings.relay_nets), None, self.kind)
        engine = self._engine(tls_active=self.kind == "smtps")
        checks = self._checks(peer, conn)
        transport = net.Stream(self.loop, conn, None, None)
        session = SMTPServerSession(self, transport, peer, engine, checks)
        transport.on_data, transport.on_close = session.on_data, session.on_close
        self.sessions.add(session)
        if self.kind == "smtps":
            transport.start_tls(self.tls_context, True,
                                lambda error: self._tls_ready(session, error))
        else:
            session.start()

    def _checks(self, peer, conn):
        """Return the dialogue checks for a new client, or None when none are configured.

        One Checks (and its resolver) serves every listener; a reload that changes the
        options makes a new one."""
        if not self.settings.checking or peer.trusted_net:
            return None
        checks = self.shared.get("checks")
        if checks is None or checks.settings.checks != self.settings.checks:
            from masq.inbound.checks import Checks
            if checks is not None:
                checks.close()
            checks = self.shared["checks"] = Checks(self.loop, self.log, self.settings,
                                                    self.host.cfg.main)
        checks.settings = self.settings
        try:
            local_ip = conn.getsockname()[0]
        except OSError:
            local_ip = None
        return checks.session(peer, local_ip)

    def _tls_ready(self, session, error):
        if error is not None:
            self.log.info("TLS handshake with %s failed: %s", session.peer.ip, error)
            session.transport.close("TLS handshake failed")
            return
        self.tls_established(session)
        session.start()

    def tls_established(self, session):
        """Note a listed client certificate (relay_cert) once a TLS handshake is done."""
        from masq.policy import relay
        cert = relay.certificate(session.transport.peer_certificate(),
                                 self.settings.relay_certs)
        if cert is not None:
            session.peer.cert = cert
            self.log.info("%s presented listed certificate sha256:%s", session.peer.ip, cert)

    def _engine(self, tls_active):
        from masq.proto.smtp_server import SMTPServer
        mechanisms = ("PLAIN", "LOGIN") if self.settings.users else ()
        return SMTPServer(
            self.settings.hostname, max_size=self.settings.max_size,
            tls_available=self.tls_context is not None, tls_active=tls_active,
            auth_mechanisms=mechanisms, auth_needs_tls=not self.plain_auth)

    # what sessions ask of the listener

    def timeout(self):
        """Return the client timeout: the configured one, or a short one under load."""
        busy = self._busy(sum(self.shared.get("per_ip", {}).values()))
        return min(LOAD_TIMEOUT, self.settings.timeout) if busy else self.settings.timeout

    def _busy(self, connections):
        return connections >= 0.8 * self.settings.max_connections

    def now(self):
        """Return the wall-clock time for envelopes."""
        return self.loop.time()

    def space_refusal(self, declared_size):
        """Return 452 4.3.1 when the spool lacks room for a message, else None."""
        from masq.inbound.session import NO_SPACE
        need = int(1.5 * (declared_size or min(self.settings.max_size, MIN_FREE)))
        try:
            stat = os.statvfs(self.queue.dir)
        except OSError:
            return None
        return NO_SPACE if stat.f_bavail * stat.f_frsize < need else None

    def is_local_user(self, addr):
        """Return True if addr (a local Address) is a recipient this host delivers to
        (None: can't tell)."""
        from masq.policy import local
        caseless = self.settings.caseless
        globs = self._glob_aliases()
        full = "%s@%s" % (addr.local, addr.domain or self.settings.hostname)
        if globs and globs.match(full, caseless) is not None:
            return True
        names = self._alias_names()
        if local.is_local_user(addr.local, self.settings.local_users, names or (), caseless):
            return True
        return None if names is None or globs is None else False

    def _glob_aliases(self):
        """Return the glob aliases (False: no globalias_file; None: it is broken)."""
        from masq.aliases import file as aliases
        path = self.host.cfg.main.globalias_file
        if not path:
            return False
        glob_file = self.shared.get("globaliases")
        if glob_file is None or glob_file.path != path:
            glob_file = self.shared["globaliases"] = aliases.AliasFile(path,
                                                                         aliases.parse_globs)
        try:
            return glob_file.get()
        except aliases.AliasError as exc:
            self.log.warning("glob aliases: %s", exc)
            return None

    def _alias_names(self):
        """Return the names the aliases file defines (lower-cased); None if it is broken.

        One AliasFile serves every listener: it parses the file again only when it changed."""
        from masq.aliases import file as aliases
        path = self.host.cfg.main.alias_file
        alias_file = self.shared.get("aliases")
        if alias_file is None or alias_file.path != path:
            alias_file = self.shared["aliases"] = aliases.AliasFile(path)
        try:
            return frozenset(alias_file.get().names(self.settings.caseless))
        except aliases.AliasError as exc:
            self.log.warning("aliases: %s", exc)
            return None

    def accepted(self, txn, peer):
        """Note an accepted message (from peer) in the log and tell the host."""
        self.host.counters["accepted"] += 1
        uid = peer.uid                      # -bs from a local process
        maillog.received(self.log, txn.id, txn.sender, txn.size, len(txn.recipients),
                         client=None if uid is not None else "unknown[%s]" % peer.ip,
                         uid=uid)
        self.host.publish(MessagesQueued((txn.id,)))

    def greylisted(self, peer, sender, rcpt):
        """Return a 450 reply if greylisting holds sender -> rcpt from peer back, else None.

        One greylist serves every listener (masq/inbound/greylisting.py)."""
        greylist = self.shared.get("greylist")
        if greylist is None:
            from masq.inbound.greylisting import Greylisting
            greylist = self.shared["greylist"] = Greylisting(self.host, self.queue.dir,
                                                             self.settings.greylist)
        return greylist.check(self.settings.greylist, peer, sender, rcpt)

    def authenticate(self, session, event):
        """Answer an AUTH request for session."""
        auth.authenticate(self, session, event)

    def session_closed(self, session):
        """Forget a finished session."""
        self.sessions.discard(session)
        counts = self.shared.get("per_ip", {})
        key = net.client_key(session.peer.ip)
        if counts.get(key, 0) <= 1:
            counts.pop(key, None)
        else:
            counts[key] -= 1


def _refuse(conn, reply):
    try:
        conn.setblocking(False)
        conn.send(reply.to_bytes())
    except OSError:
        pass
    conn.close()


def _tls_context(main, kind):
    """Return the server SSLContext, or None when no certificate is configured."""
    if not (main.tls_cert and main.tls_key):
        if kind == "smtps":
            raise ListenError("smtps:// needs option tls_cert and tls_key")
        return None
    import ssl
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(main.tls_cert, main.tls_key)
        if main.relay_cert:         # requested, never required; judged by fingerprint
            context.load_verify_locations(main.tls_client_ca)
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise ListenError("cannot load tls_cert/tls_key/tls_client_ca: %s" % exc) from None
    return context
