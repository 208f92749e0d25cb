"""Local submission (`sendmail`, `-bm`): read a message on stdin and queue it durably.

Owns what acceptance does to a locally submitted message (as masqmail and sendmail do): Bcc,
Return-Path and Envelope-To removed; From (the invoker's name only with their own
address), `To: undisclosed-recipients:;` (no To or Cc), Date and Message-ID added when
missing; a Received line on top; recipients from the arguments and, with -t, from
To/Cc/Bcc. Input is normalised to CRLF (LF or CRLF end a line; a bare CR becomes CRLF
too, or refuses the message with `option bare_line_ends 'refuse'`) and ends at a lone `.`
unless -i/-oi; nothing else in the text is altered.

Exit 0 means the message is on stable storage (its COMMIT record fdatasync'ed). It streams:
memory stays flat whatever the message size. Works with no daemon; one that runs is poked
to pick the message up. Errors: bad addresses exit 65 (EX_DATAERR), no recipients 64,
too big 73, spool full or I/O error 75, spool misconfigured 78, a refused bare CR 65 — one
line each.
"""

import os
import pwd

from masq.base import exits, reads
from masq.mail import address, message
from masq.config.load import load_config
from masq.policy.users import privileged, user_name
from masq.proto import smtp_path
from masq.queue.envelope import Envelope
from masq.queue.log import LogError
from masq.queue.opening import open_queue

_stdin = []         # the ReadBuffer stdin is read into (one per process, made at first use)


def _read_stdin():
    """Return the next read of stdin (b"" at its end), at its own size (masq.base.reads)."""
    if not _stdin:
        _stdin.append(reads.ReadBuffer())
    return _stdin[0].read(0)


def run(opts):
    """Queue the message on stdin as opts say; return the exit status."""
    cfg = load_config(opts.config)
    if cfg.main.defer_all:
        raise exits.Failure("message not queued: defer_all is set, try again later",
                            exits.TEMPFAIL)
    hostname = cfg.main.hostname
    pending = b""
    if opts.uucp:
        from masq.cli import rmail
        uucp_sender, pending = rmail.read_sender()
        if uucp_sender is not None and opts.sender is None:
            opts.sender = uucp_sender
    sender, warning = envelope_sender(cfg, opts)
    recipients = _arguments(opts.recipients, hostname)
    if not recipients and not opts.extract:
        raise exits.Failure("no recipients given", exits.USAGE)
    queue = open_queue(cfg, "append")
    writer = queue.writer()
    msgid = writer.id
    try:
        recipients = _receive(cfg, opts, writer, msgid, sender, warning, recipients,
                              pending)
        queue.sync()
        size = writer.size
    except LogError as exc:
        writer.abort()
        raise exits.Failure("message not queued: %s" % exc, exits.TEMPFAIL) from None
    except BaseException:
        writer.abort()
        raise
    finally:
        queue.close()
    _log_received(cfg, msgid, sender, size, len(recipients))
    _poke(cfg, opts, msgid, recipients)
    return exits.OK


def _log_received(cfg, msgid, sender, size, nrcpt):
    """Write the delivery log's line for the queued message (docs/LOG.md)."""
    from masq.outbound import maillog
    from masq.base.logger import Logger
    log = Logger(cfg.main.log, cfg.main.log_level)
    maillog.received(log, msgid, sender, size, nrcpt, uid=os.getuid())
    log.close()


def envelope_sender(cfg, opts):
    """Return (sender, X-Authentication-Warning text or None) for the submission."""
    user = user_name()
    own = "%s@%s" % (user, cfg.main.hostname)
    if opts.sender is None:
        return own, None
    given = opts.sender.strip()
    if given in ("", "<>"):
        return "", None
    if not given.startswith("<"):
        given = "<%s>" % given
    try:
        sender = _qualify(address.parse_path(given, sender=True, unqualified=True,
                                             smtputf8=True), cfg.main.hostname)
    except address.AddressError as exc:
        raise exits.Failure("bad sender address %r: %s" % (opts.sender, exc.text),
                            exits.DATAERR) from None
    if not smtp_path.sendable(sender):
        raise exits.Failure("bad sender address %r: %s" % (opts.sender, smtp_path.BAD_SENDER
                                                           .text[0]), exits.DATAERR)
    if privileged(cfg) or sender == own:
        return sender, None
    return sender, "%s: %s set sender to %s using -f" % (cfg.main.hostname, user, sender or "<>")


def _qualify(addr, hostname):
    text = str(addr)
    if addr.is_null or addr.domain:
        return text
    return "%s@%s" % (text, hostname)


def _arguments(args, hostname):
    out = []
    for arg in args:
        out.extend(_parse_list(arg, "recipient %r" % arg, hostname))
    return out


def _parse_list(value, what, hostname):
    try:
        found = address.parse_address_list(value)
    except address.AddressError as exc:
        raise exits.Failure("%s: %s" % (what, exc.text), exits.DATAERR) from None
    out = []
    for text in found:
        try:
            local, domain = address.split(text)
        except address.AddressError as exc:
            raise exits.Failure("%s: %s" % (what, exc.text), exits.DATAERR) from None
        text = "%s@%s" % (address.quote_local(local), domain or hostname)
        if not smtp_path.sendable(text):
            raise exits.Failure("%s: %s" % (what, smtp_path.BAD_RECIPIENT.text[0]),
                                exits.DATAERR)
        out.append(text)
    return out


