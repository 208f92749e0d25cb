"""The index entry of one message: where its records lie in the log, packed small.

Owns `Message`, what the index keeps per unfinished message, and its packed form. The
index holds no envelope: only what deciding needs (is it committed, live, quarantined,
how many recipients are still open, when did it last warn) and where its records are, so
that the envelope can be read back from the log when a delivery, `mailq` or the status
needs it (Store.envelope): the COMMIT record, and for each recipient the last RESULT
record that changed it (a RESULT carries the recipient's whole state, so older ones never
matter). When compaction copies a message forward, its copy's COMMIT carries the current
states and becomes the new location; recovery rebuilds every entry by scanning.

Memory (issue 10: about 300 bytes per waiting message): the locations are one `bytes`
object (`_HEAD`, then 12 bytes per text chunk of up to 64 KiB, then 13 per recipient); the
flags and the count of open recipients share one small int. `tools/bench_index.py`
measures it.
"""

import struct

_HEAD = struct.Struct("<QIIIH")   # log bytes used; COMMIT (segment, offset, length); chunks
_CHUNK = struct.Struct("<III")    # a text chunk: segment, payload offset, length
_RESULT = struct.Struct("<IIIB")  # a recipient's last RESULT (length 0: none), final (0/1)
_EMPTY = _HEAD.pack(0, 0, 0, 0, 0)
_BYTES = struct.Struct("<Q")      # the first field of _HEAD
_COUNT = struct.Struct("<H")      # its last: the number of chunks
_COUNT_AT = _HEAD.size - _COUNT.size

REMOVED = 1         # removed, or its commit withdrawn (ABORTED after COMMIT)
ABORTED = 2         # its writer gave up before committing: its chunks are garbage
_OPEN = 4           # state // _OPEN: recipients neither delivered nor bounced


