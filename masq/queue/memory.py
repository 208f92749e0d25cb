"""The queue in memory: the same facade over segments held in RAM, for tests about
something other than the disk.

`MemoryQueue` is a `spool.Queue` whose journal keeps its segments in byte arrays: records
are framed, indexed (store.py) and read back exactly as on disk, so ids, states, results,
removal, warnings, sync callbacks and compaction behave the same. What it leaves out is
what only a disk has: no files, locks or other processes (nobody else appends; nothing to
recover on open), and a sync never fails. tests/test_queue_contract.py runs one set of
tests against both backends.
"""

import os

from masq.queue import record
from masq.queue.log import GROW, SEGMENT_SIZE
from masq.queue.spool import Queue
from masq.queue.store import Store

MEMORY = ":memory:"               # the queue's `dir`: no path names it


class MemorySegment:
    """One segment: its bytes (header included) in a bytearray."""

    def __init__(self, number):
        salt = os.urandom(8)
        self.number = number
        self.path = "%s/%d" % (MEMORY, number)
        self.seed = record.seed(salt)
        self.data = bytearray(record.file_header(salt))
        self.header_size = self.end = self.synced = len(self.data)
        self.unsynced = False

    def size(self):
        """Return the bytes the segment holds."""
        return len(self.data)

    def encode(self, rtype, msgid, payload):
        """Return one framed record for this segment."""
        return record.encode(self.seed, rtype, msgid, payload)

    def write(self, data):
        """Append data; return its offset."""
        start = len(self.data)
        self.data += data
        self.end = len(self.data)
        self.unsynced = True
        return start

    def read(self, offset, length):
        """Return length bytes at offset."""
        return bytes(self.data[offset:offset + length])

    def scan(self, start, limit=None, with_bodies=False):
        """Yield the Record and Damage items between start and limit."""
        limit = len(self.data) if limit is None else limit
        return record.scan(self.data, start, limit, self.seed, with_bodies, self.number)

    def sync(self):
        """Nothing to write down: mark everything synced."""
        self.unsynced = False
        self.synced = self.end

    def close(self):
        """Let the bytes go."""
        self.data = bytearray()


class MemoryJournal:
    """The segments of an in-memory queue, with log.Journal's interface."""

    def __init__(self, segment_size=SEGMENT_SIZE):
        self.dir = MEMORY
        self.segment_size = segment_size
        self.on_foreign = None
        self.segments = {}
        self.newest = None
        self._open(1)

    def _open(self, number):
        seg = self.segments[number] = MemorySegment(number)
        self.newest = seg
        return seg

    def close(self):
        """Drop every segment."""
        for seg in self.segments.values():
            seg.close()
        self.segments.clear()

    def ordered(self):
        """Return the segments, oldest first."""
        return [self.segments[n] for n in sorted(self.segments)]

    def size(self):
        """Return the bytes all segments use."""
        return sum(seg.end for seg in self.segments.values())

    def lock(self):
        """No other process: nothing to lock."""

    def unlock(self):
        """No other process: nothing to unlock."""

    def append(self, data, grow=False):
        """Append framed records (`data`: seg -> bytes) as one write; return (segment, offset).
        `grow` as in log.Journal.append."""
        seg = self.newest
        payload = data(seg)
        limit = self.segment_size * (GROW if grow else 1)
        if seg.end > seg.header_size and seg.end + len(payload) > limit:
            seg = self.rotate_locked()
            payload = data(seg)
        return seg.number, seg.write(payload)

    def rotate_locked(self):
        """Start the next segment; return it."""
        return self._open(self.newest.number + 1)

    def catch_up_locked(self):
        """Nobody else appends: nothing to catch up with."""

    def sync(self):
        """Mark every segment synced (memory cannot fail to sync)."""
        for seg in self.segments.values():
            seg.sync()

    def unsynced(self):
        """Return True while something appended is not yet marked synced."""
        return any(seg.unsynced for seg in self.segments.values())

    def remove_oldest(self):
        """Drop the oldest segment (never the newest); return its number, or None."""
        return self.remove(min(self.segments))

    def remove(self, number):
        """Drop segment number (never the newest); return its number, or None."""
        seg = self.segments[number]
        if seg is self.newest:
            return None
        seg.close()
        del self.segments[seg.number]
        return seg.number


class MemoryQueue(Queue):
    """A queue facade over a MemoryJournal, ready without open()."""

    def __init__(self, segment_size=SEGMENT_SIZE, report=None, clock=None):
        super().__init__(MEMORY, volatile_ok=True, report=report, segment_size=segment_size,
                         clock=clock)
        self.store = Store(MemoryJournal(segment_size))

    def open(self, mode="runner"):
        """Return self: a memory queue has no spool to check and nothing to recover."""
        return self

    def _no_other_writers(self):
        return True                 # no other process can write to this memory
