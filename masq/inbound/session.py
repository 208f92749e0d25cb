"""One SMTP session: the sans-IO engine, a transport, policy decisions and the queue.

Owns the glue for one client: bytes from the transport go into the engine; each event the
engine hands out is dispatched through one table to a handler that checks policy
(masq/policy/), streams message text into the queue, and answers. The 250 after end of data
goes out only after the group commit's fdatasync has returned (queue rule 2).

Hostile input: everything the client sends; the engine bounds it, this module never holds
more than one body chunk. Failures: a full disk answers `452 4.3.1` at MAIL (free space is
checked first) and `451 4.3.0` when a write or the sync fails; an idle client gets `421
4.4.2` after the timeout (shorter under load).
"""

from masq import address, message
from masq.policy import relay
from masq.proto import smtp_path
from masq.proto import smtp_server_events as ev
from masq.proto.reply import Reply
from masq.queue.envelope import Envelope, Recipient
from masq.queue.log import LogError
from masq.queue.store import new_id

MAX_HOPS = 50
WRITE_ERROR = Reply(451, "4.3.0", "Error: queue file write error")
NO_SPACE = Reply(452, "4.3.1", "Insufficient system storage")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Error: too many recipients")
TOO_MANY_HOPS = Reply(554, "5.4.0", "Error: too many hops")


class Transaction:
    """What one MAIL ... end-of-data exchange has gathered."""

    def __init__(self, sender, params):
        self.sender = sender
        self.params = params
        self.recipients = []
        self.writer = None
        self.id = None
        self.size = 0
        self.headers = None        # HeaderReader: header cap and hop count
        self.failure = None        # a Reply to give at end of data


