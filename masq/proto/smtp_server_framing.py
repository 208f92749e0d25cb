"""SMTP server input framing: command lines, DATA text (dot-stuffed) and message limits.

Owns: where a command line ends, where DATA ends, dot-unstuffing, and counting a message's
size and its line lengths. Does not: interpret commands (`smtp_server.py`) or store text.
All functions consume from a caller-owned `bytearray` and never hold more than they return.

Decisions, each the only interpretation used (so no peer can make masq see two):
- Command lines end at LF; one CR before the LF is part of the terminator (bare LF is
  normalised for commands, as Postfix now does). A CR anywhere else is refused by the engine.
- A command line longer than the cap (CRLF included) is discarded up to the next LF without
  buffering it; the caller then answers the reply it gave for that line.
- DATA ends only at CRLF "." CRLF (or "." CRLF right after DATA). Bare LF, bare CR, NUL and
  8-bit octets are message text, passed through untouched. A line starting with "." loses
  that dot (RFC 5321 §4.5.2).
- Long text lines are never split or buffered: they are streamed as they arrive. The
  `Meter` flags a line longer than its cap so the engine can fail the transaction after
  the final dot (552 5.3.4); the size cap works the same way.
"""

_DOT_END = b".\r\n"


class LineSplitter:
    """Split command lines off a buffer, discarding over-long lines to their LF."""

    def __init__(self):
        self._overflow = None  # the reply to give once the over-long line's LF arrives

    @property
    def discarding(self):
        """Return True while an over-long line is being thrown away."""
        return self._overflow is not None

    def take(self, buf, limit, too_long):
        """Return the next line (bytes, terminator removed), None for "need more", or
        `too_long` once an over-long line has been discarded through its LF."""
        if self._overflow is not None:
            return self._skip(buf, 0)
        i = buf.find(b"\n", 0, limit)
        if i < 0:
            if len(buf) < limit:
                return None
            self._overflow = too_long
            return self._skip(buf, limit)
        line = bytes(buf[:i])
        del buf[:i + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def _skip(self, buf, start):
        i = buf.find(b"\n", start)
        if i < 0:
            del buf[:]
            return None
        del buf[:i + 1]
        reply, self._overflow = self._overflow, None
        return reply


class DotDecoder:
    """Turn DATA wire text into message text: find CRLF.CRLF, remove dot-stuffing."""

    def __init__(self):
        self._bol = True  # at the beginning of a line (just after CRLF, or at the start)
        self.done = False

    def take(self, buf):
        """Consume what can be decided from `buf`; return the message text it yielded.

        One copy of the text: the pieces between stuffed dots are joined once."""
        pieces = []
        pos, n = 0, len(buf)
        with memoryview(buf) as view:
            while pos < n and not self.done:
                if self._bol:
                    pos = self._line_start(buf, pos, n)
                    if pos < 0:
                        pos = -pos - 1
                        break
                    continue
                i = _find_dot_line(buf, pos)
                if i >= 0:
                    pieces.append(view[pos:i + 2])
                    pos, self._bol = i + 2, True
                    continue
                end = n - 1 if buf[n - 1] == 0x0D else n  # a CR may start CRLF.CRLF
                pieces.append(view[pos:end])
                self._bol = end >= 2 and buf[end - 2] == 0x0D and buf[end - 1] == 0x0A
                pos = end
                break
            out = pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)
            for piece in pieces:
                piece.release()
        del buf[:pos]
        return out

    def _line_start(self, buf, pos, n):
        """Handle a line start at pos: return the new pos, or -(pos + 1) to wait for more."""
        self._bol = False
        if buf[pos] != 0x2E:
            return pos
        head = bytes(buf[pos:pos + 3])
        if head == _DOT_END:
            self.done = True
            return pos + 3
        if _DOT_END.startswith(head):  # "." or ".\r": cannot tell yet
            self._bol = True
            return -(pos + 1)
        return pos + 1  # drop the stuffed dot


def _find_dot_line(buf, pos):
    """Return where the next CRLF "." at or after pos starts, or -1.

    Dots are looked for first (memchr speed; base64, the bulk of large mail, has none) and
    each is checked for the CRLF before it; text dense with dots that do not start lines
    falls back to the plain search."""
    misses = 0
    start = pos + 2
    while True:
        dot = buf.find(b".", start)
        if dot < 0:
            return -1
        if buf[dot - 1] == 0x0A and buf[dot - 2] == 0x0D:
            return dot - 2
        misses += 1
        if misses > 16:
            return buf.find(b"\r\n.", dot - 1)
        start = dot + 1


class Meter:
    """Count a message's octets and watch for over-long lines.

    A line is too long when `max_line` octets arrive before its LF: for CRLF lines that is
    exactly "longer than max_line octets, CRLF included"."""

    def __init__(self, max_size, max_line):
        self.size = 0
        self.max_size = max_size
        self.max_line = max_line
        self._line = 0  # octets of the current, unfinished line
        self.fault = None  # "too big" or "line too long" once a limit is crossed

    def add(self, data):
        """Account for `data`; return the fault name the first time a limit is crossed."""
        if self.fault is not None or not data:
            return None
        room = self.max_size - self.size      # octets that still fit
        self.size += len(data)
        if self.size > self.max_size:
            # the limit crossed first in the text wins, however the reads were cut: a line
            # too long by the octet that made the message too big is too long
            fits = data[:room + 1]
            too_long = self.max_line and has_long_line(fits, self.max_line, self._line)
            self.fault = "line too long" if too_long else "too big"
        elif self.max_line and has_long_line(data, self.max_line, self._line):
            self.fault = "line too long"
        last = data.rfind(b"\n")
        self._line = self._line + len(data) if last < 0 else len(data) - last - 1
        return self.fault

    def exceeds_size(self, more):
        """Return True if `more` octets would take the message over the size limit."""
        return self.size + more > self.max_size


def has_long_line(data, limit, carry=0):
    """Return True if data holds a run of `limit` or more octets without LF; the first
    `carry` octets of its first line came in earlier data.

    Probes LF-free windows of half the limit, so the work is O(len(data) / limit) C-level
    finds rather than one Python step per line: any run of `limit` octets contains a whole
    window of the grid, and only such candidates are measured exactly."""
    n = len(data)
    first = data.find(b"\n")
    if first < 0:
        return carry + n >= limit
    if carry + first >= limit or n - data.rfind(b"\n") - 1 >= limit:
        return True
    width = max(1, (limit + 1) // 2)
    w = first + 1
    while w + width <= n:
        if data.find(b"\n", w, w + width) >= 0:
            w += width
            continue
        start = data.rfind(b"\n", 0, w) + 1
        end = data.find(b"\n", w + width)
        end = n if end < 0 else end
        if end - start >= limit:
            return True
        w = end + 1
    return False
