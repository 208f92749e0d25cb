"""The SMTP server engine's own replies, in one table-like module.

Owns: the fixed texts and codes the engine answers by itself (syntax, sequence, limits).
Does not: hold policy replies (relay denied, user unknown...): those come from `policy/`
through the application's `respond()`.

Every reply carries an enhanced status code (RFC 2034/3463) except those RFC 2034 exempts or
that cannot have one: the greeting, the HELO/EHLO reply, 354 and the 334 SASL prompts.
The texts are masq's own: each says what happened and, where the client can act, what
to do; clients act on the codes (RFC 5321 §4.2), never on the words.
"""

from .reply import Reply

OK = Reply(250, "2.0.0", "OK")
MAIL_OK = Reply(250, "2.1.0", "Sender OK")
RCPT_OK = Reply(250, "2.1.5", "Recipient OK")
QUEUED = Reply(250, "2.0.0", "Message queued")
VRFY = Reply(252, "2.5.2", "Addresses are not verified here; send the mail and masq will try it")
HELP = Reply(214, "2.0.0", "masq knows HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT")
BYE = Reply(221, "2.0.0", "Goodbye")
GO_AHEAD = Reply(354, "", "Send the message; end it with a line holding only a dot")
TLS_GO_AHEAD = Reply(220, "2.0.0", "Go ahead with the TLS handshake")
AUTH_OK = Reply(235, "2.7.0", "Logged in")
JUNK = Reply(221, "2.7.0", "This is an SMTP server, not HTTP; closing")

UNKNOWN = Reply(500, "5.5.2", "Unknown command")
TOO_LONG = Reply(500, "5.5.2", "Command line too long")
AUTH_TOO_LONG = Reply(500, "5.5.6", "AUTH line too long")
BARE_CR = Reply(500, "5.5.2", "CR without LF in a command; end lines with CRLF")
BAD_UTF8 = Reply(500, "5.5.2", "Invalid UTF-8 in a command")
NUL = Reply(501, "5.5.2", "NUL octet in a command")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not offered here")

NEED_HELO = Reply(503, "5.5.1", "Send EHLO or HELO first")
NEED_MAIL = Reply(503, "5.5.1", "Send MAIL FROM first")
NEED_RCPT = Reply(503, "5.5.1", "Send RCPT TO first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already given; send RSET to start over")
IN_TRANSACTION = Reply(503, "5.5.1", "Not inside a mail transaction; send RSET first")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA cannot follow BDAT; send BDAT LAST or RSET")
RCPT_AFTER_BDAT = Reply(503, "5.5.1", "RCPT cannot follow BDAT; send BDAT LAST or RSET")
DATA_BINARYMIME = Reply(503, "5.5.1", "BODY=BINARYMIME text must come by BDAT; send RSET")
ALREADY_AUTH = Reply(503, "5.5.1", "Already logged in")
AUTH_DISABLED = Reply(503, "5.5.1", "AUTH is not offered here")
REFUSED_SESSION = Reply(503, "5.5.1", "No mail is taken in this session; send QUIT")
TLS_ACTIVE = Reply(554, "5.5.1", "TLS is already on")

AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Send STARTTLS before AUTH")
AUTH_UNKNOWN_MECH = Reply(504, "5.5.4", "AUTH mechanism not offered; see the EHLO reply")
AUTH_ABORTED = Reply(501, "5.7.0", "AUTH cancelled")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "AUTH data is not valid base64")
AUTH_BAD_DATA = Reply(501, "5.5.2", "AUTH data malformed")

TOO_BIG = Reply(552, "5.3.4", "Message over the size limit")
LINE_TOO_LONG = Reply(552, "5.3.4", "Message has a line over the length limit")
SIZE_EXCEEDED = Reply(552, "5.3.4", "Declared SIZE over the size limit")
BDAT_SYNTAX = Reply(521, "5.5.4", "Usage: BDAT size [LAST]; closing")


def syntax(usage):
    """Return the 501 5.5.4 reply showing the right usage of a command."""
    return Reply(501, "5.5.4", "Usage: " + usage)


def chunk_received(count):
    """Return the 250 reply to a BDAT chunk that is not the last."""
    return Reply(250, "2.0.0", "Chunk of %d octets received" % count)


def greeting(hostname):
    """Return the default 220 greeting."""
    return Reply(220, "", hostname + " ESMTP masq")


def too_many_errors(hostname):
    """Return the 421 sent when a client reaches the error limit."""
    return Reply(421, "4.7.0", hostname + " Too many errors; closing")


def timeout(hostname):
    """Return the 421 sent when the application's read timer expires."""
    return Reply(421, "4.4.2", hostname + " Timed out waiting for the client; closing")


def shutting_down(hostname):
    """Return the 421 sent when the server is going away."""
    return Reply(421, "4.3.2", hostname + " Server shutting down; try again later")
