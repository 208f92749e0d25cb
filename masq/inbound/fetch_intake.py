"""One fetched message on its way into the queue: Received: on top, text streamed, committed.

Owns what acceptance does to a message fetched by POP3 or IMAP: a Received: field naming the
server, the protocol and the TLS in use; line ends made CRLF (as for SMTP input); the
envelope: the sender from Return-Path: (else none, `<>`), the source's `deliver_to` as the
one recipient, and `fetched` = "SOURCE UID" so that recovery can tell the state file what
the queue holds (docs/FETCH.md). Text streams into a queue Writer: memory stays flat.

Does not: decide what to fetch or delete, or sync: `commit` appends the COMMIT and asks
for the group fdatasync; the callback hears whether it became durable.
"""

from masq.mail import address, message
from masq.queue.envelope import Envelope


class Intake:
    """One message being written to the queue."""

    def __init__(self, host, source, uid, peer, tls_info, protocol):
        self.host, self.source, self.uid = host, source, uid
        self.protocol = protocol
        self.writer = host.queue.writer()
        self.id = self.writer.id
        self.headers = message.ReceivedHeaders(host.cfg.main.do_save_envelope_to)
        self.line_ends = message.InputNormalizer(dot_ends=False)
        self.peer = peer            # (host name, ip)
        fields = message.Headers()
        fields.prepend("Received", message.received_line(
            by_host=host.cfg.main.hostname, id=self.id, protocol=protocol,
            from_host=peer[0], from_ip=peer[1], tls=tls_info,
            for_rcpt=source.recipient, timestamp=host.loop.time()))
        self.writer.write(fields.to_bytes())

    def feed(self, data):
        """Store the next piece of the message text (LogError if the queue cannot)."""
        self._text(self.line_ends.feed(data))

    def _text(self, data):
        if not data:
            return
        try:
            data = self.headers.feed(data)
        except message.HeaderTooLong:
            data = self.headers.abandon()       # stored all the same: it is our mail
        if data:
            self.writer.write(data)

    def commit(self, durable):
        """Append the COMMIT; durable(error or None) after the group fdatasync."""
        self._text(self.line_ends.finish())
        if not self.headers.done:
            try:
                data = self.headers.finish()
            except message.HeaderTooLong:
                data = self.headers.abandon()
            if data:
                self.writer.write(data)
        sender, recipients = self._sender(), [self.source.recipient]
        if self.host.cfg.copies_wanted():
            from masq.policy import archive
            recipients = archive.Rules(self.host.cfg.main).with_copies(sender, recipients)
        envelope = Envelope(
            sender, recipients, received=self.host.loop.time(),
            protocol=self.protocol.lower(), client=self.peer[1], helo=self.peer[0],
            origin="fetch:" + self.source.name,
            fetched="%s %s" % (self.source.name, self.uid) if self.uid else None,
            crlf=True)
        self.sender = envelope.sender
        self.writer.commit(envelope)
        self.host.queue.want_sync(durable)
        return envelope

    def abort(self):
        """Forget the message (the server keeps it)."""
        self.writer.abort()

    @property
    def size(self):
        """Return the octets written so far."""
        return self.writer.size

    def _sender(self):
        for value in self.headers.headers.get_all("Return-Path"):
            return return_path(value)
        return ""


def return_path(value):
    """Return the sender a Return-Path: value names ("" for `<>` or one that does not
    parse). The value is parsed as an address, so comments and folding around the path
    (`<a@b> (via x)`, RFC 5322 §3.6.7) do not turn the sender into `<>`."""
    text = value.strip()
    if text in ("<>", ""):
        return ""
    try:
        found = address.find_addresses(text)
        if len(found) != 1:
            return ""
        path = address.parse_path("<%s>" % found[0].text, sender=True, smtputf8=True)
    except address.AddressError:
        return ""
    return "" if path.is_null else str(path)
