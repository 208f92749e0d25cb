"""Delivery status notifications (RFC 3464): bounces and delay warnings, as message text.

Owns the text of a `multipart/report; report-type=delivery-status` message: a human part,
a `message/delivery-status` part (per-message and per-recipient fields: Final-Recipient,
Original-Recipient, Action failed|delayed, Status, Diagnostic-Code, Last-Attempt-Date,
Will-Retry-Until) and the returned message (headers only for warnings, for RET=HDRS, and
for messages over RETURN_LIMIT or with a BINARYMIME body, which a DSN's text cannot carry:
`text/rfc822-headers`; otherwise `message/rfc822`). For an
SMTPUTF8 message or a non-ASCII address, RFC 6533's types instead: report-type
`global-delivery-status`, `message/global-delivery-status` (address type `utf-8`), and
`message/global` or `message/global-headers`, in UTF-8.

The human part and the Subject: are masq's English text, or an administrator's template
(errmsg_file, warnmsg_file: masq.outbound.dsn_text) filled in here; a part that is not
ASCII goes as UTF-8 quoted-printable (raw UTF-8 in an RFC 6533 report), a Subject: as
RFC 2047 encoded words. Who gets it is the scheduler's decision (never the null sender;
a failed bounce goes to postmaster). Hostile input: everything from the original message
and the remote replies; reply text is flattened to one line, and the original is carried
as it is, after a MIME boundary that cannot occur in it.
"""

import os

from masq.mail import message

RETURN_LIMIT = 256 * 1024


def _boundary(msgid):
    return "=_masq_%s_%s" % (msgid, os.urandom(6).hex())


def _line(text):
    return " ".join(str(text).replace("\r", " ").replace("\n", " ").split())[:900]


def is_global(envelope, failures):
    """Return True if the DSN must use RFC 6533's UTF-8 types (message/global...)."""
    return bool(envelope.smtputf8) or not all(
        text.isascii() for text in [envelope.sender or ""] + [r.address for r, _ in failures])


def _address_type(address):
    return "rfc822" if address.isascii() else "utf-8"


def _status_fields(hostname, envelope, failures, action, until, now):
    lines = ["Reporting-MTA: dns; %s" % hostname]
    if envelope.envid:
        lines.append("Original-Envelope-Id: %s" % _line(envelope.envid))
    lines.append("Arrival-Date: %s" % message.format_date(envelope.received))
    for rcpt, outcome in failures:
        lines.append("")
        if rcpt.orcpt:
            lines.append("Original-Recipient: %s" % _line(rcpt.orcpt))
        lines.append("Final-Recipient: %s; %s" % (_address_type(rcpt.address),
                                                 _line(rcpt.address)))
        lines.append("Action: %s" % action)
        lines.append("Status: %s" % outcome.status)
        lines.append("Diagnostic-Code: x-masq; %s" % _line(outcome.text))
        lines.append("Last-Attempt-Date: %s" % message.format_date(now))
        if action == "delayed" and until:
            lines.append("Will-Retry-Until: %s" % message.format_date(until))
    return lines


def _human(hostname, failures, action):
    if action == "failed":
        lines = ["This is the mail system at host %s." % hostname, "",
                 "Your message could not be delivered to one or more recipients.",
                 "It is attached below. The reasons:", ""]
    else:
        lines = ["This is the mail system at host %s." % hostname, "",
                 "Your message has not been delivered yet to the recipients below.",
                 "The mail system will keep trying; you need not send it again.", ""]
    for rcpt, outcome in failures:
        lines.append("<%s>: %s" % (_line(rcpt.address), _line(outcome.text)))
    return lines


def _values(hostname, msgid, envelope, failures, until):
    """Return the template variables (masq.outbound.dsn_text.VARIABLES) for this report."""
    from masq import __version__
    sender = envelope.sender or ""
    local, _, domain = sender.rpartition("@") if "@" in sender else (sender, "", "")
    first = failures[0][0].address if failures else ""
    rcpt_local, _, rcpt_domain = first.rpartition("@") if "@" in first else (first, "", "")
    reasons = list(dict.fromkeys(_line(outcome.text) for _, outcome in failures))
    origin = envelope.origin or ""              # the local submitter, as mailq's ident=
    ident = envelope.auth_user or ("" if origin.startswith("fetch:") else origin)
    values = {"host_name": hostname, "package": "masq", "version": __version__, "uid": msgid,
              "return_path": sender, "return_path_local": local, "return_path_domain": domain,
              "received_host": envelope.client or "", "ident": ident,
              "rcpt": ", ".join(r.address for r, _ in failures), "rcpt_local": rcpt_local,
              "rcpt_domain": rcpt_domain, "err_msg": "; ".join(reasons),
              "retry_until": message.format_date(until) if until else ""}
    return {name: _line(value) for name, value in values.items()}


