"""QMTP and QMQP delivery agents: a route whose smarthost is `qmtp:HOST[:PORT]` (port 209)
or `qmqp:HOST[:PORT]` (port 628).

Owns: resolving the smarthost (the injected resolver), trying its addresses in order, one
connection per `deliver_many` call carrying its jobs one package after another, streaming
each message from the spool under a low-water mark (encoding #1: CRLF lines, exactly as
queued, no dot-stuffing and no line scanning), and turning the server's K/Z/D response per
recipient into Outcomes (K ok; Z temporary; D permanent; an RFC 3463 code after "#" in the
text is the status). Does not: read the queue, retry, bounce or pick routes.

The server is hostile: a malformed response, a drop or a timeout is a temporary Outcome
for the package in flight (after its last byte: it may have been delivered twice) and
the packages not yet sent go to the next address. Timeouts: `connect`, and the route's
`timeout` for each block of text and for the responses. QMTP has no TLS and no AUTH: a
route's `tls` and `auth_user` do not apply to it. A package declares its text's size
first: the queued size, or, for a route that rewrites addresses or a BINARYMIME text
converted to base64 (masq/outbound/binary.py), the size of that copy counted in a first pass; a text whose size changed meanwhile is cut off
(the server drops the connection's package) and deferred.

QMQP differs in three ways: one message per connection (the jobs of a call go one after
another, each on a fresh connection), the text goes with LF line ends (counted in a first
pass, converted as it streams), and the one response holds for every recipient.
"""

import re
from collections import deque

from masq.base import net
from masq.outbound.outcome import Outcome
from masq.outbound.smtp import TIMEOUTS, split_host_port
from masq.outbound.smtp_session import LOW_WATER, DrainingStream
from masq.proto import qmqp, qmtp
from masq.proto.errors import ProtocolError
from masq.route import has_rewrites

PORTS = {"qmtp": 209, "qmqp": 628}
_STATUS = re.compile(r"#([245]\.[0-9]{1,3}\.[0-9]{1,3})")


def outcome(kind, text, where):
    """Return the Outcome a QMTP response (kind K, Z or D and its text) means."""
    match = _STATUS.search(text)
    status = match.group(1) if match else {"K": "2.0.0", "Z": "4.0.0", "D": "5.0.0"}[kind]
    said = "%s said: %s" % (where, text)
    if kind == "K":
        return Outcome.ok(said, status)
    if kind == "Z":
        return Outcome.temp("4" + status[1:], said)
    return Outcome.perm("5" + status[1:], said)


class QMTPAgent:
    """Delivers Jobs over QMTP (or QMQP) to one route's smarthost."""

    def __init__(self, loop, route, resolver):
        self.loop, self.resolver = loop, resolver
        self.protocol, _, rest = route.smarthost.partition(":")
        self.host, self.port = split_host_port(rest, PORTS[self.protocol])
        self.timeout = route.timeout
        self.connect_timeout = TIMEOUTS["connect"]

    def deliver(self, job, done):
        """Deliver one job; done(list of Outcome in job.recipients order)."""
        self.deliver_many([job], lambda job, outcomes: done(outcomes))

    def deliver_many(self, jobs, done_each):
        """Deliver jobs over one connection (QMQP: one after another, a connection each);
        done_each(job, outcomes) for each."""
        if self.protocol == "qmtp":
            return _Connection(self, deque(jobs), done_each).start()
        jobs = deque(jobs)

        def next_one(job=None, outcomes=None):
            if job is not None:
                done_each(job, outcomes)
            if jobs:
                _Connection(self, deque([jobs.popleft()]), next_one).start()
        next_one()


