"""R8: a body being read (an SMTP DATA in progress, a local delivery) breaks when a
compaction step copies that message forward and then deletes the old segment: Store.body
captured msg.at and the live segments dict, and the next chunk is looked up in a segment
that is gone -> KeyError (not OSError/LogError, so smtp_session._pump does not catch it).
Compaction runs every loop turn, "never waiting for idleness"."""
from masq.queue.envelope import Envelope
from masq.queue.spool import Queue
from masq.queue.store import CHUNK

SEG = 3 * CHUNK


def test_reading_a_body_survives_compaction(tmp_path):
    q = Queue(str(tmp_path), segment_size=SEG).open("runner")
    w = q.writer()
    text = b"Subject: big\r\n\r\n" + b"z" * (4 * CHUNK)
    w.write(text)
    w.commit(Envelope("a@x", ["b@y"], received=1))
    for i in range(30):                               # dead bytes: compaction is due
        d = q.writer()
        d.write(b"d" * 20000)
        d.commit(Envelope("a@x", ["b@y"], received=1))
        q.remove(d.id, "t")
    q.sync()
    reader = q.body(w.id)                             # the SMTP agent starts DATA
    got = [next(reader)]
    for _ in range(20):                               # loop turns go by meanwhile
        q.compact_step()
    got.extend(reader)                                # the rest of the text
    q.close()
    assert b"".join(got) == text
