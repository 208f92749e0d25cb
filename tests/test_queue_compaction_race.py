"""R1: the daemon forgets a sendmail's "pending" message whose COMMIT it has not read yet.

sendmail (append mode) writes body chunks; the daemon catches up (sees chunks, no COMMIT);
sendmail commits, syncs, exits 0 (releases writers.lock). Before the daemon catches up
again, a compaction step sees a pending message with no one-shot writer alive and forgets
it, then deletes the segment holding its first chunk. The acknowledged message is gone
(what is left is quarantined with a truncated text, or nothing at all).
"""
from masq.queue.envelope import Envelope
from masq.queue.spool import Queue
from masq.queue.store import CHUNK

SEG = CHUNK + 4000


def test_acknowledged_sendmail_message_survives_compaction(tmp_path):
    spool = str(tmp_path)
    daemon = Queue(spool, segment_size=SEG).open("runner")
    sendmail = Queue(spool, segment_size=SEG).open("append")
    w = sendmail.writer()
    text = b"Subject: big\r\n\r\n" + b"y" * (3 * CHUNK)
    w.write(text)                          # 3 chunks: segments 1, 2, 3
    daemon.catch_up()                      # daemon sees chunks, no COMMIT yet
    w.commit(Envelope("a@x", ["b@y"], received=1))
    sendmail.sync()                        # fdatasync returned 0: exit 0 follows
    sendmail.close()                       # writers.lock released
    for _ in range(10):                    # one compaction step per loop turn
        daemon.compact_step()
    daemon.catch_up()
    daemon.close()
    after = Queue(spool, segment_size=SEG).open("runner")
    try:
        msg = after.get_live(w.id)
        assert msg is not None, [(m.id, m.quarantined) for m in after.listed()]
        assert b"".join(after.body(w.id)) == text
    finally:
        after.close()
