"""Which addresses masq puts into an SMTP path: one rule for the client and the server.

RFC 5321 lets a quoted local part hold `<` and `>` (`"<img>"@example.org`), but servers
and filters that cut a path at the first `>` are common, so the SMTP client never sends
such a path (nor one with a control character). The server applies the same rule at MAIL
and RCPT, so that mail it could not relay is refused in the dialogue (553 5.1.7 / 5.1.3)
instead of being accepted and then bounced to an address that cannot take the bounce;
`sendmail` refuses it with exit 65. No IO; the address is text, without angle brackets.
"""

from .reply import Reply

BAD_SENDER = Reply(553, "5.1.7", "Sender address cannot be relayed: it has '<', '>' or a "
                   "control character")
BAD_RECIPIENT = Reply(553, "5.1.3", "Recipient address cannot be relayed: it has '<', '>' "
                      "or a control character")


def sendable(address):
    """Return True if address may go between the angle brackets of MAIL FROM or RCPT TO."""
    return not any(c < " " or c in "\x7f<>" for c in address)
