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

All input is hostile. A length with a leading zero or more than LENGTH_DIGITS digits, a
missing ":" or ",", a sender or recipient list over its limit, a package with no recipient
or an unknown line-end byte, and a response that is empty, over MAX_RESPONSE or does not
start with K, Z or D raise `errors.ProtocolError` (no reply): QMTP has no way to answer that, so the caller
closes the connection (the client sees a temporary failure). The message's size is only
declared here; whether it is too large is the caller's decision (`PackageStart`).
"""

from . import NEED_DATA, frozen
from .errors import ProtocolError

LENGTH_DIGITS = 12          # a message of up to 999 GB can be declared
MAX_ADDRESS = 2048          # octets of one address
MAX_RECIPIENTS_FIELD = 1 << 20
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


def _length(buffer, pos):
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
    found = _length(buffer, pos)
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


def read_text(server):
    """Read a QMTP or QMQP server's message netstring on from its "text" or "comma" state:
    return the next MessageChunk, NEED_DATA, or None once its comma is read (the state is
    then "envelope"). The server has `state`, `buffer` and `left` (text octets to come)."""
    if server.state == "text":
        if server.left:
            if not server.buffer:
                return NEED_DATA
            data = bytes(server.buffer[:server.left])
            del server.buffer[:len(data)]
            server.left -= len(data)
            return MessageChunk(data)
        server.state = "comma"
    if not server.buffer:
        return NEED_DATA
    if server.buffer[:1] != b",":
        raise ProtocolError("message netstring not ended by a comma")
    del server.buffer[:1]
    server.state = "envelope"
    return None


class Server:
    """The server side of one QMTP connection."""

    def __init__(self):
        self.buffer = bytearray()
        self.state = "length"       # length, text, comma, envelope, answer
        self.left = 0               # text octets still to come
        self.crlf = False
        self.sender = None
        self.eof = False
        self._out = bytearray()

    @property
    def wants_data(self):
        """Return True while the engine can take more input (not waiting for respond())."""
        return self.state != "answer"

    def receive_data(self, data):
        """Take bytes from the client (b"" at EOF)."""
        if data:
            self.buffer += data
        else:
            self.eof = True

    def next_event(self):
        """Return the next event, or NEED_DATA (also while a Package waits for respond())."""
        if self.state == "length":
            found = _length(self.buffer, 0)
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
        if self.state in ("text", "comma"):
            event = read_text(self)
            if event is not None:
                return event
        if self.state == "envelope":
            return self._envelope()
        return NEED_DATA

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
            self._out += netstring(kind.encode("ascii") + text.encode("utf-8", "replace"))
        self.state = "length"

    def shutdown(self):
        """Return what to send a client when the server stops: nothing (QMTP has no such
        reply; the client sees the close as a temporary failure)."""
        return b""

    def data_to_send(self):
        """Return (and forget) the bytes queued for the client."""
        out = bytes(self._out)
        self._out.clear()
        return out


class Client:
    """The client side: frames packages and reads the responses."""

    def __init__(self):
        self.buffer = bytearray()

    @staticmethod
    def start(size):
        """Return the bytes that open a package whose text (CRLF lines) has size octets."""
        return b"%d:\r" % (size + 1)

    @staticmethod
    def end(sender, recipients):
        """Return the bytes that close a package: the comma, sender and recipients."""
        rcpts = b"".join(netstring(r.encode("utf-8")) for r in recipients)
        return b"," + netstring(sender.encode("utf-8")) + netstring(rcpts)

    def receive_data(self, data):
        """Take bytes from the server."""
        self.buffer += data

    def responses(self):
        """Return the complete responses received so far: [(kind, text)]."""
        out = []
        while True:
            found = read_netstring(self.buffer, 0, MAX_RESPONSE)
            if found is None:
                return out
            value, end = found
            del self.buffer[:end]
            if value[:1] not in (b"K", b"Z", b"D"):
                raise ProtocolError("response %r does not start with K, Z or D" % value[:20])
            out.append((value[:1].decode(), value[1:].decode("utf-8", "replace")))