def _text_part(lines, utf8, own):
    """Return the human part's header lines and its text lines: a template's (own) 8-bit
    text as UTF-8 quoted-printable unless utf8; masq's text as it always was."""
    if not own or all(line.isascii() for line in lines):
        return ["Content-Type: text/plain; charset=%s" % ("utf-8" if utf8 else "us-ascii"),
                ""], lines
    if utf8:
        return ["Content-Type: text/plain; charset=utf-8", ""], lines
    from masq.mail.downgrade import quoted_printable
    encoded = [quoted_printable(line.encode("utf-8")).decode("ascii") for line in lines]
    return ["Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: quoted-printable", ""], encoded


def build(hostname, msgid, envelope, failures, body, action, until, now, template=None):
    """Yield the DSN, dated `now`, as bytes chunks (headers, parts, and the original from
    body); `until` (or None) is when a delayed message will be given up; `template` (a
    masq.outbound.dsn_text.Template, or None for masq's text) gives the human part.

    For an SMTPUTF8 message or a non-ASCII address the report is RFC 6533's: report-type
    global-delivery-status, message/global-delivery-status, message/global(-headers), and
    UTF-8 text (the DSN then needs SMTPUTF8, which the SMTP client asks for by itself)."""
    boundary = _boundary(msgid)
    utf8 = is_global(envelope, failures)
    headers_only = (action != "failed" or (envelope.ret or "").upper() == "HDRS"
                    or envelope.size > RETURN_LIMIT or envelope.body == "BINARYMIME")
    subject = ("Undelivered Mail Returned to Sender" if action == "failed"
               else "Delayed Mail (still being retried)")
    if template is None:
        human = _human(hostname, failures, action)
    else:
        own, human = template.render(_values(hostname, msgid, envelope, failures, until),
                                     [(_line(r.address), _line(o.text)) for r, o in failures])
        if own and own.strip():
            from masq.mail.address import encoded_words
            subject = own if own.isascii() or utf8 else encoded_words(own)
    report = "global-delivery-status" if utf8 else "delivery-status"
    head = message.Headers()
    head.append("From", "Mail Delivery System <MAILER-DAEMON@%s>" % hostname)
    head.append("To", "<%s>" % envelope.sender if envelope.sender else "postmaster")
    head.append("Subject", subject)
    head.append("Date", message.format_date(now))
    head.append("Message-ID", message.make_message_id("dsn." + msgid, hostname))
    head.append("Auto-Submitted", "auto-replied")
    head.append("MIME-Version", "1.0")
    head.append("Content-Type", 'multipart/report; report-type=%s;'
                ' boundary="%s"' % (report, boundary))
    part_head, human = _text_part(human, utf8, template is not None)
    text = [head.to_bytes().decode("utf-8", "replace"), "This is a MIME-encapsulated message.",
            "", "--" + boundary] + part_head + human
    text += ["", "--" + boundary, "Content-Type: message/%s" % report, ""]
    text += _status_fields(hostname, envelope, failures, action, until, now)
    if utf8:
        kind = "message/global-headers" if headers_only else "message/global"
    else:
        kind = "text/rfc822-headers" if headers_only else "message/rfc822"
    text += ["", "--" + boundary, "Content-Type: %s" % kind, "", ""]
    head_text = "\r\n".join(text)
    if not utf8:
        head_text = head_text.encode("ascii", "replace").decode("ascii")
    yield head_text.encode("utf-8", "replace")      # ends with the part's blank line
    yield from _original(body, headers_only)
    yield ("\r\n--%s--\r\n" % boundary).encode("ascii")


def _original(chunks, headers_only):
    """Yield the original message text, or only its header block."""
    if not headers_only:
        for chunk in chunks:
            yield chunk
        return
    yield message.split_message(chunks)[0].to_bytes()
