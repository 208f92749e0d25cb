"""What qmail's QMTP and QMQP engines share: netstrings ("LEN:DATA,"), the server's events
and buffers, the client's responses.

Owns: encoding a netstring, reading one (or a list of them) from a buffer with a limit;
the events both servers return (`PackageStart`, `MessageChunk`, `Package`); `Answering`,
a server engine's input, the message netstring's text streamed out of it, and the answers
queued for the client (`data_to_send`, `shutdown`); `Responses`, a client engine's input
parsed into K/Z/D responses. The framing of each protocol is in `masq.proto.qmtp` and
`masq.proto.qmqp`. No sockets, files or clocks.

A length with a leading zero or more than LENGTH_DIGITS digits, a missing ":" or ",", a
netstring over its limit and a response that does not start with K, Z or D raise
`errors.ProtocolError`.
"""

from . import NEED_DATA, frozen
from .errors import ProtocolError

LENGTH_DIGITS = 12          # a message of up to 999 GB can be declared
MAX_RESPONSE = 4096


@frozen
class PackageStart:
    """A package's message begins; `size` octets of text follow (the line-end byte not
    counted), `crlf` says how its lines end."""
    size: int
    crlf: bool


@frozen
class MessageChunk:
    """Some of the message text, as sent (line ends as the package declared)."""
    data: bytes


@frozen
class Package:
    """The package is complete: its envelope; answer with respond()."""
    sender: bytes
    recipients: tuple


def netstring(data):
    """Return data encoded as a netstring."""
    return b"%d:%s," % (len(data), data)


def length(buffer, pos):
    """Return (length, position after the colon) of the netstring at pos, or None if more
    bytes are needed."""
    colon = buffer.find(b":", pos, pos + LENGTH_DIGITS + 1)
    if colon < 0:
        if len(buffer) - pos > LENGTH_DIGITS:
            raise ProtocolError("netstring length longer than %d digits" % LENGTH_DIGITS)
        if not buffer[pos:].isdigit() and len(buffer) > pos:
            raise ProtocolError("netstring length is not a number")
        return None
    digits = bytes(buffer[pos:colon])
    if not digits.isdigit() or (digits[:1] == b"0" and len(digits) > 1):
        raise ProtocolError("bad netstring length %r" % digits[:20])
    return int(digits), colon + 1


def read_netstring(buffer, pos, limit):
    """Return (interpretation, position after it) of the netstring at pos, or None if more
    bytes are needed; ProtocolError if it is malformed or longer than limit."""
    found = length(buffer, pos)
    if found is None:
        return None
    size, start = found
    if size > limit:
        raise ProtocolError("netstring of %d octets, more than %d" % (size, limit))
    if len(buffer) < start + size + 1:
        return None
    if buffer[start + size:start + size + 1] != b",":
        raise ProtocolError("netstring not ended by a comma")
    return bytes(buffer[start:start + size]), start + size + 1


def split_netstrings(data, limit):
    """Return the interpretations of the netstrings that make up data."""
    items, pos = [], 0
    while pos < len(data):
        found = read_netstring(data, pos, limit)
        if found is None:
            raise ProtocolError("truncated netstring in a list")
        item, pos = found
        items.append(item)
    return items


class Answering:
    """A QMTP or QMQP server engine's buffers: input from the client, answers for it.

    A subclass reads the message netstring's length (state "text", `left` octets of text
    to come) and the envelope after it (`_envelope()`, from state "envelope"); in state
    "done" no more input is allowed."""

    def __init__(self, state):
        self.buffer = bytearray()
        self.state = state
        self.left = 0               # text octets still to come
        self.eof = False
        self._out = bytearray()

    def receive_data(self, data):
        """Take bytes from the client (b"" at EOF)."""
        if data:
            if self.state == "done":
                raise ProtocolError("data after the message")
            self.buffer += data
        else:
            self.eof = True

    def _message(self):
        """Return the next event from the "text", "comma" or "envelope" state: a
        MessageChunk, what `_envelope()` returns once the text's comma is read, or
        NEED_DATA."""
        if self.state == "text":
            if self.left:
                if not self.buffer:
                    return NEED_DATA
                data = bytes(self.buffer[:self.left])
                del self.buffer[:len(data)]
                self.left -= len(data)
                return MessageChunk(data)
            self.state = "comma"
        if self.state == "comma":
            if not self.buffer:
                return NEED_DATA
            if self.buffer[:1] != b",":
                raise ProtocolError("message netstring not ended by a comma")
            del self.buffer[:1]
            self.state = "envelope"
        if self.state == "envelope":
            return self._envelope()
        return NEED_DATA

    def _answer(self, kind, text):
        """Queue one answer netstring: kind K, Z or D, then the text."""
        self._out += netstring(kind.encode("ascii") + text.encode("utf-8", "replace"))

    def shutdown(self):
        """Return what to send a client when the server stops: nothing (neither protocol
        has such a reply; the client sees the close as a temporary failure)."""
        return b""

    def data_to_send(self):
        """Return (and forget) the bytes queued for the client."""
        out = bytes(self._out)
        self._out.clear()
        return out


class Responses:
    """A QMTP or QMQP client engine's input: the server's K, Z or D netstrings."""

    def __init__(self):
        self.buffer = bytearray()

    def receive_data(self, data):
        """Take bytes from the server."""
        self.buffer += data

    def _next(self):
        """Return the next complete response (kind, text) and forget it, else None."""
        found = read_netstring(self.buffer, 0, MAX_RESPONSE)
        if found is None:
            return None
        value, end = found
        del self.buffer[:end]
        if value[:1] not in (b"K", b"Z", b"D"):
            raise ProtocolError("response %r does not start with K, Z or D" % value[:20])
        return value[:1].decode(), value[1:].decode("utf-8", "replace")