class _Connection:
    """One connection to the smarthost (or the attempts to get one) and its packages."""

    def __init__(self, agent, jobs, done_each):
        self.agent, self.loop, self.jobs, self.done_each = agent, agent.loop, jobs, done_each
        self.candidates = deque()
        self.stream = self.connector = self.timer = self.job = self.body = None
        self.qmqp = agent.protocol == "qmqp"
        self.client = qmqp.Client() if self.qmqp else qmtp.Client()
        self.tail = b""
        self.where = agent.host
        self.left = self.sent_all = 0
        self.error = None
        self.replies = []               # responses to the package in flight so far

    def start(self):
        host = self.agent.host
        self.agent.resolver.resolve_host(host, self._resolved)

    def _resolved(self, result):
        if result.error is not None:
            make = Outcome.temp if result.error.temporary else Outcome.perm
            return self._give_up(make(result.error.status, result.error.text))
        self.candidates.extend(result.addresses)
        self._next_address()

    def _next_address(self):
        if not self.jobs:
            return self._close()
        if not self.candidates:
            return self._give_up(self.error or Outcome.temp(
                "4.4.3", "no address to connect to for %s" % self.agent.host))
        ip = self.candidates.popleft()
        self.where = "%s[%s]:%d" % (self.agent.host, ip, self.agent.port)
        self.connector = net.Connector(self.loop, ip, self.agent.port, self._connected,
                                       self.agent.connect_timeout)

    def _connected(self, sock, error):
        self.connector = None
        if error is not None:
            self.error = Outcome.temp("4.4.1", "connect to %s: %s" % (self.where, error))
            return self._next_address()
        self.client = qmqp.Client() if self.qmqp else qmtp.Client()
        self.stream = DrainingStream(self.loop, sock, self._on_data, self._on_close)
        self.stream.resume_reading()
        self._next_job()

    # one package after another

    def _next_job(self):
        if not self.jobs:
            return self._close()
        self.job = self.jobs[0]
        job = self.job
        try:
            size = job.size
            if self.qmqp:
                size = sum(len(chunk) for chunk in _lf(job.open_body()))
                self.body = _lf(job.open_body())
            else:
                if not job.size_exact or (job.route is not None and has_rewrites(job.route)):
                    size = sum(len(chunk) for chunk in job.open_body())
                self.body = iter(job.open_body())
            self.left = size
        except Exception as exc:        # the text cannot be read: this job only
            self.jobs.popleft()
            self._finish(self.job, Outcome.temp("4.3.0", "cannot read the message: %s"
                                                % exc))
            return self._next_job()
        self.sent_all = False
        if self.qmqp:
            head, self.tail = self.client.start(size, job.sender, job.recipients)
        else:
            head, self.tail = self.client.start(size), self.client.end(job.sender,
                                                                       job.recipients)
        self.stream.write(head)
        self._pump()

    def _pump(self):
        """Send text while the socket keeps up; then wait for it to drain."""
        while self.body is not None:
            if len(self.stream.out) >= LOW_WATER:
                self.stream.on_drain = self._pump
                return self._set_timer("sending the message")
            try:
                chunk = next(self.body, None)
            except Exception as exc:
                return self._lost("cannot read the message: %s" % exc, "4.3.0")
            if chunk is None:
                self.body = None
                if self.left != 0:
                    return self._lost("the message's size changed while it was sent",
                                      "4.3.0")
                self.stream.write(self.tail)
                self.sent_all = True
                return self._set_timer("waiting for the responses")
            if len(chunk) > self.left:
                return self._lost("the message's size changed while it was sent", "4.3.0")
            self.left -= len(chunk)
            self.stream.write(chunk)

    def _on_data(self, data):
        if self.job is None:
            return
        self.client.receive_data(data)
        try:
            if self.qmqp:
                response = self.client.response()
                responses = [response] * len(self.job.recipients) if response else []
            else:
                responses = self.client.responses()
        except ProtocolError as exc:
            return self._lost("protocol error: %s" % exc, "4.5.0")
        if not self.sent_all and responses:
            return self._lost("a response before the end of the package", "4.5.0")
        self.replies += responses
        job = self.job
        if len(self.replies) >= len(job.recipients):
            replies, self.replies = self.replies[:len(job.recipients)], []
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.jobs.popleft()
            self.job = None
            self._finish(job, [outcome(kind, text, self.where) for kind, text in replies])
            self._next_job()

    def _on_close(self, reason):
        if self.stream is not None:
            self.stream = None
            self._lost("connection closed by the server (%s)" % reason)

    # ending

    def _set_timer(self, doing):
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(self.agent.timeout,
                                          lambda: self._lost("timeout " + doing))

    def _lost(self, why, status="4.4.2"):
        """The connection failed: the package in flight is deferred, the rest go on to the
        next address."""
        if self.job is not None:
            if self.sent_all:
                why += (" after the whole message was sent: it may have been delivered "
                        "and may be delivered twice")
            job, self.job = self.jobs.popleft(), None
            self._finish(job, Outcome.temp(status, "%s: %s" % (self.where, why)))
        self.error = Outcome.temp(status, "%s: %s" % (self.where, why))
        self._drop_stream()
        self._next_address()

    def _finish(self, job, outcomes):
        if isinstance(outcomes, Outcome):
            outcomes = [outcomes] * len(job.recipients)
        for each in outcomes:
            each.relay = self.where
        self.done_each(job, outcomes)

    def _give_up(self, outcome):
        while self.jobs:
            self._finish(self.jobs.popleft(), outcome)
        self._close()

    def _drop_stream(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.body is not None and hasattr(self.body, "close"):
            self.body.close()
        self.body = None
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.on_drain = None
            stream.on_close = lambda reason: None
            stream.close("closed by us")

    def _close(self):
        self._drop_stream()
        if self.connector is not None:
            self.connector.cancel()
            self.connector = None


def _lf(chunks):
    """Yield the text with LF line ends (QMQP's) from CRLF text, a CRLF split between
    chunks included."""
    held = b""
    for chunk in chunks:
        chunk = held + chunk
        held = b"\r" if chunk.endswith(b"\r") else b""
        if held:
            chunk = chunk[:-1]
        if chunk:
            yield chunk.replace(b"\r\n", b"\n")
    if held:
        yield held
