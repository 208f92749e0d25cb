"""A large message's index entry costs memory in proportion to its chunks only once.

A 1 GB message has 16,384 text chunks of 64 KiB. Their locations used to be rebuilt as a
tuple of three Python ints per chunk (about 1.7 MB at 1 GB) every time a chunk was noted
while receiving, and once more to read the text back: the daemon's RSS grew by 3.5 MB while
receiving 1 GB, and receiving slowed with the square of the size. Pinned here with
tracemalloc: noting one more chunk, and reading the text of a message with many chunks,
allocate a few hundred bytes at a time, not a list of the chunks.
"""

import tracemalloc

from masq.queue import record
from masq.queue.envelope import Envelope
from masq.queue.spool import Queue
from masq.queue.store import CHUNK, new_id

CHUNKS = 8192           # a 512 MB message in 64 KiB chunks


def peak_of(action):
    """Return the peak traced bytes (above what was traced before) while action() runs."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        action()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_noting_a_chunk_of_a_large_message_does_not_copy_its_chunk_list(tmp_path):
    queue = Queue(str(tmp_path)).open("runner")
    try:
        store, msgid = queue.store, new_id(1000.0)
        raw = msgid.encode("ascii")

        def note(first, count):
            for n in range(first, first + count):
                store.apply(record.Record(32 + n * 65562, record.BODY, raw, 65536, b"",
                                          1 + n // 16))
        note(0, CHUNKS - 16)
        msg = store.get(msgid)
        grown = peak_of(lambda: note(CHUNKS - 16, 16))
        assert msg.chunks() == CHUNKS and msg.size == CHUNKS * 65536
        assert grown < 16 * 1024, "16 more chunks of %d took %d bytes at the peak" % (
            CHUNKS, grown)
    finally:
        queue.close()


def test_reading_a_text_of_many_chunks_holds_no_list_of_them(tmp_path):
    queue = Queue(str(tmp_path), segment_size=64 * 1024).open("runner")
    try:
        msgid = new_id(1000.0)
        for first in range(0, CHUNKS, 512):
            queue.append([(record.BODY, msgid, b"%06d\r\n" % n)
                          for n in range(first, first + 512)])
        queue.append([(record.COMMIT, msgid, Envelope(
            "a@x.example", ["b@y.example"], received=1000.0, size=CHUNKS * 8).encode())])
        parts = []

        def read():
            size = 0
            for data in queue.body(msgid):
                size += len(data)
                if len(parts) < 3:
                    parts.append(data)
            parts.append(size)
        grown = peak_of(read)
        assert parts == [b"000000\r\n", b"000001\r\n", b"000002\r\n", CHUNKS * 8]
        assert grown < 16 * 1024, "reading %d chunks took %d bytes at the peak" % (
            CHUNKS, grown)
    finally:
        queue.close()


def test_the_writer_allocates_one_chunk_at_a_time_however_the_text_comes(tmp_path):
    """Text comes in pieces of any size (BDAT chunks end anywhere). The writer used to join
    everything it held (up to twice a chunk) and copy the rest out again: allocations of
    mixed sizes around glibc's mmap threshold, which left the heap fragmented (the daemon's
    RSS grew by 3 MB over a 1 GB BDAT message). Now each record is joined at exactly one
    chunk, from the pieces as written (and framed: two chunks at the peak)."""
    queue = Queue(str(tmp_path)).open("runner")
    try:
        writer = queue.writer()
        piece = b"y" * 60000                    # never a whole chunk, never aligned with one
        peaks = []
        for _ in range(40):
            peaks.append(peak_of(lambda: writer.write(piece)))
        writer.commit(Envelope("a@x.example", ["b@y.example"], received=1000.0))
        assert b"".join(queue.body(writer.id)) == piece * 40
        assert max(peaks) < 2 * CHUNK + 8192, "one write() took %d bytes at its peak" % max(
            peaks)
    finally:
        queue.close()
