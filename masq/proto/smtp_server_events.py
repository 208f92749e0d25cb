"""Events the SMTP server engine hands to the application, and its two sentinels.

Owns: the event types (small frozen records named as nouns) and `NEED_DATA` / `PAUSED`.
Does not: decide anything; the engine (`smtp_server.py`) creates them, the application reads
them. Events marked "decision" leave the engine PAUSED until the application calls
`respond()`; the others are informational.

The session ends with `errors.ConnectionClosed`: write out data_to_send(), then close the
socket. Its `reason` is one of "eof", "quit", "junk", "too many errors", "timeout",
"shutdown", "refused", "protocol" (an unrecoverable framing error such as a bad BDAT count).

Text fields are `str` (already checked as UTF-8 and free of control characters by the
engine); message text and SASL credentials stay `bytes`.
"""


from . import NEED_DATA, Sentinel, frozen

PAUSED = Sentinel("PAUSED")  # answer the last decision event with respond()
__all__ = ["NEED_DATA", "PAUSED", "DECISIONS", "Hello", "MailFrom", "RcptTo", "DataStart",
           "DataChunk", "EndOfData", "DataAborted", "Reset", "StartTLS", "AuthRequest", "Quit"]


@frozen
class Hello:
    """HELO or EHLO (decision). `extended` is True for EHLO."""

    name: str
    extended: bool


@frozen
class MailFrom:
    """MAIL FROM (decision). `address` is the raw path between < and >, "" for <>."""

    address: str
    params: dict


@frozen
class RcptTo:
    """RCPT TO (decision). `address` is the raw path between < and >."""

    address: str
    params: dict


@frozen
class DataStart:
    """DATA, or the first BDAT of a transaction (decision)."""


@frozen
class DataChunk:
    """A piece of message text as received, dot-stuffing removed (DATA) or verbatim (BDAT).

    Bare CR, bare LF, NUL and 8-bit octets pass through untouched: the application fixes
    line ends (masq.inbound.session normalises them to CRLF)."""

    data: bytes


@frozen
class EndOfData:
    """The message text is complete (decision: answer after the durable commit)."""


@frozen
class DataAborted:
    """Drop the message text handed out so far: "too big", "line too long", or a close
    reason. Reading goes on to the end of the transfer, then Reset follows (unless closed)."""

    reason: str


@frozen
class Reset:
    """Drop the transaction (envelope and text): RSET, HELO/EHLO inside a transaction, or a
    transfer the engine failed (too big, line too long, refused or out-of-sequence BDAT)."""


@frozen
class StartTLS:
    """STARTTLS (decision). Accept, flush data_to_send(), handshake, then start_tls_done()."""


@frozen
class AuthRequest:
    """Decoded SASL credentials (decision: 235 2.7.0 or 535 5.7.8)."""

    _hidden = ("password",)

    mechanism: str
    username: bytes
    password: bytes
    authzid: bytes = b""


@frozen
class Quit:
    """QUIT; the engine has queued 221 and is closing."""


DECISIONS = (Hello, MailFrom, RcptTo, DataStart, EndOfData, StartTLS, AuthRequest)
