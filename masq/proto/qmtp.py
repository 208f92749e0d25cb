"""QMTP (qmail's Quick Mail Transfer Protocol) engines, sans-IO: the server's and the client's.

The protocol: the client sends packages, each three netstrings ("LEN:DATA,"): the message
(its first byte says how its lines end: CR for CRLF, LF for LF), the envelope sender, and a
netstring of recipient netstrings; after each package the server sends one response
netstring per recipient, in order, starting with K (accepted), Z (temporary failure) or
D (permanent failure). Packages may follow each other without waiting. Port 209.

Owns: `Server` (bytes in; events out: `PackageStart` with the declared size, the message
text in `MessageChunk`s as it streams, `Package` with the envelope once the package is
complete; `respond(replies)` turns one reply per recipient into bytes out) and `Client`
(the bytes that frame a package; the server's responses parsed). No sockets, files or
clocks; deciding what to accept is the caller's.

All input is hostile. A malformed netstring (`masq.proto.qmail`: a length with a
leading zero or more than LENGTH_DIGITS digits, a missing ":" or ","), a sender or
recipient list over its limit, a package with no recipient or an unknown line-end byte,
and a response that is empty, over MAX_RESPONSE or does not start with K, Z or D raise
`errors.ProtocolError` (no reply): QMTP has no way to answer that, so the caller closes
the connection (the client sees a temporary failure). The message's size is only
declared here; whether it is too large is the caller's decision (`PackageStart`).
"""

from . import NEED_DATA
from .errors import ProtocolError
from .qmail import (Answering, MessageChunk, Package, PackageStart, Responses, length,
                    netstring, read_netstring, split_netstrings)

__all__ = ["Server", "Client", "NEED_DATA", "MessageChunk", "Package", "PackageStart",
           "ProtocolError", "MAX_ADDRESS", "MAX_RECIPIENTS_FIELD"]

MAX_ADDRESS = 2048          # octets of one address
MAX_RECIPIENTS_FIELD = 1 << 20


class Server(Answering):
    """The server side of one QMTP connection."""

    def __init__(self):
        super().__init__("length")  # length, text, comma, envelope, answer
        self.crlf = False

    @property
    def wants_data(self):
        """Return True while the engine can take more input (not waiting for respond())."""
        return self.state != "answer"

    def next_event(self):
        """Return the next event, or NEED_DATA (also while a Package waits for respond())."""
        if self.state == "length":
            found = length(self.buffer, 0)
            if found is None or len(self.buffer) <= found[1]:
                return NEED_DATA
            size, start = found
            if size == 0:
                raise ProtocolError("empty message (no line-end byte)")
            mark = self.buffer[start]
            if mark not in b"\r\n":
                raise ProtocolError("unknown message encoding %r" % bytes([mark]))
            del self.buffer[:start + 1]
            self.state, self.left, self.crlf = "text", size - 1, mark == 13
            return PackageStart(size - 1, self.crlf)
        return self._message()

    def _envelope(self):
        sender = read_netstring(self.buffer, 0, MAX_ADDRESS)
        if sender is None:
            return NEED_DATA
        found = read_netstring(self.buffer, sender[1], MAX_RECIPIENTS_FIELD)
        if found is None:
            return NEED_DATA
        recipients = split_netstrings(found[0], MAX_ADDRESS)
        if not recipients:
            raise ProtocolError("a package without recipients")
        del self.buffer[:found[1]]
        self.state = "answer"
        return Package(sender[0], tuple(recipients))

    def respond(self, replies):
        """Answer the package: one reply per recipient, (kind, text), kind K, Z or D."""
        for kind, text in replies:
            self._answer(kind, text)
        self.state = "length"


class Client(Responses):
    """The client side: frames packages and reads the responses."""

    @staticmethod
    def start(size):
        """Return the bytes that open a package whose text (CRLF lines) has size octets."""
        return b"%d:\r" % (size + 1)

    @staticmethod
    def end(sender, recipients):
        """Return the bytes that close a package: the comma, sender and recipients."""
        rcpts = b"".join(netstring(r.encode("utf-8")) for r in recipients)
        return b"," + netstring(sender.encode("utf-8")) + netstring(rcpts)

    def responses(self):
        """Return the complete responses received so far: [(kind, text)]."""
        out = []
        while True:
            response = self._next()
            if response is None:
                return out
            out.append(response)
