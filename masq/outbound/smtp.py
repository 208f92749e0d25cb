"""SMTP delivery agent: one route's jobs to a smarthost or the recipients' MX hosts.

Owns: grouping recipients by destination (all to the smarthost or wrapper; else one group
per recipient domain), resolving through the injected resolver, trying hosts and addresses
in order, and collecting one Outcome per recipient. Each connection is a
`masq.outbound.smtp_session.SMTPClientSession` (the TLS mode, AUTH, per-stage timers and the mapping
of replies to Outcomes); the wire protocol is `masq.proto.smtp_client`, sockets and TLS
`masq.base.net`, TLS contexts `masq.outbound.tls`. Does not: read the queue, schedule retries,
bounce, or pick routes. Nothing blocks; every wait is a loop timer; errors come back as
Outcomes.

Use: `SMTPAgent(loop, SMTPSettings.from_route(route, hostname), resolver)`, then
`deliver(job, done)` or `deliver_many(jobs, done_each)`: one connection per destination
carries every message of that call (RSET between; jobs with recipients in several domains
are split into one transaction per domain); separate calls never share a connection. At
most `max_sessions` destinations are served at once.

Failure rules. The next address/MX is tried after a connect failure, a
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

import socket
from collections import deque

from masq.outbound.outcome import Outcome
from masq.outbound.smtp_session import LOW_WATER, SMTPClientSession
from masq.proto import smtp_client as C

__all__ = ["TIMEOUTS", "LOW_WATER", "SMTPSettings", "SMTPAgent", "split_host_port"]

# RFC 5321 §4.5.3.2 (connect and command are ours); seconds.
TIMEOUTS = {"connect": 30.0, "greeting": 300.0, "command": 300.0, "mail": 300.0,
            "rcpt": 300.0, "data": 120.0, "block": 180.0, "final": 600.0, "quit": 10.0}


class SMTPSettings:
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
        """Return SMTPSettings for a route section (masq.config.schema); helo defaults to
        hostname."""
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
        self.settings = settings if isinstance(settings, SMTPSettings) \
            else SMTPSettings.from_route(settings)
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

    def envelope(self, binary=False):
        """Return the transaction's envelope; `binary`: the BINARYMIME text goes as it is
        (else a binary job's text goes converted, as 8BITMIME text where offered)."""
        job, pick = self.job, self.indices
        return C.OutgoingEnvelope(job.sender, tuple(job.recipients[i] for i in pick),
                                  job.size or 0, job.body8bit or job.binary, job.smtputf8,
                                  job.ret, job.envid, tuple(job.notify[i] for i in pick),
                                  tuple(job.orcpt[i] for i in pick), binary)

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
        SMTPClientSession(self, host, ip, port, plaintext).start()

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
