"""QMTP and QMQP listeners (`qmtp://HOST[:PORT]`, port 209; `qmqp://`, port 628): messages
from clients into the queue.

Owns the glue between one client connection and `masq.proto.qmtp.Server`: the message
text streams into the queue as it arrives (CRLF line ends, whichever encoding the package
used, behind a Received: line), then each recipient is checked by the same relay policy
as SMTP (`masq.policy.relay`, the client's address against `relay_net`; QMTP has no AUTH
and no TLS) and the same limits (`max_message_size`, `max_recipients`, free space, the
connection counts and the timeout of `masq.inbound.listener`); the package is committed
for the recipients accepted and, once the group fdatasync returned, answered: K for each
accepted, Z or D with the reason (and its status code after "#") for the others.

A package over `max_message_size` is read and thrown away (QMTP cannot refuse it before
its end) and every recipient gets D 5.3.4. A protocol fault closes the connection; the
client counts that as a temporary failure.

QMQP (one message per connection, one answer for all its recipients) is the protocol of
mini-qmail and Postfix's qmqp client: a trusted host handing over complete messages. So
only clients in `relay_net` may use it (others get D 5.7.1), recipients are checked for
syntax and `max_recipients` only (an unknown local user bounces later, as with
`sendmail`), and one refused recipient refuses the message (Z if the refusal is
temporary, else D): nothing is queued for part of the recipients. Deadline: like SMTP's, the client has
`smtp_timeout` from each answer, plus its text's size at `smtp_min_data_rate`.
"""

from masq.base import net
from masq.inbound.listener import Listener
from masq.inbound.session import MAX_HOPS, TOO_MANY_HOPS, WRITE_ERROR
from masq.mail import address, message
from masq.policy import relay
from masq.proto import qmqp, qmtp, smtp_path
from masq.proto.errors import ProtocolError
from masq.proto.reply import Reply
from masq.queue.envelope import Envelope, Recipient
from masq.queue.log import LogError

TOO_BIG = Reply(552, "5.3.4", "Message over the size limit")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients; send the rest in another message")
EMPTY = Reply(554, "5.6.0", "No valid recipients")
UNTRUSTED = Reply(554, "5.7.1", "QMQP is open to relay_net clients only")
SLICE = 65536


def answer(reply):
    """Return the QMTP (kind, text) for an SMTP-style reply."""
    kind = "K" if reply.code < 400 else "Z" if reply.code < 500 else "D"
    text = " ".join(reply.text)
    return kind, "%s #%s" % (text, reply.enhanced) if reply.enhanced else text


class QMTPListener(Listener):
    """A `qmtp://` or `qmqp://` listener: the SMTP listener's socket, limits and counts,
    QMTP or QMQP sessions."""

    def _session(self, conn, ip):
        peer = relay.Peer(ip, relay.in_networks(ip, self.settings.relay_nets), None,
                          self.kind)
        transport = net.Stream(self.loop, conn, None, None)
        engine = qmqp.Server() if self.kind == "qmqp" else qmtp.Server()
        session = QMTPSession(self, transport, peer, engine)
        transport.on_data, transport.on_close = session.on_data, session.on_close
        self.sessions.add(session)
        session.start()


