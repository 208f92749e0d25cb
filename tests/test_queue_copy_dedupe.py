"""R10: a crash after a complete, synced copy but before the old segment is deleted (or the
old segment coming back because the directory was not synced), plus bit rot in the
*original's* text in the old segment: recovery quarantines the message although the copy
that replaces it is whole. The copy's COMMIT replaces the chunks (store._commit) but not
the quarantine set by the original's damage."""
import os

from masq.queue import record
from masq.queue.envelope import Envelope
from masq.queue.log import segment_name, segment_numbers
from masq.queue.spool import Queue

SEG = 4096


def copied_but_not_deleted(spool):
    """Queue a message, copy it forward, sync, crash before the old segment goes."""
    q = Queue(spool, segment_size=SEG).open("runner")
    w = q.writer()
    text = b"Subject: keep\r\n\r\n" + b"k" * 300
    w.write(text)
    w.commit(Envelope("a@x", ["b@y"], received=1))
    for i in range(40):
        d = q.writer()
        d.write(b"d" * 300)
        d.commit(Envelope("a@x", ["b@y"], received=1))
        q.remove(d.id, "t")
    q.sync()
    oldest = segment_numbers(spool)[0]
    while q.store.pins.get(oldest):
        q.compact_step()
    q.sync()
    q.close()
    return w.id, text, os.path.join(spool, segment_name(oldest))


def test_whole_copy_wins_over_an_original_whose_commit_rotted(tmp_path):
    spool = str(tmp_path)
    msgid, text, path = copied_but_not_deleted(spool)
    data = open(path, "rb").read()
    salt, size = record.parse_file_header(data)
    commit = [it for it in record.scan(data, size, len(data), record.seed(salt))
              if it.type == record.COMMIT and it.msgid == msgid.encode()][0]
    with open(path, "r+b") as f:                      # bit rot in the original's COMMIT id
        f.seek(commit.offset + 8 + 3)
        f.write(b"!")
    q = Queue(spool, segment_size=SEG).open("runner")
    try:
        msg = q.get(msgid)
        assert msg is not None and not msg.quarantined, msg and msg.quarantined
        assert b"".join(q.body(msgid)) == text
    finally:
        q.close()


def test_whole_copy_wins_over_a_damaged_original(tmp_path):
    spool = str(tmp_path)
    q = Queue(spool, segment_size=SEG).open("runner")
    w = q.writer()
    text = b"Subject: keep\r\n\r\n" + b"k" * 300
    w.write(text)
    w.commit(Envelope("a@x", ["b@y"], received=1))
    for i in range(40):
        d = q.writer()
        d.write(b"d" * 300)
        d.commit(Envelope("a@x", ["b@y"], received=1))
        q.remove(d.id, "t")
    q.sync()
    oldest = segment_numbers(spool)[0]
    while q.store.pins.get(oldest):                   # copy forward, do not delete yet
        q.compact_step()
    q.sync()                                          # the copy is durable
    q.close()                                         # crash before the deletion step
    path = os.path.join(spool, segment_name(oldest))
    data = open(path, "rb").read()
    salt, size = record.parse_file_header(data)
    body = [it for it in record.scan(data, size, len(data), record.seed(salt))
            if it.type == record.BODY and it.msgid == w.id.encode()][0]
    with open(path, "r+b") as f:                      # bit rot in the original's text
        f.seek(body.payload_offset + 20)
        f.write(b"\x00")
    q = Queue(spool, segment_size=SEG).open("runner")
    try:
        msg = q.get(w.id)
        assert msg is not None
        assert not msg.quarantined, msg.quarantined
        assert b"".join(q.body(w.id)) == text
    finally:
        q.close()
