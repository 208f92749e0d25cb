"""SMTP delivery session: one connection (or wrapper process) and the transactions it carries.

Owns: connecting (or spawning the `wrapper`), feeding the `masq.proto.smtp_client` engine
and dispatching its events (one table, `_EVENTS`), STARTTLS or implicit TLS, the AUTH step,
streaming message text under a low-water mark (with CRLF line ends only: a bare CR or LF
in a queued body of old mail goes out as CRLF, a text whose envelope says its writer made
it CRLF only (`crlf`) is not looked at again; after DATA, or in BDAT chunks of the queue's own chunk
size when the server offers CHUNKING), the 8-bit downgrade for a server without 8BITMIME
(`masq.mail.downgrade`: the text is read first, a slice per loop turn, and, if it holds
8-bit octets, scanned line by line; a message that cannot be made 7-bit fails 5.6.3
before MAIL), a BINARYMIME text (RFC 3030): as it is, by BDAT with BODY=BINARYMIME, to a
server offering BINARYMIME and CHUNKING (with PIPELINING), else with its binary parts
converted to base64 the same way first (5.6.3 when it cannot be: never binary after
DATA), the per-stage timers, QUIT, and turning a
finished transaction's replies into one Outcome per recipient. It applies the failure rules
and TLS modes stated in `masq.outbound.smtp`.
Does not: resolve, choose addresses, group recipients or retry: its destination
(`smtp._Destination`) hands it parts (`take_part`) and hears how it ended
(`session_over(session, outcome, retry)`; retry is None, "next" for the next address, or
"plain" for the same address without TLS).

The server is hostile: its replies and protocol faults never raise out of here. A drop, a
timeout or a protocol error becomes a temporary Outcome for the transaction in flight
(noting when the message may have been delivered twice); the parts not yet sent stay with
the destination for its next address.
"""

import os
import shlex
import signal
import socket

from masq.base import net
from masq.base.child import Child
from masq.mail import downgrade, message
from masq.outbound import tls
from masq.outbound.outcome import Outcome
from masq.proto import smtp_client as C
from masq.proto.errors import ConnectionClosed, ProtocolError

_TIMER_FOR = {"GREETING": "greeting", "EHLO": "command", "HELO": "command",
              "STARTTLS": "command", "AUTH": "command", "RSET": "command", "QUIT": "quit",
              "MAIL": "mail", "RCPT": "rcpt", "DATA": "data", "DOT": "final", "BDAT": "final"}
LOW_WATER = 65536   # message text buffered for the socket before reading more
TURN = 1 << 20      # message text fed in one loop turn: then replies and others' turns


class DrainingStream(net.Stream):
    """A net.Stream that calls `on_drain` (once, next turn) when its buffer runs low."""

    on_drain = None

    def _flush(self):
        super()._flush()
        if self.on_drain is not None and not self.closed and len(self.out) < LOW_WATER:
            callback, self.on_drain = self.on_drain, None
            self.loop.call_soon(callback)


