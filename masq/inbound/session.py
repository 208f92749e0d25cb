"""One SMTP session: the sans-IO engine, a transport, policy decisions and the queue.

Owns the glue for one client: bytes from the transport go into the engine; each event the
engine hands out is dispatched through one table to a handler that checks policy
(masq/policy/), streams message text into the queue, and answers. The 250 after end of data
goes out only after the group commit's fdatasync has returned (queue rule 2).

Hostile input: everything the client sends; the engine bounds it, this module never holds
more than one read of it, handed to the engine in slices of `SLICE` octets. Message text
(DATA and BDAT alike) is stored with CRLF line ends only: a bare CR or LF becomes CRLF
(`masq.mail.message.InputNormalizer`, the rule `sendmail` input follows), or, with
`bare_line_ends 'refuse'`, fails the message with `550 5.6.0`. The one exception is the
body of a `BODY=BINARYMIME` message (RFC 3030, BDAT only): its header block follows the
rule, its body is stored as received (the envelope's `body` says BINARYMIME, and every
reader of the text copes: docs/QUEUE.md). Pipelined input is handed
out by one loop (`pump`), never by recursion, and it stops while `MAX_UNSENT` octets of
replies wait for a client that does not read (reading resumes when they are sent).
Failures: a full disk answers `452 4.3.1` at MAIL (free space is checked first) and
`451 4.3.0` when a write or the sync fails.

Deadlines: every phase of a connection has one, so no client holds a slot by sending
slowly. The clock starts when the session is made (a TLS handshake on `smtps://` is
inside it) and restarts only on progress: a reply or a decision, never a mere read. In
message text, each octet received buys `1/smtp_min_data_rate` seconds more, so DATA must
finish within the timeout plus its size at the minimum rate. At the deadline a client gets
`421 4.4.2`; one in a TLS handshake or not reading its replies is just closed.

Checks in the dialogue (masq/inbound/checks.py, only when configured) answer MAIL and RCPT
through a callback, possibly a loop turn later: the engine stays paused meanwhile, so a
pipelining client waits for the answer and the loop does not. Pregreet
(`smtp_greet_delay`): a client outside relay_net is greeted only after the delay; one that
sends anything before is greeted with 554 5.5.1 instead of 220 and then, as RFC 5321
section 3.1 wants, gets 503 5.5.1 for every command until its QUIT.
"""

from masq.mail import address, message
from masq.outbound import maillog
from masq.policy import relay
from masq.proto import smtp_path
from masq.proto import smtp_server_events as ev
from masq.proto.errors import ConnectionClosed
from masq.proto.reply import Reply
from masq.queue.envelope import EXEMPT, Envelope, Recipient
from masq.queue.log import LogError
from masq.queue.store import new_id

MAX_HOPS = 50
WRITE_ERROR = Reply(451, "4.3.0", "Could not write the message to the queue; try again later")
NO_SPACE = Reply(452, "4.3.1", "Queue storage is full; try again later")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients; send the rest in another message")
TOO_MANY_HOPS = Reply(554, "5.4.0", "Too many Received: lines; is there a mail loop?")
BARE_LINE_END = Reply(550, "5.6.0", "Bare CR or LF in the message text; only CRLF may end a line")
DEFER_ALL = Reply(421, "4.3.2", "Mail is not accepted for now (defer_all); try again later")
PREGREET = Reply(554, "5.5.1", "Protocol error: you talked before my greeting; send QUIT")
MAX_UNSENT = 65536      # octets of replies waiting for the client before input stops
BATCH = 4096            # replies are written in batches of about this size
SLICE = 8192            # input handed to the engine at a time (bounds the replies to it)
TEXT_SLICE = 65536      # message text handed to the engine at a time (it makes no replies)


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
        self.line_ends = None      # InputNormalizer: bare CR and LF become CRLF
        self.head = None           # HeadSplitter of a BINARYMIME text: the body is raw
        self.failure = None        # a Reply to give at end of data


