"""R4: a kept message with no text chunks (empty text, or a quarantined message whose only
chunk was damaged) cannot be copied forward: its copy is `K` then `C` with no `B`, and
store._commit reads the empty copy () as "no copy" -> "second commit" (ValueError).
The copy never replaces the original, the pin stays on the oldest segment, and every
compaction step copies the message again: the log grows by a copy per daemon loop turn,
the oldest segment is never deleted, and a live empty message becomes quarantined."""
import os

from masq.queue import record
from masq.queue.envelope import Envelope
from masq.queue.spool import Queue

SEG = 4096


def fill_dead(q, n=40):
    for i in range(n):                     # dead bytes so that compaction is due
        w = q.writer()
        w.write(b"x" * 300)
        w.commit(Envelope("a@x", ["b@y"], received=1))
        q.remove(w.id, "test")


def test_empty_message_survives_compaction_and_the_log_stays_bounded(tmp_path):
    spool = str(tmp_path)
    q = Queue(spool, segment_size=SEG).open("runner")
    w = q.writer()
    w.commit(Envelope("a@x", ["b@y"], received=1))     # 0 bytes of text
    fill_dead(q)
    q.sync()
    sizes = []
    for _ in range(50):                                 # 50 daemon loop turns
        q.compact_step()
        sizes.append(q.log_size())
    q.sync()
    msg = q.store.messages.get(w.id)
    quarantined = msg.quarantined if msg else "gone"
    q.close()
    assert quarantined is None, quarantined
    assert sizes[-1] <= sizes[10], sizes


def test_quarantined_message_without_text_is_not_copied_forever(tmp_path):
    spool = str(tmp_path)
    q = Queue(spool, segment_size=SEG).open("runner")
    w = q.writer()
    w.write(b"Subject: x\r\n\r\nhi\r\n")
    w.commit(Envelope("a@x", ["b@y"], received=1))
    q.sync()
    q.close()
    path = os.path.join(spool, "queue.00000001.log")
    with open(path, "r+b") as f:                        # bit rot in the BODY's id
        f.seek(32 + 8)
        f.write(b"!")
    q = Queue(spool, segment_size=SEG).open("runner")
    assert [m.quarantined for m in q.listed()]          # listed as quarantined: fine
    fill_dead(q)
    q.sync()
    sizes = []
    for _ in range(50):
        q.compact_step()
        sizes.append(q.log_size())
    copies = sum(1 for seg in q.store.journal.ordered()
                 for it in seg.scan(seg.header_size)
                 if isinstance(it, record.Record) and it.type == record.COPY)
    q.close()
    assert copies <= 2 and sizes[-1] <= sizes[10], (copies, sizes[::10])