class SMTPClientSession:
    """One connection (or wrapper process) and the transactions sent over it."""

    def __init__(self, dest, host, ip, port, plaintext):
        self.dest, self.settings, self.loop = dest, dest.settings, dest.agent.loop
        self.host, self.ip, self.port = host, ip, port
        self.name = host if not ip else "[%s]" % ip if ip == host else "%s[%s]" % (host, ip)
        self.plaintext = plaintext      # a retry after a failed opportunistic handshake
        self.client = C.Client(self.settings.helo, self.settings.pipelining)
        self.stream = self.connector = self.timer = self.child = self.part = None
        self.body = self.armed = self.line_ends = self.plan = self.scanning = None
        self.raw = False                # this part's BINARYMIME text goes as it is
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
        try:
            argv = shlex.split(self.settings.wrapper)
            ours, theirs = socket.socketpair()
        except (OSError, ValueError) as exc:
            return self._wrapper_failed(exc)
        self.child = Child(self.loop, self._child_exited)
        with theirs:
            started = argv and self.child.spawn(argv, stdin=theirs.fileno(),
                                                stdout=theirs.fileno(), stderr=None,
                                                env=os.environ, session=False)
        if not started:
            ours.close()
            return self._wrapper_failed(self.child.error or "empty command")
        self._connected(ours, None)

    def _wrapper_failed(self, why):
        self.child = None
        return self._end(Outcome.temp("4.4.1", "cannot run wrapper %r: %s"
                                      % (self.settings.wrapper, why)), None)

    def _child_exited(self, child):
        self.child = None

    def _connected(self, sock, error):
        self.connector = None
        if error is not None:
            return self._end(Outcome.temp("4.4.1", "connect to %s: %s" % (self.name, error)),
                             "next")
        self.connected = True
        self.stream = DrainingStream(self.loop, sock, self._on_data, self._on_close)
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
                if not self.over or type(event) in (C.QuitReply, ConnectionClosed):
                    _EVENTS[type(event)](self, event)
        except ProtocolError as exc:
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
        self.part, self.plan = part, None
        ext = self.client.extensions
        self.raw = part.job.binary and self.client.takes_binary()
        if part.job.binary and not self.raw:
            return self._scan()
        if "8BITMIME" not in ext and ("SMTPUTF8" in ext or not C.needs_smtputf8(
                part.envelope())):      # else send_mail refuses it: 5.6.7, not 5.6.3
            return self._scan()
        self._send_part()

    def _send_part(self):
        if self.sent:
            self.client.reset()
        self.sent += 1
        self.client.send_mail(self.part.envelope(self.raw))
        self._flush()
        self._arm()

    def _scan(self):
        """Find what the downgrade must convert, a slice of the text per loop turn."""
        job = self.part.job
        self.plan = downgrade.Plan("8BITMIME" not in self.client.extensions, job.binary)
        try:
            self.scanning = downgrade.scan_steps(_text(job), self.plan,
                                                 reopen=lambda: _text(job))
        except Exception as exc:
            return self._abort(Outcome.temp("4.3.0", "cannot read the message: %s" % exc))
        if self.timer is not None:
            self.timer.cancel()
        self.armed = None
        self._scan_step()

    def _scan_step(self):
        if self.over or self.scanning is None:
            return
        try:
            for _ in range(8):
                next(self.scanning)
        except StopIteration:
            self.scanning = None
            return self._send_part()
        except downgrade.Impossible as exc:
            self.scanning = None
            part, self.part = self.part, None
            if self.plan.binary_text:
                why = "%s does not take BINARYMIME by BDAT and the message cannot be " \
                      "converted: %s" % (self.name, exc)
            else:
                why = "%s does not offer 8BITMIME and the message cannot be converted " \
                      "to 7 bits: %s" % (self.name, exc)
            part.finish([Outcome.perm("5.6.3", why)] * len(part.indices))
            return self._next_message()
        except Exception as exc:        # the text failed part-way
            self.scanning = None
            return self._abort(Outcome.temp("4.3.0", "cannot read the message: %s" % exc))
        self.loop.call_soon(self._scan_step)

    def _on_body(self, event):
        try:
            if self.plan is not None and self.plan.needed:
                self.body = downgrade.convert(_text(self.part.job), self.plan)
            else:
                self.body = iter(self.part.job.open_body())
        except Exception as exc:
            return self._abort(Outcome.temp("4.3.0", "cannot read the message: %s" % exc))
        # bare CR/LF of old mail become CRLF; a BINARYMIME text going as it is stays so, and
        # a text its writer made CRLF only needs no second look
        self.line_ends = None if self.raw or self.part.job.crlf else \
            message.InputNormalizer(dot_ends=False)
        self._pump()

    def _pump(self):
        """Feed message text while the socket keeps up (TURN octets at most, then again next
        turn: a fast peer never holds the loop for a whole message); then wait for it to
        drain."""
        fed = 0
        while not self.over and self.client.state == C.BODY:
            if len(self.stream.out) >= LOW_WATER:
                self.stream.on_drain = self._pump
                return self._set_timer("block", "sending the message text")
            if fed >= TURN:             # not call_soon: that runs before the loop polls again
                self.stream.when_writable(self._pump)
                return self._set_timer("block", "sending the message text")
            try:
                chunk = next(self.body, None)
            except Exception as exc:        # the text failed part-way: abort, never end it
                return self._abort(Outcome.temp("4.3.0", "cannot read the message: %s" % exc))
            if chunk is None:
                self.body = None
                if self.line_ends is not None:
                    self.client.send_body(self.line_ends.finish())
                self.client.end_body()
            else:
                fed += len(chunk)
                self.client.send_body(chunk if self.line_ends is None
                                      else self.line_ends.feed(chunk))
            self._flush()
        self._arm()

    def _on_done(self, event):
        if self.body is not None:       # a BDAT chunk was refused: the rest is not sent
            if hasattr(self.body, "close"):
                self.body.close()
            self.body = None
        part, self.part = self.part, None
        outcomes = _outcomes(event, len(part.indices), self.name)
        relay = "%s:%d" % (self.name, self.port) if self.port else self.name
        for outcome in outcomes:
            outcome.relay = relay
        part.finish(outcomes)
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
        if self.scanning is not None:
            self.scanning.close()
        self.body = self.scanning = None
        if self.stream is not None:
            self.stream.on_drain = None
            self.stream.close("closed by us")
        if self.child is not None:
            self.child.kill(signal.SIGTERM)


_EVENTS = {
    C.Greeting: SMTPClientSession._on_greeting, C.Hello: SMTPClientSession._on_hello,
    C.StartTLSReply: SMTPClientSession._on_starttls, C.AuthReply: SMTPClientSession._on_auth,
    C.BodyRequest: SMTPClientSession._on_body, C.TransactionDone: SMTPClientSession._on_done,
    C.ResetReply: SMTPClientSession._on_reset, C.QuitReply: SMTPClientSession._on_quit,
    ConnectionClosed: SMTPClientSession._on_eof,
}


def _text(job):
    """Return the job's text to scan or convert: as stored for a BINARYMIME text (its bare
    CR and LF are content) or one known to be CRLF only, else with CRLF line ends only."""
    chunks = job.open_body()
    return iter(chunks) if job.binary or job.crlf else _normalized(chunks)


def _normalized(chunks):
    """Yield chunks with CRLF line ends only (bare CR or LF of old mail made CRLF)."""
    line_ends = message.InputNormalizer(dot_ends=False)
    for chunk in chunks:
        yield line_ends.feed(chunk)
    yield line_ends.finish()


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
