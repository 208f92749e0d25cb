"""How an engine says the peer broke the protocol, or the connection is over: one pair for all.

Every engine in this package (SMTP server and client, HTTP, POP3, IMAP, DNS ...) uses these:
- `ProtocolError`: the peer broke the protocol; `what` says what happened (for the log),
  `reply` is what to answer it, if anything (an SMTP `Reply`, an HTTP status).
- `ConnectionClosed`: the event that ends a session; `reason` says why ("eof", "quit",
  "timeout" ...), `state` what was in flight when it ended ("" when nothing was).
A caller that misuses an engine (a bug in masq, never the peer's doing) gets `UsageError`,
which no session catches.
"""

from . import frozen


class ProtocolError(Exception):
    """The peer broke the protocol: `what` happened, and the `reply` to send (or None).

    An SMTP engine raises `ProtocolError(reply=Reply(...))` (what = the reply's text), HTTP
    `ProtocolError("text", 400)`, DNS `ProtocolError("text")`."""

    def __init__(self, what=None, reply=None):
        self.reply = reply
        self.what = str(reply) if what is None else what
        super().__init__(self.what)


class UsageError(RuntimeError):
    """The application called an engine in a way its contract forbids (a bug in masq)."""


@frozen
class ConnectionClosed:
    """The session is over: write out what is left to send, then close the socket."""

    reason: str = "eof"
    state: str = ""