class SMTPServerSession:
    """One client connection, from greeting to close."""

    def __init__(self, server, transport, peer, engine, checks=None):
        self.server = server        # the Listener: settings, queue, counters, auth limiter
        self.transport = transport
        self.peer = peer
        self.engine = engine
        self.checks = checks        # inbound.checks.ClientChecks, or None (none configured)
        self.greet_timer = None     # smtp_greet_delay: the greeting is due when it fires
        self.pregreet = False       # the client sent something before the greeting
        self.txn = None
        self.timer = None
        self.since = 0.0            # loop time of the last progress
        self.budget = 0.0           # seconds the message text received since has bought
        self.closed = False
        self.pumping = False
        self.out = bytearray()      # replies collected from the engine, not yet written
        self.inbox = b""            # input read but not yet handed to the engine
        self.text = False           # the last input went in as text (whole reads)
        self.eof = 0                # 1: the client closed its side; 2: the engine knows
        self._arm()

    def start(self):
        """Greet the client and start reading (or refuse it with 421: `defer_all`)."""
        if self.server.settings.defer_all:
            self.transport.write(self.engine.greeting(DEFER_ALL))
            self.transport.close_when_flushed()
            return
        delay = self.server.settings.greet_delay
        if delay and not self.peer.trusted_net:
            self.greet_timer = self.server.loop.call_later(delay, self._greet)
            self.transport.resume_reading()       # to hear a client that talks too soon
            return
        self._greet()

    def _greet(self):
        self.greet_timer = None
        if self.pregreet:
            self.server.log.info("client %s talked before the greeting", self.peer.ip)
            self.transport.write(self.engine.greeting(PREGREET))
        else:
            self.transport.write(self.engine.greeting())
        self.transport.resume_reading()
        self._arm()
        self.pump()

    # input and the event pump

    def on_data(self, data):
        """Take bytes from the client (b"" at EOF)."""
        if self.closed:
            return
        if data and not self.inbox:
            self.inbox = data       # kept as read (bytes): no copy while text flows
        elif data:
            if type(self.inbox) is bytes:
                self.inbox = bytearray(self.inbox)
            self.inbox += data
        else:
            self.eof = max(self.eof, 1)
        if self.greet_timer is not None:          # not greeted yet: hold it, hear no more
            self.pregreet = self.pregreet or bool(data)
            self.transport.pause_reading()
            return
        self.pump()

    def _feed(self):
        """Hand the engine the next slice of input; return False if there is none for it.

        Slices keep what one next_event() call can answer small: 8 KiB of pipelined HELP
        makes about 130 KiB of replies, where a whole read of 64 KiB would make 1 MiB.
        Message text makes no replies: it goes in whole reads (what follows it is given
        back by `_text_ended`)."""
        if self.inbox and self.engine.wants_data:
            ahead = self.engine.text_ahead
            size = min(ahead, TEXT_SLICE) if ahead else SLICE
            inbox = self.inbox
            if len(inbox) <= size:
                self.engine.receive_data(inbox)
                self.inbox = b""
            else:
                with memoryview(inbox) as view, view[:size] as piece:
                    self.engine.receive_data(piece)
                if type(inbox) is bytes:
                    self.inbox = bytearray(inbox)
                del self.inbox[:size]
            self.text = bool(ahead)
            return True
        if self.eof == 1 and not self.inbox:
            self.eof = 2
            self.engine.receive_data(b"")
            return True
        return False

    def pump(self):
        """Hand out engine events until it needs data or a decision, or replies pile up.

        Handlers answer through respond(), which lets this loop go on: pipelined commands
        are processed one after another, never by recursion."""
        if self.pumping or self.closed:
            return
        self.pumping, progress = True, False
        try:
            while not self.closed:
                if len(self.out) >= BATCH:
                    self._flush()
                if self.transport.unsent() >= MAX_UNSENT:
                    break
                event = self.engine.next_event()
                if self.text and not self.engine.text_ahead:
                    self._text_ended()
                progress = self._collect() or progress
                if event is ev.NEED_DATA and self._feed():
                    continue
                if event is ev.NEED_DATA or event is ev.PAUSED:
                    break
                if type(event) is ev.DataChunk:
                    self.budget += len(event.data) / self.server.settings.min_data_rate
                else:
                    progress = True
                _HANDLERS[type(event)](self, event)
                progress = self._collect() or progress
        finally:
            self.pumping = False
        self._flush()
        if progress:
            self._arm()
        if self.closed:
            return
        if self.transport.unsent() >= MAX_UNSENT:     # go on when the client has read
            self.transport.on_drain = self.pump
            self.transport.pause_reading()
        elif self.engine.wants_data and not self.inbox:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def _text_ended(self):
        """Take back from the engine what came behind the text beyond one slice."""
        self.text = False
        rest = self.engine.give_back(SLICE)
        if rest:
            self.inbox = rest + self.inbox

    def respond(self, reply=None):
        """Answer the pending decision (possibly from a later loop turn)."""
        if not self.closed:
            self.engine.respond(reply)
            self.pump()

    def _collect(self):
        data = self.engine.data_to_send()
        self.out += data
        return bool(data)

    def _flush(self):
        self._collect()
        if self.out:
            data, self.out = bytes(self.out), bytearray()
            self.transport.write(data)

    # deadlines

    def deadline(self):
        """Return the loop time at which the client has run out of time."""
        return self.since + self.server.timeout() + self.budget

    def reschedule(self):
        """Move the timer earlier if the deadline is earlier now (the listener calls this
        when the timeout shrinks under load); later deadlines are found when it fires."""
        if self.transport.closed:        # on_close has run: a timer would only keep the
            return                       # session alive for its whole timeout
        due = self.deadline()
        if self.timer is None or self.timer.when > due:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.server.loop.call_at(due, self._timed_out)

    def _arm(self):
        """Give the client a fresh timeout from now (after progress)."""
        self.since, self.budget = self.server.loop.now, 0.0
        self.reschedule()

    def _timed_out(self):
        self.timer = None
        if self.server.loop.now < self.deadline():   # progress moved the deadline since
            self.reschedule()
            return
        if self.closed or self.transport.handshaking() or \
                self.transport.unsent() >= MAX_UNSENT:
            what = ("TLS handshake" if self.transport.handshaking() else
                    "sending to" if self.transport.unsent() else "closing")
            self.server.log.info("%s with %s timed out", what, self.peer.ip)
            self.transport.close("timed out")
            return
        self.server.log.info("client %s timed out", self.peer.ip)
        self.out += self.engine.timeout_reply()
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
            sender = self._path(event.address, True, "SMTPUTF8" in event.params)
        except address.AddressError as exc:
            self.respond(Reply(exc.code, exc.enhanced, exc.text))
            return
        if not smtp_path.sendable(str(sender)):
            self.respond(smtp_path.BAD_SENDER)
            return
        if self.checks is not None:
            self.checks.mail(sender, lambda refusal: self._sender_checked(
                sender, event.params, refusal))
            return
        self._sender_checked(sender, event.params, None)

    def _sender_checked(self, sender, params, refusal):
        if refusal is None:
            self.txn = Transaction(str(sender), params)
        else:
            self._rejected("MAIL", refusal, str(sender))
        self.respond(refusal)

    def _rejected(self, stage, refusal, sender, rcpt=None):
        """Log a refusal by a check in the dialogue, as Postfix logs one."""
        maillog.rejected(self.server.log, stage, "unknown[%s]" % self.peer.ip, refusal,
                         sender, rcpt, "ESMTP" if self.engine.extended else "SMTP",
                         self.engine.helo_name)

    def _rcpt_to(self, event):
        txn, settings = self.txn, self.server.settings
        try:
            addr = self._path(event.address, False, "SMTPUTF8" in txn.params)
        except address.AddressError as exc:
            self.respond(Reply(exc.code, exc.enhanced, exc.text))
            return
        if not smtp_path.sendable(str(addr)):
            self.respond(smtp_path.BAD_RECIPIENT)
            return
        if len(txn.recipients) >= settings.max_recipients:
            self.respond(TOO_MANY_RCPTS)
            return
        refusal = relay.check_rcpt(self.peer, addr, settings.locality,
                                   self.server.is_local_user)
        if refusal:
            self.respond(refusal)
            return
        text = str(addr) if addr.domain else "%s@%s" % (addr, settings.hostname)
        if self.checks is not None:
            local = settings.locality.is_local(text)
            self.checks.rcpt(text, self.engine.helo_name, local, lambda refusal: (
                self._recipient_checked(txn, text, event.params, refusal)))
            return
        self._recipient_checked(txn, text, event.params, None)

    def _recipient_checked(self, txn, text, params, refusal):
        if refusal is None and txn.sender and self._greylisting():
            refusal = self.server.greylisted(self.peer, txn.sender, text)   # <>: at DATA
        if refusal is not None:
            self._rejected("RCPT", refusal, txn.sender, text)
        elif all(r.address != text for r in txn.recipients):
            orcpt = params.get("ORCPT")
            notify = params.get("NOTIFY")
            txn.recipients.append(Recipient(
                text, orcpt="%s;%s" % orcpt if orcpt else None,
                notify=",".join(notify) if notify else None))
        self.respond(refusal)

    def _greylisting(self):
        """Return True if greylisting is on and applies to this client (a dnswl hit skips
        it, as it skips the other checks in the dialogue)."""
        return self.server.settings.greylist is not None and not (
            self.checks is not None and self.checks.allowed())

    def _path(self, text, sender, smtputf8):
        """Parse a MAIL or RCPT path. A local process (`-bs` on a pipe: MUAs, inetd) may give
        a bare name, qualified with the host name as masqmail and sendmail do; a network
        client may not."""
        local = self.peer.uid is not None
        path = address.parse_path("<%s>" % text, sender=sender, smtputf8=smtputf8,
                                  unqualified=local)
        if local and not path.is_null and not path.domain:
            path = address.parse_path("<%s@%s>" % (path, self.server.settings.hostname),
                                      sender=sender, smtputf8=smtputf8)
        return path

    def _data_start(self, event):
        txn = self.txn
        if not txn.sender and self._greylisting():
            refusals = [self.server.greylisted(self.peer, "", r.address)
                        for r in txn.recipients]
            refusal = next((r for r in refusals if r is not None), None)
            if refusal:
                self._rejected("DATA", refusal, txn.sender)
                self.respond(refusal)
                return
        txn.id = new_id(self.server.now())
        txn.writer = self.server.queue.writer(txn.id)
        txn.headers = message.ReceivedHeaders(self.server.settings.save_envelope_to,
                                              strip=(message.FILTER_ID,))
        txn.line_ends = message.InputNormalizer(dot_ends=False)
        if txn.params.get("BODY") == "BINARYMIME":
            txn.head = message.HeadSplitter()
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
            tls=info, auth=self.peer.auth_user, cert=self.peer.cert,
            for_rcpt=txn.recipients[0].address if len(txn.recipients) == 1 else None,
            timestamp=self.server.now()))
        return headers.to_bytes()

    def _data_chunk(self, event):
        txn = self.txn
        if txn.head is None:
            return self._text(txn.line_ends.feed(event.data))
        head, body = txn.head.split(event.data)
        self._text(txn.line_ends.feed(head))
        if body and txn.failure is None:
            self._store(txn.headers.feed(body))     # the block has ended: as received

    def _text(self, data):
        """Store message text that has CRLF line ends only (unless the transaction failed)."""
        txn = self.txn
        if txn.failure is not None or not data:
            return
        if self.server.settings.refuse_bare and (txn.line_ends.bare_cr or
                                                  txn.line_ends.bare_lf):
            txn.failure = BARE_LINE_END
            return
        try:
            data = txn.headers.feed(data)
        except message.HeaderTooLong as exc:
            txn.failure = Reply(exc.code, exc.enhanced, exc.text)
            return
        self._store(data)

    def _store(self, data):
        if not data:
            return
        try:
            self.txn.writer.write(data)
        except LogError as exc:
            self._fail(exc)

    def _fail(self, exc):
        self.server.log.error("queue write failed: %s", exc)
        self.txn.failure = WRITE_ERROR

    def _end_of_data(self, event):
        txn = self.txn
        self._text(txn.line_ends.finish())
        if txn.failure is None and not txn.headers.done:
            try:
                self._store(txn.headers.finish())
            except message.HeaderTooLong as exc:
                txn.failure = Reply(exc.code, exc.enhanced, exc.text)
        if txn.failure is None and message.count_hops(txn.headers.headers) >= MAX_HOPS:
            txn.failure = TOO_MANY_HOPS
        if txn.failure is not None:
            self._drop(txn)
            self.respond(txn.failure)
            return
        recipients = txn.recipients
        if self.server.settings.archive is not None:
            recipients = self.server.settings.archive.with_copies(txn.sender, recipients)
        envelope = Envelope(
            txn.sender, recipients, received=self.server.now(), protocol="smtp",
            client=self.peer.ip, helo=self.engine.helo_name, auth_user=self.peer.auth_user,
            envid=txn.params.get("ENVID"), ret=txn.params.get("RET"),
            body=txn.params.get("BODY"), smtputf8="SMTPUTF8" in txn.params,
            crlf=txn.params.get("BODY") != "BINARYMIME")
        if getattr(self.server, "filtered", False) and self._reinjected(txn, envelope):
            return
        try:
            txn.writer.commit(envelope)
        except LogError as exc:
            self._fail(exc)
            self._drop(txn)
            self.respond(WRITE_ERROR)
            return
        txn.size = txn.writer.size
        txn.writer = None           # committed: nothing left to abort, even if the client goes
        self.server.queue.want_sync(lambda error: self._synced(txn, error))

    def _reinjected(self, txn, envelope):
        """A copy an smtp: content filter sends back (a `?filtered` listener): it replaces
        the original its X-Masq-Filter-Id names, in its own COMMIT, and goes on past that
        filter; a second copy of an original no longer queued is accepted and dropped
        (return True: answered). Without the field, the message skips the filters."""
        named = txn.headers.headers.get_all(message.FILTER_ID)
        original = self.server.queue.get_live(named[0].strip()) if named else None
        try:
            passed = original.envelope.filtered if original is not None else None
        except LogError:
            passed = None
        if named and passed is None:
            self._drop(txn)
            self.server.log.warning("%s: copy of %s from the content filter dropped: the "
                                    "original is no longer queued", txn.id, named[0].strip())
            self.respond(Reply(250, "2.0.0", "Copy dropped: the original already came back"))
            return True
        envelope.filtered = EXEMPT if passed is None else passed + 1
        if original is not None:
            envelope.replaces = original.id
            txn.writer.own = True       # never withdrawn: the original is gone with it
            self.server.log.info("%s: filtered copy of %s", txn.id, original.id)
        return False

    def _synced(self, txn, error):
        if error is not None:
            self.server.log.error("queue sync failed: %s", error)
            self.respond(WRITE_ERROR)
            return
        self.server.accepted(txn, self.peer)
        self.respond(Reply(250, "2.0.0", "Message queued as %s" % txn.id))

    def _drop(self, txn):
        if txn.writer is not None:
            txn.writer.abort()
            txn.writer = None
    
    def _aborted(self, event):
        if self.txn is not None:
            self._drop(self.txn)

    def _reset(self, event):
        if self.txn is not None:
            self._drop(self.txn)
        self.txn = None

    def _start_tls(self, event):
        self.inbox = b""            # plaintext pipelined after STARTTLS is never executed
        self.respond(None)          # the 220 goes out in plaintext first
        self.server.loop.call_soon(lambda: self.transport.start_tls(
            self.server.tls_context, True, self._tls_done))

    def _tls_done(self, error):
        if error is not None:
            self.server.log.info("TLS handshake with %s failed: %s", self.peer.ip, error)
            self.transport.close("TLS handshake failed")
            return
        self.server.tls_established(self)
        self.engine.start_tls_done()
        self._arm()
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
        self._arm()                 # the last replies must go out in time too
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
        if self.greet_timer is not None:
            self.greet_timer.cancel()
            self.greet_timer = None
        if self.checks is not None:
            self.checks.close()
        self.server.session_closed(self)


_HANDLERS = {
    ev.Hello: SMTPServerSession._hello, ev.MailFrom: SMTPServerSession._mail_from,
    ev.RcptTo: SMTPServerSession._rcpt_to, ev.DataStart: SMTPServerSession._data_start,
    ev.DataChunk: SMTPServerSession._data_chunk, ev.EndOfData: SMTPServerSession._end_of_data,
    ev.DataAborted: SMTPServerSession._aborted, ev.Reset: SMTPServerSession._reset,
    ev.StartTLS: SMTPServerSession._start_tls, ev.AuthRequest: SMTPServerSession._auth,
    ev.Quit: SMTPServerSession._quit, ConnectionClosed: SMTPServerSession._closed,
}