class QMTPSession:
    """One QMTP client connection."""

    def __init__(self, server, transport, peer, engine):
        self.server, self.transport, self.peer = server, transport, peer
        self.engine = engine
        self.whole = isinstance(engine, qmqp.Server)   # one answer for all recipients
        self.writer = self.line_ends = self.headers = None
        self.refusal = None         # a Reply for every recipient of this package
        self.timer = None
        self.since, self.budget = server.loop.now, 0.0
        self.closed = False
        self.inbox = bytearray()

    def start(self):
        """Start reading packages."""
        self.transport.resume_reading()
        self._arm()

    def on_data(self, data):
        """Take bytes from the client (b"" at EOF)."""
        if self.closed:
            return
        if not data:
            if self.writer is not None or self.engine.buffer:
                self.server.log.info("QMTP client %s left in a package", self.peer.ip)
            return self.transport.close("client closed")
        self.inbox += data
        self._pump()

    def _pump(self):
        try:
            while not self.closed and self.engine.wants_data:
                event = self.engine.next_event()
                if event is qmtp.NEED_DATA:
                    if not self.inbox:
                        break
                    self._feed()
                    continue
                _HANDLERS[type(event)](self, event)
        except ProtocolError as exc:
            self.server.log.info("QMTP client %s: %s", self.peer.ip, exc)
            self._drop()
            self.transport.close("protocol error")
            return
        if self.engine.wants_data:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def _feed(self):
        """Hand the engine the next slice of input, copying it once (the engine's buffer).

        An emptied inbox is replaced, never cleared: clear() shrinks its 64 KiB block in
        place, and the small block left behind pins the hole (masq/base/reads.py)."""
        inbox = self.inbox
        if len(inbox) <= SLICE:
            self.engine.receive_data(inbox)
            self.inbox = bytearray()
            return
        with memoryview(inbox) as view, view[:SLICE] as piece:
            self.engine.receive_data(piece)
        del inbox[:SLICE]

    # events

    def _start(self, event):
        settings = self.server.settings
        self.refusal = None
        if event.size > settings.max_size:
            self.refusal = TOO_BIG
        else:
            self.refusal = self.server.space_refusal(event.size)
        if self.refusal is not None:
            return
        self.line_ends = message.InputNormalizer(dot_ends=False)
        self.headers = message.HeaderReader()
        self.writer = self.server.queue.writer()
        try:
            self.writer.write(self._received())
        except LogError as exc:
            self._failed(exc)

    def _received(self):
        headers = message.Headers()
        headers.prepend("Received", message.received_line(
            by_host=self.server.settings.hostname, id=self.writer.id,
            protocol=self.server.kind.upper(),
            from_host="unknown", from_ip=self.peer.ip, timestamp=self.server.now()))
        return headers.to_bytes()

    def _chunk(self, event):
        self.budget += len(event.data) / self.server.settings.min_data_rate
        if self.writer is None:
            return
        data = self.line_ends.feed(event.data)
        try:
            if not self.headers.done:
                self.headers.feed(data)
            self.writer.write(data)
        except message.HeaderTooLong as exc:
            self.refusal = Reply(exc.code, exc.enhanced, exc.text)
            self._drop()
        except LogError as exc:
            self._failed(exc)

    def _failed(self, exc):
        self.server.log.error("queue write failed: %s", exc)
        self.refusal = WRITE_ERROR
        self._drop()

    def _package(self, event):
        self._arm()
        replies = [self._check(rcpt, i) for i, rcpt in enumerate(event.recipients)]
        sender = self._sender(event.sender)
        if isinstance(sender, Reply):
            replies = [sender] * len(replies)
        if self.whole:
            refused = [r for r in replies if isinstance(r, Reply)]
            if not self.peer.trusted:
                refused = [UNTRUSTED]
            if refused:
                refusal = min(refused, key=lambda r: r.code // 100 != 4)   # temporary first
                replies = [refusal] * len(replies)
        accepted = [r for r in replies if isinstance(r, Recipient)]
        if self.writer is None or not accepted:
            self._drop()
            return self._respond([r if isinstance(r, Reply) else (self.refusal or EMPTY)
                                  for r in replies])
        try:
            data = self.line_ends.finish()
            if not self.headers.done:
                self.headers.feed(data)
                self.headers.finish()
            if message.count_hops(self.headers.headers) >= MAX_HOPS:
                self._drop()
                return self._respond([TOO_MANY_HOPS] * len(replies))
            self.writer.write(data)
            seen, unique = set(), []
            for rcpt in accepted:
                if rcpt.address not in seen:
                    seen.add(rcpt.address)
                    unique.append(rcpt)
            if self.server.settings.archive is not None:
                unique = self.server.settings.archive.with_copies(sender, unique)
            self.writer.commit(Envelope(sender, unique, received=self.server.now(),
                                        protocol=self.server.kind, client=self.peer.ip,
                                        crlf=True))
        except message.HeaderTooLong as exc:
            self._drop()
            return self._respond([Reply(exc.code, exc.enhanced, exc.text)] * len(replies))
        except LogError as exc:
            self._failed(exc)
            return self._respond([WRITE_ERROR] * len(replies))
        writer, self.writer = self.writer, None
        self.server.queue.want_sync(lambda error: self._synced(writer, sender, replies, error))

    def _sender(self, raw):
        try:
            text = raw.decode("utf-8")
            sender = str(address.parse_path("<%s>" % text, sender=True, smtputf8=True))
        except (UnicodeError, address.AddressError):
            return Reply(553, "5.1.7", "bad sender address")
        refusal = relay.check_mail(self.peer)
        if refusal:
            return refusal
        return sender if smtp_path.sendable(sender) else smtp_path.BAD_SENDER

    def _check(self, raw, index):
        """Return a Recipient for an accepted address, else the Reply refusing it."""
        settings = self.server.settings
        if self.refusal is not None:
            return self.refusal
        if index >= settings.max_recipients:
            return TOO_MANY_RCPTS
        try:
            addr = address.parse_path("<%s>" % raw.decode("utf-8"), sender=False,
                                      smtputf8=True)
        except (UnicodeError, address.AddressError) as exc:
            code = getattr(exc, "code", 553)
            return Reply(code, getattr(exc, "enhanced", "5.1.3"),
                         getattr(exc, "text", "bad recipient address"))
        if not smtp_path.sendable(str(addr)):
            return smtp_path.BAD_RECIPIENT
        refusal = None if self.whole else relay.check_rcpt(self.peer, addr, settings.locality,
                                   self.server.is_local_user)
        if refusal:
            return refusal
        text = str(addr) if addr.domain else "%s@%s" % (addr, settings.hostname)
        return Recipient(text)

    def _synced(self, writer, sender, replies, error):
        if error is not None:
            self.server.log.error("queue sync failed: %s", error)
            return self._respond([WRITE_ERROR] * len(replies))
        self.server.accepted(_Accepted(writer, sender, replies), self.peer)
        ok = Reply(250, "2.0.0", "Message queued as %s" % writer.id)
        self._respond([ok if isinstance(r, Recipient) else r for r in replies])

    def _respond(self, replies):
        if self.closed:
            return
        if self.whole:
            self.engine.respond(*answer(replies[0]))
            self.transport.write(self.engine.data_to_send())
            self.transport.close_when_flushed()
            return
        self.engine.respond([answer(r) for r in replies])
        self.transport.write(self.engine.data_to_send())
        self.refusal = None
        self._arm()
        self._pump()

    # deadlines and the end

    def deadline(self):
        """Return the loop time at which the client has run out of time."""
        return self.since + self.server.timeout() + self.budget

    def reschedule(self):
        """Move the timer to the (possibly earlier) deadline."""
        if self.transport.closed:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.loop.call_at(self.deadline(), self._timed_out)

    def _arm(self):
        self.since, self.budget = self.server.loop.now, 0.0
        self.reschedule()

    def _timed_out(self):
        self.timer = None
        if self.server.loop.now < self.deadline():
            return self.reschedule()
        self.server.log.info("QMTP client %s timed out", self.peer.ip)
        self._drop()
        self.transport.close("timed out")

    def _drop(self):
        if self.writer is not None:
            self.writer.abort()
            self.writer = None

    def on_close(self, reason):
        """The transport closed."""
        self._drop()
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.server.session_closed(self)


class _Accepted:
    """What the listener logs about an accepted package (as an SMTP transaction)."""

    def __init__(self, writer, sender, replies):
        self.id, self.size, self.sender = writer.id, writer.size, sender
        self.recipients = [r for r in replies if isinstance(r, Recipient)]


_HANDLERS = {qmtp.PackageStart: QMTPSession._start, qmtp.MessageChunk: QMTPSession._chunk,
             qmtp.Package: QMTPSession._package}
