"""Events the SMTP server engine hands to the application, and its two sentinels.

Owns: the event types (small frozen dataclasses named as nouns) and `NEED_DATA` / `PAUSED`.
Does not: decide anything; the engine (`smtp_server.py`) creates them, the application reads
them. Events marked "decision" leave the engine PAUSED until the application calls
`respond()`; the others are informational.

Text fields are `str` (already checked as UTF-8 and free of control characters by the
engine); message text and SASL credentials stay `bytes`.
"""

from dataclasses import dataclass, field

from . import Sentinel

NEED_DATA = Sentinel("NEED_DATA")  # feed more bytes with receive_data()
PAUSED = Sentinel("PAUSED")  # answer the last decision event with respond()


@dataclass(frozen=True)
class Hello:
    """HELO or EHLO (decision). `extended` is True for EHLO."""

    name: str
    extended: bool


@dataclass(frozen=True)
class MailFrom:
    """MAIL FROM (decision). `address` is the raw path between < and >, "" for <>."""

    address: str
    params: dict


@dataclass(frozen=True)
class RcptTo:
    """RCPT TO (decision). `address` is the raw path between < and >."""

    address: str
    params: dict


@dataclass(frozen=True)
class DataStart:
    """DATA, or the first BDAT of a transaction (decision)."""


@dataclass(frozen=True)
class DataChunk:
    """A piece of message text as received, dot-stuffing removed (DATA) or verbatim (BDAT).

    Bare CR, bare LF, NUL and 8-bit octets pass through untouched: cleanup fixes line ends."""

    data: bytes


@dataclass(frozen=True)
class EndOfData:
    """The message text is complete (decision: answer after the durable commit)."""


@dataclass(frozen=True)
class DataAborted:
    """Drop the message text handed out so far: "too big", "line too long", or a close
    reason. Reading goes on to the end of the transfer, then Reset follows (unless closed)."""

    reason: str


@dataclass(frozen=True)
class Reset:
    """Drop the transaction (envelope and text): RSET, HELO/EHLO inside a transaction, or a
    transfer the engine failed (too big, line too long, refused or out-of-sequence BDAT)."""


@dataclass(frozen=True)
class StartTLS:
    """STARTTLS (decision). Accept, flush data_to_send(), handshake, then start_tls_done()."""


@dataclass(frozen=True)
class AuthRequest:
    """Decoded SASL credentials (decision: 235 2.7.0 or 535 5.7.8)."""

    mechanism: str
    username: bytes
    password: bytes = field(repr=False)
    authzid: bytes = b""


@dataclass(frozen=True)
class Quit:
    """QUIT; the engine has queued 221 and is closing."""


@dataclass(frozen=True)
class ConnectionClosed:
    """The session is over: write out data_to_send(), then close the socket.

    `reason` is one of "eof", "quit", "junk", "too many errors", "timeout", "shutdown",
    "refused", "protocol" (an unrecoverable framing error such as a bad BDAT count).
    """

    reason: str = "eof"


DECISIONS = (Hello, MailFrom, RcptTo, DataStart, EndOfData, StartTLS, AuthRequest)
