"""R7: recovery gives a quarantined COMMIT to a message a live sendmail is still writing,
because the record right after its last chunk (another message's) is damaged ("by
position"). The sendmail then commits, syncs and exits 0: its acknowledged message is
quarantined (a BODY after COMMIT, a second COMMIT) and never delivered."""
import os

from masq.queue import record
from masq.queue.envelope import Envelope
from masq.queue.log import segment_name
from masq.queue.spool import Queue
from masq.queue.store import CHUNK


def test_live_writer_message_is_not_quarantined_by_a_neighbours_damage(tmp_path):
    spool = str(tmp_path)
    s1 = Queue(spool).open("append")                   # a slow sendmail, still writing
    w1 = s1.writer()
    w1.write(b"Subject: one\r\n\r\n".ljust(CHUNK, b"1"))
    s2 = Queue(spool).open("append")                   # another sendmail, done
    w2 = s2.writer()
    w2.write(b"Subject: two\r\n\r\nhi\r\n")
    w2.commit(Envelope("b@x", ["b@y"], received=1))
    s2.sync()
    s2.close()
    path = os.path.join(spool, segment_name(1))
    data = open(path, "rb").read()
    salt, size = record.parse_file_header(data)
    rec = [it for it in record.scan(data, size, len(data), record.seed(salt))
           if it.msgid == w2.id.encode()][0]           # the record right after w1's chunk
    with open(path, "r+b") as f:
        f.seek(rec.offset + 8 + 3)
        f.write(b"!")
    daemon = Queue(spool).open("runner")               # the daemon (re)starts: recovery
    w1.write(b"more\r\n")
    w1.commit(Envelope("a@x", ["a@y"], received=1))
    s1.sync()                                          # sendmail exits 0
    s1.close()
    daemon.catch_up()
    try:
        msg = daemon.get(w1.id)
        assert msg is not None and not msg.quarantined, msg and msg.quarantined
    finally:
        daemon.close()