def _receive(cfg, opts, writer, msgid, sender, warning, recipients, pending=b""):
    """Read pending and then stdin into writer; commit; return the final recipient list."""
    limit = cfg.main.max_message_size
    norm = message.InputNormalizer(dot_ends=opts.dot_ends)
    reader = message.HeaderReader()
    first_body = b""
    finished = False
    try:
        while not reader.done:
            data, pending = pending or _read_stdin(), b""
            finished = not data or norm.ended
            text = norm.feed(data) + (norm.finish() if finished else b"")
            first_body += reader.feed(text)
            if finished:
                first_body += reader.finish()
    except message.HeaderTooLong as exc:
        raise exits.Failure("message not queued: %s" % exc.text, exits.DATAERR) from None
    headers = reader.headers
    if opts.extract:
        for name in ("To", "Cc", "Bcc"):
            for value in headers.get_all(name):
                recipients += _parse_list(value, "%s: header" % name, cfg.main.hostname)
    recipients = _unique(recipients)
    if not recipients:
        raise exits.Failure("no recipients found", exits.USAGE)
    now = writer.queue.clock.time()     # sendmail has no loop: the queue's real clock
    _cleanup(cfg, opts, headers, msgid, sender, warning, recipients, now)
    writer.write(headers.to_bytes() + b"\r\n")
    _copy_body(writer, norm, first_body, limit, finished)
    if norm.bare_cr and cfg.main.bare_line_ends == "refuse":   # LF is the local line end
        raise exits.Failure("message not queued: a bare CR in the text (option "
                            "bare_line_ends 'refuse')", exits.DATAERR)
    listed = recipients
    if cfg.copies_wanted():
        from masq.policy import archive
        listed = archive.Rules(cfg.main).with_copies(sender, recipients)
    writer.commit(Envelope(sender, listed, received=now, protocol="local",
                           origin=user_name(), crlf=True))
    return recipients


def _copy_body(writer, norm, text, limit, finished):
    """Stream the rest of stdin into writer until EOF or a lone dot."""
    while True:
        if writer.size + len(text) > limit:
            raise exits.Failure("message not queued: larger than max_message_size "
                                "(%d bytes)" % limit, exits.CANTCREAT)
        if text:
            writer.write(text)
        if finished:
            return
        data = _read_stdin()
        text = norm.feed(data)
        if not data or norm.ended:
            text += norm.finish()
            finished = True


def _unique(addresses):
    seen, out = set(), []
    for addr in addresses:
        local, _, domain = addr.rpartition("@")
        key = (local, domain.lower())
        if key not in seen:
            seen.add(key)
            out.append(addr)
    return out


def _cleanup(cfg, opts, headers, msgid, sender, warning, recipients, now):
    """Apply the acceptance rules to the header block."""
    hostname = cfg.main.hostname
    headers.remove("Bcc")
    message.strip_envelope_fields(headers)
    if not headers.has("From"):
        own = sender == "%s@%s" % (user_name(), hostname)
        name = opts.fullname if opts.fullname is not None else (_gecos() if own else "")
        headers.append("From", address.format_address(name or "", sender or
                                                      "MAILER-DAEMON@" + hostname))
    if not headers.has("To") and not headers.has("Cc"):
        headers.append("To", "undisclosed-recipients:;")
    if not headers.has("Date"):
        headers.append("Date", message.format_date(now))
    if not headers.has("Message-ID"):
        headers.append("Message-ID", message.make_message_id(msgid, hostname))
    if warning:
        headers.prepend("X-Authentication-Warning", warning)
    headers.prepend("Received", message.received_line(
        by_host=hostname, id=msgid, protocol="local", from_uid=os.getuid(),
        for_rcpt=recipients[0] if len(recipients) == 1 else None, timestamp=now))


def _gecos():
    try:
        return pwd.getpwuid(os.getuid()).pw_gecos.split(",")[0]
    except KeyError:
        return ""


def _poke(cfg, opts, msgid, recipients):
    """Tell a running daemon about the new message, or deliver at once without one.

    The poke (a byte in the pickup FIFO) waits for no answer: the message is on disk
    already, and a daemon that has not read the poke yet finds it when it does (or when it
    starts)."""
    from masq.base import control
    poked = control.poke(cfg.main.spool_dir)
    note = ""
    if not poked and not (opts.queue_only or cfg.main.do_queue):
        note = _deliver_now(cfg, opts, msgid) if _deliverable(cfg, recipients) else \
            " (no route is online for it now)"
    elif not poked:
        note = " (queued only: no daemon runs)"
    if opts.verbose:
        os.write(2, ("masq: %s queued for %s%s\n" % (msgid, ", ".join(recipients), note))
                 .encode())


def _deliverable(cfg, recipients):
    """Return True if a recipient is local or an online route would take one."""
    from masq.policy.local import Locality
    is_local = Locality.from_config(cfg.main).is_local
    remote = [r for r in recipients if not is_local(r)]
    if len(remote) < len(recipients):
        return True
    if not remote or not cfg.routes:
        return False
    from masq import route
    from masq.online import probe
    online = [r for r in cfg.routes if probe.probe(r.name, r.online, r)]
    return any(route.accepts_recipient(r, rcpt) for r in online for rcpt in remote)


def _deliver_now(cfg, opts, msgid):
    """Try the new message at once, as masqmail does without a daemon; never fails it."""
    if opts.background and os.fork():
        return " (delivering in the background)"
    try:
        from masq.daemon import runner
        summary = runner.run_once(cfg, ids=[msgid])
    except exits.Failure as exc:
        return " (not delivered now: %s)" % exc
    except Exception as exc:  # the message is queued: a delivery bug must not lose the 0
        return " (not delivered now: internal error %s)" % exc
    if opts.background:
        os._exit(0)
    return " (%d delivered now, %d deferred)" % (summary.get("delivered", 0),
                                                 summary.get("deferred", 0))
