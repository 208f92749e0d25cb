"""The SMTP server engine's own replies, in one table-like module.

Owns: the fixed texts and codes the engine answers by itself (syntax, sequence, limits).
Does not: hold policy replies (relay denied, user unknown...): those come from `policy/`
through the application's `respond()`.

Every reply carries an enhanced status code (RFC 2034/3463) except those RFC 2034 exempts or
that cannot have one: the greeting, the HELO/EHLO reply, 354 and the 334 SASL prompts.
Texts follow Postfix `smtpd.c` where a client might grep for them.
"""

from .reply import Reply

OK = Reply(250, "2.0.0", "Ok")
MAIL_OK = Reply(250, "2.1.0", "Ok")
RCPT_OK = Reply(250, "2.1.5", "Ok")
QUEUED = Reply(250, "2.0.0", "Ok: queued")
VRFY = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY")
BYE = Reply(221, "2.0.0", "Bye")
GO_AHEAD = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
TLS_GO_AHEAD = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
JUNK = Reply(221, "2.7.0", "Error: I can break rules, too. Goodbye.")

UNKNOWN = Reply(500, "5.5.2", "Error: command not recognized")
TOO_LONG = Reply(500, "5.5.2", "Error: command too long")
AUTH_TOO_LONG = Reply(500, "5.5.6", "Authentication Exchange line is too long")
BARE_CR = Reply(500, "5.5.2", "Error: bare <CR> received")
BAD_UTF8 = Reply(500, "5.5.2", "Error: bad UTF-8 syntax")
NUL = Reply(501, "5.5.2", "Error: NUL characters are not allowed")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")

NEED_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
IN_TRANSACTION = Reply(503, "5.5.1", "Error: MAIL transaction in progress")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "Error: DATA after BDAT")
RCPT_AFTER_BDAT = Reply(503, "5.5.1", "Error: RCPT after BDAT")
ALREADY_AUTH = Reply(503, "5.5.1", "Error: already authenticated")
AUTH_DISABLED = Reply(503, "5.5.1", "Error: authentication not enabled")
TLS_ACTIVE = Reply(554, "5.5.1", "Error: TLS already active")

AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_UNKNOWN_MECH = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode base64")
AUTH_BAD_DATA = Reply(501, "5.5.2", "Invalid authentication data")

TOO_BIG = Reply(552, "5.3.4", "Error: message file too big")
LINE_TOO_LONG = Reply(552, "5.3.4", "Error: message line too long")
SIZE_EXCEEDED = Reply(552, "5.3.4", "Message size exceeds fixed limit")
BDAT_SYNTAX = Reply(521, "5.5.4", "Syntax: BDAT count [LAST]")


def syntax(usage):
    """Return the 501 5.5.4 reply showing the right usage of a command."""
    return Reply(501, "5.5.4", "Syntax: " + usage)


def chunk_received(count):
    """Return the 250 reply to a BDAT chunk that is not the last."""
    return Reply(250, "2.0.0", "Ok: %d octets received" % count)


def greeting(hostname):
    """Return the default 220 greeting."""
    return Reply(220, "", hostname + " ESMTP masq")


def too_many_errors(hostname):
    """Return the 421 sent when a client reaches the error limit."""
    return Reply(421, "4.7.0", hostname + " Error: too many errors")


def timeout(hostname):
    """Return the 421 sent when the application's read timer expires."""
    return Reply(421, "4.4.2", hostname + " Error: timeout exceeded")


def shutting_down(hostname):
    """Return the 421 sent when the server is going away."""
    return Reply(421, "4.3.2", hostname + " Service shutting down")
