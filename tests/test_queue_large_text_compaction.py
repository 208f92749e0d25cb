"""Compaction and a large waiting message: its text's own segments stay where they are.

A message over the large-text threshold waits (its route is offline) while small messages
come and go around it, so that the log compacts. Compaction used to copy the large text
forward once the dead bytes reached its size: the spool held it twice during the copy, and
the loop was blocked while it copied. Now the segments that hold nothing but its text are
passed over (freed whole when it goes) and only what else lies around them is compacted.
Counted through the facade (the text bytes compaction appends for it) and by the segment
files themselves (inode, size, mtime); a crash at every system call of such a compaction
resurrects nothing and loses nothing.
"""

import os

import pytest

from masq.queue import record
from masq.queue.envelope import DELIVERED, Envelope, Recipient
from masq.queue.log import segment_name, segment_numbers
from masq.queue.spool import Queue

from test_queue_segments import compact_crashing
from test_queue_sync_at_commit import small, write_text

SEGMENTS = [64 * 1024, 256 * 1024]    # 256 KiB: the text's first MiB shares a segment


def deliver(queue, msgid):
    msg = queue.get_live(msgid)
    for index, rcpt in enumerate(msg.envelope.recipients):
        queue.record_result(msgid, index, Recipient(rcpt.address, state=DELIVERED))


class TextWrites:
    """Counts the text bytes appended for one id, and by whom (a writer, or compaction)."""

    def __init__(self, queue, msgid):
        self.bytes = 0
        real = queue.store.append

        def append(records, track=True, grow=False):
            self.bytes += sum(len(p) for t, i, p in records if t == record.BODY and i == msgid)
            return real(records, track, grow)
        queue.store.append = append


def files(spool, numbers):
    out = {}
    for number in numbers:
        info = os.stat(os.path.join(spool, segment_name(number)))
        out[number] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return out


def waiting_large(spool, segment, size=3 << 20):
    """A queue with a large message waiting; return (queue, its id, its text)."""
    queue = Queue(spool, segment_size=segment).open("runner")
    small(queue, 0)
    writer = write_text(queue, None, size)
    writer.commit(Envelope("s@x", ["far@y"], received=1))
    queue.sync()
    return queue, writer.id, b"".join(queue.body(writer.id))


def traffic(queue, count, start=1):
    """count small messages in and delivered, a compaction step after each."""
    for n in range(start, start + count):
        msgid = small(queue, n)
        queue.sync()
        deliver(queue, msgid)
        queue.sync()
        queue.compact_step()


@pytest.fixture
def spool(tmp_path):
    path = str(tmp_path / "spool")
    os.mkdir(path)
    return path


@pytest.mark.parametrize("segment", SEGMENTS)
def test_small_traffic_compacts_around_a_waiting_large_text_without_copying_it(spool, segment):
    queue, big, text = waiting_large(spool, segment)
    own = [n for n in segment_numbers(spool)
           if n != max(segment_numbers(spool))
           and os.path.getsize(os.path.join(spool, segment_name(n))) > segment]
    assert own                                   # its text filled segments of its own
    before = files(spool, own)
    writes = TextWrites(queue, big)
    traffic(queue, 5000)                         # 2.5 MB of dead records
    assert queue.compactions >= 3                # the log compacted around it
    assert writes.bytes <= 2 << 20               # what lay outside its own segments, at most
    assert files(spool, own) == before           # never rewritten, never moved
    used = sum(os.path.getsize(os.path.join(spool, segment_name(n)))
               for n in segment_numbers(spool))
    assert used < len(text) + 16 * segment       # held once, plus the small traffic's tail
    assert b"".join(queue.body(big)) == text
    queue.close()
    queue = Queue(spool, segment_size=segment).open("runner")   # recovery over the gaps
    assert len(queue.live()) == 2 and queue.get_live(big) is not None   # and small(0)
    assert b"".join(queue.body(big)) == text
    assert not [m for m in queue.listed() if m.quarantined]
    deliver(queue, big)                          # it goes: its segments go with it
    queue.sync()
    while queue.compact_step():
        pass
    assert not set(own) & set(segment_numbers(spool))
    queue.close()


@pytest.mark.parametrize("segment", SEGMENTS)
def test_a_full_compaction_leaves_a_large_texts_own_segments_too(spool, segment):
    queue, big, text = waiting_large(spool, segment)
    for n in range(1, 200):
        deliver(queue, small(queue, n))
    queue.sync()
    writes = TextWrites(queue, big)
    assert queue.compact()
    assert writes.bytes <= 2 << 20
    queue.close()
    queue = Queue(spool, segment_size=segment).open("runner")
    live = {m.id for m in queue.live()}
    assert big in live and len(live) == 2       # the first small one was never delivered
    assert b"".join(queue.body(big)) == text
    queue.close()


@pytest.mark.parametrize("segment", SEGMENTS)
def test_a_crash_at_every_system_call_of_compaction_around_a_large_text(tmp_path, monkeypatch,
                                                                        segment):
    """Segments after a large text's own are deleted out of order now: a crash at each
    write, sync, link, unlink of such a compaction (simulated SIGKILL; the page cache
    keeps what was written) resurrects no delivered message and loses nothing."""
    master = str(tmp_path / "master")
    os.mkdir(master)
    queue, big, text = waiting_large(master, segment, size=2 << 20)
    kept = small(queue, 1)
    for n in range(2, 400):
        deliver(queue, small(queue, n))
    queue.sync()
    queue.close()
    at = 1
    while True:
        spool = str(tmp_path / ("crash%d" % at))
        os.system("cp -a %s %s" % (master, spool))
        queue = Queue(spool, segment_size=segment).open("runner")
        before = {m.id: b"".join(queue.body(m.id)) for m in queue.live()}
        assert before[big] == text and kept in before and len(before) == 3
        finished, injector = compact_crashing(monkeypatch, queue, spool, at)
        for _ in range(2):                       # after the crash, then after compacting again
            queue = Queue(spool, segment_size=segment).open("runner")
            assert {m.id: b"".join(queue.body(m.id)) for m in queue.live()} == before, \
                "crash at call %d" % at
            assert not [m for m in queue.listed() if m.quarantined], "crash at call %d" % at
            queue.compact()
            queue.close()
        os.system("rm -rf %s" % spool)
        if finished:
            break
        at += 1
    assert injector.calls > 10
