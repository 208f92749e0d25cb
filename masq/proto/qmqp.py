"""QMQP (qmail's Quick Mail Queueing Protocol) engines, sans-IO: the server's and the client's.

The protocol: one message per connection. The client sends one netstring holding the
message's netstring (its lines ended by LF), the sender's and one per recipient; the server
answers with one netstring for the whole message, starting with K (queued), Z (temporary
failure) or D (permanent failure), and closes. Port 628.

Owns: `Server` (bytes in; the events of `masq.proto.qmail`: `PackageStart`, the text in
`MessageChunk`s as it streams, `Package` once the envelope is complete; `respond(kind,
text)` makes the answer) and `Client` (the bytes that frame a message whose LF-ended text
has a known size; the response parsed). No sockets, files or clocks.

All input is hostile: the netstring rules of `masq.proto.qmail` (no more than
LENGTH_DIGITS digits of length) and the limits of `masq.proto.qmtp` apply (an address over
MAX_ADDRESS); the parts must fill the outer netstring exactly, a message needs at least one
recipient, and anything after it is a fault. Faults raise `errors.ProtocolError`; the
caller closes the connection.
"""

from . import NEED_DATA
from .errors import ProtocolError
from .qmail import (Answering, MessageChunk, Package, PackageStart, Responses, length,
                    netstring, read_netstring)
from .qmtp import MAX_ADDRESS, MAX_RECIPIENTS_FIELD

__all__ = ["Server", "Client", "NEED_DATA", "MessageChunk", "Package", "PackageStart",
           "ProtocolError"]


class Server(Answering):
    """The server side of one QMQP connection."""

    def __init__(self):
        super().__init__("outer")   # outer, length, text, comma, envelope, answer, done
        self.outer = 0              # octets of the outer netstring still to come

    @property
    def wants_data(self):
        """Return True while the engine can take more input."""
        return self.state not in ("answer", "done")

    def next_event(self):
        """Return the next event, or NEED_DATA."""
        if self.state == "outer":
            found = length(self.buffer, 0)
            if found is None:
                return NEED_DATA
            self.outer, start = found
            del self.buffer[:start]
            self.state = "length"
        if self.state == "length":
            found = length(self.buffer, 0)
            if found is None:
                return NEED_DATA
            size, start = found
            self._take(start + size + 1)
            del self.buffer[:start]
            self.state, self.left = "text", size
            return PackageStart(size, False)
        return self._message()

    def _take(self, octets):
        if octets > self.outer:
            raise ProtocolError("a part overruns the outer netstring")
        self.outer -= octets

    def _envelope(self):
        if self.outer > MAX_RECIPIENTS_FIELD:
            raise ProtocolError("an envelope of %d octets, more than %d"
                                % (self.outer, MAX_RECIPIENTS_FIELD))
        if len(self.buffer) < self.outer + 1:
            return NEED_DATA
        if self.buffer[self.outer:self.outer + 1] != b",":
            raise ProtocolError("outer netstring not ended by a comma")
        fields, pos = [], 0
        while pos < self.outer:
            found = read_netstring(self.buffer, pos, MAX_ADDRESS)
            if found is None or found[1] > self.outer:
                raise ProtocolError("a part overruns the outer netstring")
            fields.append(found[0])
            pos = found[1]
        if len(fields) < 2:
            raise ProtocolError("a message without recipients")
        if len(self.buffer) > self.outer + 1:
            raise ProtocolError("data after the message")
        self.buffer = bytearray()       # replaced, not shrunk in place (no pinned hole)
        self.state = "answer"
        return Package(fields[0], tuple(fields[1:]))

    def respond(self, kind, text):
        """Answer the message: kind K, Z or D; then the connection is done."""
        self._answer(kind, text)
        self.state = "done"


class Client(Responses):
    """The client side: frames one message and reads the response."""

    @staticmethod
    def start(size, sender, recipients):
        """Return the bytes that open a message whose LF-ended text has size octets, and the
        bytes that close it (after the text)."""
        tail = b"," + netstring(sender.encode("utf-8")) + b"".join(
            netstring(r.encode("utf-8")) for r in recipients)
        head = b"%d:" % size
        return b"%d:" % (len(head) + size + len(tail)) + head, tail + b","

    def response(self):
        """Return the response (kind, text) once complete, else None."""
        return self._next()
