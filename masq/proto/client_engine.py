"""The input and output loop shared by masq's client engines (POP3, IMAP, the SMTP client).

Owns: buffering what the server sent (`_buffer`), handing out the engine's queued events
until it needs more input (`NEED_DATA`), the end of input (one ConnectionClosed("eof",
state), then the state CLOSED), a protocol fault (CLOSED, buffers dropped, the
ProtocolError raised to the caller), and the bytes queued for the server (`_out`).
Does not: parse or send anything itself. A subclass provides `_step()` (consume what it
can from `_buffer`, queue events; True if it made progress) and `_move(trigger)` (its own
state table, in which "eof" and "broken" lead to CLOSED); for line-based protocols `_line()`
takes the next line, up to the subclass's `MAX_LINE`, a longer one being the fault
`_fault(text)` makes (a ProtocolError).
"""

from collections import deque

from . import NEED_DATA
from .errors import ConnectionClosed, ProtocolError

CLOSED = "closed"


class ClientEngine:
    """Buffered input, queued events and pending output of one client session."""

    def __init__(self, state):
        self.state = state
        self._buffer = bytearray()
        self._out = bytearray()
        self._events = deque()
        self._eof = False

    def receive_data(self, data):
        """Feed bytes read from the server; b"" means it closed the connection."""
        if self.state == CLOSED or self._eof:
            return
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self):
        """Return the next event, or NEED_DATA."""
        try:
            while not self._events:
                if self.state == CLOSED:
                    return NEED_DATA
                if not self._step():
                    if not self._eof:
                        return NEED_DATA
                    self._events.append(ConnectionClosed("eof", self.state))
                    self._move("eof")
        except ProtocolError:
            self._move("broken")
            self._buffer.clear()
            self._out.clear()
            raise
        return self._events.popleft()

    def data_to_send(self):
        """Return (and forget) the bytes queued for the server."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _line(self):
        """Return the next line of the buffer without its line end (CRLF or LF), or None."""
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > self.MAX_LINE:
                raise self._fault("a line longer than %d octets" % self.MAX_LINE)
            return None
        if end > self.MAX_LINE:
            raise self._fault("a line longer than %d octets" % self.MAX_LINE)
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def _step(self):
        raise NotImplementedError

    def _move(self, trigger):
        raise NotImplementedError