class Session:
    """One client connection, from greeting to close."""

    def __init__(self, server, transport, peer, engine):
        self.server = server        # the Listener: settings, queue, counters, auth limiter
        self.transport = transport
        self.peer = peer
        self.engine = engine
        self.txn = None
        self.timer = None
        self.closed = False

    def start(self):
        """Greet the client and start reading."""
        self.transport.write(self.engine.greeting())
        self.transport.resume_reading()
        self._arm()

    # input and the event pump

    def on_data(self, data):
        """Take bytes from the client (b"" at EOF)."""
        if self.closed:
            return
        self._arm()
        self.engine.receive_data(data)
        self.pump()

    def pump(self):
        """Hand out engine events until it needs data or a decision."""
        while not self.closed:
            event = self.engine.next_event()
            if event is ev.NEED_DATA or event is ev.PAUSED:
                break
            _HANDLERS[type(event)](self, event)
        self._flush()
        if self.closed:
            return
        if self.engine.wants_data:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def respond(self, reply=None):
        """Answer the pending decision (possibly from a later loop turn)."""
        if not self.closed:
            self.engine.respond(reply)
            self.pump()

    def _flush(self):
        data = self.engine.data_to_send()
        if data:
            self.transport.write(data)

    # timers

    def _arm(self):
        if self.timer:
            self.timer.cancel()
        self.timer = self.server.loop.call_later(self.server.timeout(), self._timed_out)

    def _timed_out(self):
        self.timer = None
        self.transport.write(self.engine.timeout_reply())
        self.pump()

    # handlers, one per event type

    def _hello(self, event):
        self.respond(None)

    def _mail_from(self, event):
        refusal = relay.check_mail(self.peer) or self.server.space_refusal(
            event.params.get("SIZE"))
        if refusal:
            self.respond(refusal)
            return
        try:
            sender = address.parse_path("<%s>" % event.address, sender=True,
                                        smtputf8="SMTPUTF8" in event.params)
        except address.AddressError as exc:
            self.respond(Reply(exc.code, exc.enhanced, exc.text))
            return
        if not smtp_path.sendable(str(sender)):
            self.respond(smtp_path.BAD_SENDER)
            return
        self.txn = Transaction(str(sender), event.params)
        self.respond(None)

    def _rcpt_to(self, event):
        txn, settings = self.txn, self.server.settings
        try:
            addr = address.parse_path("<%s>" % event.address, sender=False,
                                      smtputf8="SMTPUTF8" in txn.params)
        except address.AddressError as exc:
            self.respond(Reply(exc.code, exc.enhanced, exc.text))
            return
        if not smtp_path.sendable(str(addr)):
            self.respond(smtp_path.BAD_RECIPIENT)
            return
        if len(txn.recipients) >= settings.max_recipients:
            self.respond(TOO_MANY_RCPTS)
            return
        refusal = relay.check_rcpt(self.peer, addr, settings.local_domains,
                                   self.server.is_local_user)
        if refusal:
            self.respond(refusal)
            return
        text = str(addr) if addr.domain else "%s@%s" % (addr, settings.hostname)
        if all(r.address != text for r in txn.recipients):
            orcpt = event.params.get("ORCPT")
            notify = event.params.get("NOTIFY")
            txn.recipients.append(Recipient(
                text, orcpt="%s;%s" % orcpt if orcpt else None,
                notify=",".join(notify) if notify else None))
        self.respond(None)

    def _data_start(self, event):
        txn = self.txn
        txn.id = new_id()
        txn.writer = self.server.queue.writer(txn.id)
        txn.headers = message.HeaderReader()
        self.server.writers(+1)
        try:
            txn.writer.write(self._received(txn))
        except LogError as exc:
            self._fail(exc)
        self.respond(None)

    def _received(self, txn):
        info = self.transport.tls_info()
        headers = message.Headers()
        headers.prepend("Received", message.received_line(
            by_host=self.server.settings.hostname, id=txn.writer.id,
            protocol="ESMTP" if self.engine.extended else "SMTP",
            from_host=self.engine.helo_name or "unknown", from_ip=self.peer.ip,
            tls=info, auth=self.peer.auth_user,
            for_rcpt=txn.recipients[0].address if len(txn.recipients) == 1 else None))
        return headers.to_bytes()

    def _data_chunk(self, event):
        txn = self.txn
        if txn.failure is not None:
            return
        if not txn.headers.done:
            try:
                txn.headers.feed(event.data)
            except message.HeaderTooLong as exc:
                txn.failure = Reply(exc.code, exc.enhanced, exc.text)
                return
        try:
            txn.writer.write(event.data)
        except LogError as exc:
            self._fail(exc)

    def _fail(self, exc):
        self.server.log.error("queue write failed: %s", exc)
        self.txn.failure = WRITE_ERROR

    def _end_of_data(self, event):
        txn = self.txn
        if txn.failure is None and not txn.headers.done:
            try:
                txn.headers.finish()
            except message.HeaderTooLong as exc:
                txn.failure = Reply(exc.code, exc.enhanced, exc.text)
        if txn.failure is None and message.count_hops(txn.headers.headers) >= MAX_HOPS:
            txn.failure = TOO_MANY_HOPS
        if txn.failure is not None:
            self._drop(txn)
            self.respond(txn.failure)
            return
        envelope = Envelope(
            txn.sender, txn.recipients, received=self.server.now(), protocol="smtp",
            client=self.peer.ip, helo=self.engine.helo_name, auth_user=self.peer.auth_user,
            envid=txn.params.get("ENVID"), ret=txn.params.get("RET"),
            body=txn.params.get("BODY"), smtputf8="SMTPUTF8" in txn.params)
        try:
            txn.writer.commit(envelope)
        except LogError as exc:
            self._fail(exc)
            self._drop(txn)
            self.respond(WRITE_ERROR)
            return
        txn.size = txn.writer.size
        txn.writer = None           # committed: nothing left to abort, even if the client goes
        self.server.writers(-1)
        self.server.queue.want_sync(lambda error: self._synced(txn, error))

    def _synced(self, txn, error):
        if error is not None:
            self.server.log.error("queue sync failed: %s", error)
            self.respond(WRITE_ERROR)
            return
        self.server.accepted(txn, self.peer)
        self.respond(Reply(250, "2.0.0", "Ok: queued as %s" % txn.id))

    def _drop(self, txn):
        if txn.writer is not None:
            txn.writer.abort()
            txn.writer = None
            self.server.writers(-1)

    def _aborted(self, event):
        if self.txn is not None:
            self._drop(self.txn)

    def _reset(self, event):
        if self.txn is not None:
            self._drop(self.txn)
        self.txn = None

    def _start_tls(self, event):
        self.respond(None)          # the 220 goes out in plaintext first
        self.server.loop.call_soon(lambda: self.transport.start_tls(
            self.server.tls_context, True, self._tls_done))

    def _tls_done(self, error):
        if error is not None:
            self.server.log.info("TLS handshake with %s failed: %s", self.peer.ip, error)
            self.transport.close("TLS handshake failed")
            return
        self.engine.start_tls_done()
        self.pump()

    def _auth(self, event):
        self.server.authenticate(self, event)

    def _quit(self, event):
        pass

    def _closed(self, event):
        self._flush()
        self.closed = True
        if self.txn is not None:
            self._drop(self.txn)
        if self.timer:
            self.timer.cancel()
        self.transport.close_when_flushed()

    def on_close(self, reason):
        """The transport closed (the client went away, or we closed it)."""
        if self.txn is not None:
            self._drop(self.txn)
            self.txn = None
        self.closed = True
        if self.timer:
            self.timer.cancel()
            self.timer = None
        self.server.session_closed(self)


_HANDLERS = {
    ev.Hello: Session._hello, ev.MailFrom: Session._mail_from, ev.RcptTo: Session._rcpt_to,
    ev.DataStart: Session._data_start, ev.DataChunk: Session._data_chunk,
    ev.EndOfData: Session._end_of_data, ev.DataAborted: Session._aborted,
    ev.Reset: Session._reset, ev.StartTLS: Session._start_tls, ev.AuthRequest: Session._auth,
    ev.Quit: Session._quit, ev.ConnectionClosed: Session._closed,
}
