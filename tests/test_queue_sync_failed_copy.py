"""R5: compaction retries and trusts an fdatasync that failed (fsyncgate).

The copies of the oldest segment's messages are appended; the sync before deleting the
segment fails (EIO). The next step calls fdatasync again, which returns 0 (Linux has
already marked the failed pages clean), and deletes the old segment: the originals are
gone while the only copies were in pages whose writeback failed. docs/QUEUE.md:
"An fdatasync error is never retried and trusted". Segment.sync leaves `unsynced` set on
error, so Journal.sync simply calls fdatasync again (log.py Segment.sync / Journal.sync,
spool.py compact_step).  This test shows the control flow: the old segment is deleted
without the copies being written again after the failed sync."""
import errno
import os

from masq.queue import record
from masq.queue.envelope import Envelope
from masq.queue.log import LogError, segment_numbers
from masq.queue.spool import Queue

SEG = 4096


def test_failed_sync_of_copies_is_not_trusted_on_retry(tmp_path, monkeypatch):
    spool = str(tmp_path)
    q = Queue(spool, segment_size=SEG).open("runner")
    keep = []
    for i in range(40):
        w = q.writer()
        w.write(b"Subject: %d\r\n\r\n" % i + b"x" * 300)
        w.commit(Envelope("a@x", ["b@y"], received=1))
        if i % 7:
            q.remove(w.id, "t")
        else:
            keep.append(w.id)
    q.sync()
    oldest = segment_numbers(spool)[0]
    real = os.fdatasync
    state = {"fail": False, "failed": 0, "ok_after": 0}

    def fdatasync(fd):
        if state["fail"]:
            state["fail"] = False
            state["failed"] += 1
            raise OSError(errno.EIO, "Input/output error")
        if state["failed"]:
            state["ok_after"] += 1
        return real(fd)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    copies_at_failure = None
    for _ in range(20):
        if oldest not in segment_numbers(spool):
            break
        if not q.store.pins.get(oldest) and q.store.journal.unsynced() and not state["failed"]:
            state["fail"] = True                         # the sync covering the copies
            copies_at_failure = count_copies(q)
        try:
            q.compact_step()
        except LogError:
            pass
    assert state["failed"] == 1
    copies_after = count_copies(q)
    deleted = oldest not in segment_numbers(spool)
    q.close()
    assert not deleted or copies_after > copies_at_failure, \
        "old segment deleted on a retried fdatasync; copies not rewritten"


def count_copies(q):
    return sum(1 for seg in q.store.journal.ordered() for it in seg.scan(seg.header_size)
               if isinstance(it, record.Record) and it.type == record.COPY)
