"""R6: a damaged COMMIT is recognised only "by position" (right after the message's last
chunk, in the same segment). When another writer's records sit between the last chunk and
the COMMIT (a text of exactly n*64 KiB: Writer.commit then appends the COMMIT alone), a
COMMIT whose id is hit is not recognised: the acknowledged message is neither live nor
quarantined, and compaction later drops its chunks as a dead writer's garbage."""
import os

from masq.queue import record
from masq.queue.envelope import Envelope
from masq.queue.log import segment_name
from masq.queue.spool import Queue
from masq.queue.store import CHUNK


def test_damaged_commit_not_right_after_its_text_is_still_listed(tmp_path):
    spool = str(tmp_path)
    q = Queue(spool).open("runner")
    a = q.writer()
    a.write(b"Subject: a\r\n\r\n".ljust(CHUNK, b"a"))     # exactly one chunk: appended now
    b = q.writer()                                      # another session finishes first
    b.write(b"Subject: b\r\n\r\nhi\r\n")
    b.commit(Envelope("b@x", ["b@y"], received=1))
    a.commit(Envelope("a@x", ["a@y"], received=1))      # the COMMIT alone
    q.sync()                                            # both acknowledged
    q.close()
    path = os.path.join(spool, segment_name(1))
    data = open(path, "rb").read()
    salt, size = record.parse_file_header(data)
    rec = [it for it in record.scan(data, size, len(data), record.seed(salt))
           if it.type == record.COMMIT and it.msgid == a.id.encode()][0]
    with open(path, "r+b") as f:                        # one byte of its id rots
        f.seek(rec.offset + 8 + 3)
        f.write(b"!")
    q = Queue(spool).open("runner")
    try:
        listed = {m.id: m.quarantined for m in q.listed()}
        assert a.id in listed, "acknowledged message %s neither live nor quarantined" % a.id
    finally:
        q.close()


def rot_commit_id(spool, number, msgid):
    path = os.path.join(spool, segment_name(number))
    data = open(path, "rb").read()
    salt, size = record.parse_file_header(data)
    rec = [it for it in record.scan(data, size, len(data), record.seed(salt))
           if it.type == record.COMMIT and it.msgid == msgid.encode()][0]
    with open(path, "r+b") as f:
        f.seek(rec.offset + 8 + 3)
        f.write(b"!")


def test_damaged_commit_in_the_next_segment_is_still_listed(tmp_path):
    spool = str(tmp_path)
    q = Queue(spool, segment_size=4096).open("runner")
    a = q.writer()
    a.write(b"Subject: a\r\n\r\n".ljust(CHUNK, b"a"))
    a.commit(Envelope("a@x", ["a@y"], received=1))      # rotates: COMMIT in segment 2
    q.sync()
    q.close()
    rot_commit_id(spool, 2, a.id)
    q = Queue(spool, segment_size=4096).open("runner")
    try:
        listed = {m.id: m.quarantined for m in q.listed()}
        assert a.id in listed and "COMMIT lost" in listed[a.id], listed
    finally:
        q.close()


def test_damaged_commit_found_while_a_writer_lived_is_listed_once_it_is_gone(tmp_path):
    spool = str(tmp_path)
    q = Queue(spool).open("runner")
    a = q.writer()
    a.write(b"Subject: a\r\n\r\n".ljust(CHUNK, b"a"))
    a.commit(Envelope("a@x", ["a@y"], received=1))
    q.sync()
    q.close()
    rot_commit_id(spool, 1, a.id)
    sendmail = Queue(spool).open("append")              # alive during recovery
    q = Queue(spool).open("runner")
    try:
        assert q.get(a.id) is None                       # not decided yet
        sendmail.close()                                 # no writer left
        q.compact()                                      # would drop a dead writer's chunks
        msg = q.get(a.id)
        assert msg is not None and "COMMIT lost" in msg.quarantined
        assert b"".join(q.body(a.id)).startswith(b"Subject: a")
        assert os.path.exists(os.path.join(spool, "corrupt", a.id + ".body"))
    finally:
        q.close()