class Message:
    """One unfinished message as the log describes it (its envelope stays in the log).

    A Store makes a subclass bound to itself (`store`), so `envelope` can read the
    envelope back without a reference per entry."""

    __slots__ = ("id", "packed", "state", "quarantined", "first_seg", "warned")
    store = None

    def __init__(self, msgid):
        self.id = msgid
        self.packed = _EMPTY
        self.state = 0
        self.quarantined = None
        self.first_seg = None  # the oldest segment holding a record that still matters
        self.warned = None    # when the last delay warning went out

    # what the packed locations say

    @property
    def bytes(self):
        """Return the log bytes the message's records use."""
        return _HEAD.unpack_from(self.packed)[0]

    @bytes.setter
    def bytes(self, value):
        if isinstance(self.packed, bytearray):      # being written: changed in place
            _BYTES.pack_into(self.packed, 0, value)
        else:
            self.packed = _BYTES.pack(value) + self.packed[_BYTES.size:]

    @property
    def at(self):
        """Return the text chunks, flat: (segment, offset, length, segment, ...).

        A tuple of three ints per chunk (about 1.7 MB for a 1 GB message): the code that
        reads a text uses `chunk(packed, i)` and `chunks()` instead."""
        count = _HEAD.unpack_from(self.packed)[4]
        return struct.unpack_from("<%dI" % (3 * count), self.packed, _HEAD.size)

    @at.setter
    def at(self, chunks):
        self.set_chunks(struct.pack("<%dI" % len(chunks), *chunks))

    def set_chunks(self, raw):
        """Replace the text chunks by `raw`, packed chunks as `add_chunk` makes them."""
        head = _HEAD.unpack_from(self.packed)
        count = len(raw) // _CHUNK.size
        self.packed = (_HEAD.pack(*head[:4], count) + raw
                       + self.packed[_HEAD.size + _CHUNK.size * head[4]:])

    def raw_chunks(self):
        """Return the text chunks packed as `set_chunks` takes them."""
        count = _HEAD.unpack_from(self.packed)[4]
        return bytes(self.packed[_HEAD.size:_HEAD.size + _CHUNK.size * count])

    def add_chunk(self, seg, offset, length):
        """Note one more text chunk of a message being written, in amortised constant time:
        its locations grow in place (a bytearray until the COMMIT makes them bytes again),
        so a 1 GB message's 16,384 chunks never rebuild the whole list per chunk."""
        count = _HEAD.unpack_from(self.packed)[4]
        end = _HEAD.size + _CHUNK.size * count
        if end != len(self.packed):                 # recipients follow: rebuild
            self.set_chunks(self.packed[_HEAD.size:end] + _CHUNK.pack(seg, offset, length))
            return
        if not isinstance(self.packed, bytearray):
            self.packed = bytearray(self.packed)
        self.packed += pack_chunk(seg, offset, length)
        _COUNT.pack_into(self.packed, _COUNT_AT, count + 1)

    def first_chunk(self):
        """Return (segment, offset, length) of the first text chunk (IndexError if none)."""
        if not self.chunks():
            raise IndexError("no text chunks")
        return chunk(self.packed, 0)

    def last_chunk(self):
        """Return (segment, offset, length) of the last text chunk (IndexError if none)."""
        count = self.chunks()
        if not count:
            raise IndexError("no text chunks")
        return chunk(self.packed, count - 1)

    @property
    def size(self):
        """Return the size of the message text in bytes."""
        return text_size(self.packed)

    @property
    def commit_at(self):
        """Return (segment, offset, length) of the COMMIT payload in force, or None."""
        _, seg, offset, length, _ = _HEAD.unpack_from(self.packed)
        return (seg, offset, length) if length else None

    def results(self):
        """Return [(segment, offset, length, final)] per recipient: its last RESULT payload
        (length 0: none since the COMMIT) and whether it is delivered or bounced."""
        start = self._results_start()
        return [_RESULT.unpack_from(self.packed, pos)
                for pos in range(start, len(self.packed), _RESULT.size)]

    def committed_at(self, seg, offset, length, finals):
        """Note the COMMIT in force (a copy's replaces the original's): no RESULT since,
        finals[i] tells whether recipient i is already final."""
        bytes_, _, _, _, count = _HEAD.unpack_from(self.packed)
        end = _HEAD.size + _CHUNK.size * count
        self.packed = (_HEAD.pack(bytes_, seg, offset, length, count)
                       + self.packed[_HEAD.size:end]
                       + b"".join(_RESULT.pack(0, 0, 0, f) for f in finals))
        self.state = (self.state & (_OPEN - 1)) + _OPEN * (len(finals) - sum(finals))

    def result_at(self, index, seg, offset, length, final):
        """Note recipient index's last RESULT and whether it is now final."""
        pos = self._results_start() + _RESULT.size * index
        if not 0 <= index or pos >= len(self.packed):
            raise ValueError("result for unknown recipient %r" % (index,))
        was = self.packed[pos + _RESULT.size - 1]
        self.packed = (self.packed[:pos] + _RESULT.pack(seg, offset, length, final)
                       + self.packed[pos + _RESULT.size:])
        self.state += _OPEN * (was - bool(final))

    def _results_start(self):
        return _HEAD.size + _CHUNK.size * _HEAD.unpack_from(self.packed)[4]

    # flags

    @property
    def removed(self):
        """Return True once removed, or its commit withdrawn."""
        return bool(self.state & REMOVED)

    @removed.setter
    def removed(self, value):
        self.state = (self.state | REMOVED) if value else (self.state & ~REMOVED)

    @property
    def aborted(self):
        """Return True once its writer gave up before committing."""
        return bool(self.state & ABORTED)

    @aborted.setter
    def aborted(self, value):
        self.state = (self.state | ABORTED) if value else (self.state & ~ABORTED)

    @property
    def open(self):
        """Return how many recipients are neither delivered nor bounced."""
        return self.state // _OPEN

    # what the index decides from them

    @property
    def committed(self):
        """Return True once a COMMIT record has been seen."""
        return _HEAD.unpack_from(self.packed)[3] != 0

    @property
    def live(self):
        """Return True while the message has recipients left to deliver."""
        return (self.state >= _OPEN and not self.state & REMOVED and not self.quarantined
                and self.committed)

    @property
    def kept(self):
        """Return True if compaction must keep the message."""
        return self.live or (self.quarantined is not None and not self.removed
                             and self.committed)

    @property
    def pending(self):
        """Return True while the message is being written (chunks, no COMMIT or ABORTED)."""
        return not self.committed and not self.aborted and self.chunks() > 0

    @property
    def finished(self):
        """Return True once nothing will happen to the message any more (it leaves the index)."""
        if self.state & (REMOVED | ABORTED):
            return True
        if not self.committed:
            return self.chunks() == 0     # damage named an id that has no text here
        return not self.kept

    def chunks(self):
        """Return how many text chunks the message has."""
        return _HEAD.unpack_from(self.packed)[4]

    @property
    def envelope(self):
        """Return the envelope, read back from the log (Store.envelope; LogError if it
        cannot be read). Treat it as read-only: changes go through records."""
        return self.store.envelope(self)


def pack_chunk(seg, offset, length):
    """Return one text chunk's location, packed as `packed` holds it."""
    return _CHUNK.pack(seg, offset, length)


def chunk(packed, i):
    """Return (segment, offset, length) of text chunk i in a message's `packed` locations."""
    return _CHUNK.unpack_from(packed, _HEAD.size + _CHUNK.size * i)


def text_size(packed):
    """Return the text size the `packed` locations describe (one chunk at a time)."""
    end = _HEAD.size + _CHUNK.size * _HEAD.unpack_from(packed)[4]
    with memoryview(packed) as view, view[_HEAD.size:end] as chunks:
        return sum(length for _, _, length in _CHUNK.iter_unpack(chunks))


CHUNK_SIZE = _CHUNK.size            # bytes of one packed chunk location


def unpack_chunk(raw, i):
    """Return (segment, offset, length) of chunk i in `raw` (as raw_chunks returns)."""
    return _CHUNK.unpack_from(raw, _CHUNK.size * i)


def unpack_chunks(raw):
    """Yield (segment, offset, length) of each chunk in `raw` (as raw_chunks returns)."""
    return _CHUNK.iter_unpack(raw)
