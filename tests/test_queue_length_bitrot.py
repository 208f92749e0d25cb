"""R2: one flipped bit in the length field of the last record (an acknowledged COMMIT) makes
recovery take it for a torn write: it is cut, and the message disappears from the queue
(not live, not quarantined; its bytes only under corrupt/).  docs/QUEUE.md promises that
damage in the last record is quarantined and listed."""
import os

import pytest

from masq.queue import record
from masq.queue.envelope import Envelope
from masq.queue.log import segment_name
from masq.queue.spool import Queue


def last_record(path):
    data = open(path, "rb").read()
    salt, size = record.parse_file_header(data)
    items = list(record.scan(data, size, len(data), record.seed(salt)))
    return items[-1]


@pytest.mark.parametrize("bit", [0, 3, 7, 12])   # bits of the 4-byte big-endian length
def test_flipped_length_bit_in_acknowledged_commit_keeps_message_listed(tmp_path, bit):
    spool = str(tmp_path)
    q = Queue(spool).open("runner")
    w = q.writer()
    w.write(b"Subject: x\r\n\r\nhello\r\n")
    w.commit(Envelope("a@x", ["b@y"], received=1))
    q.sync()                                   # acknowledged
    q.close()
    path = os.path.join(spool, segment_name(1))
    rec = last_record(path)
    assert rec.type == record.COMMIT
    with open(path, "r+b") as f:               # bit rot in the length field (bytes 4..7)
        pos = rec.offset + 7 - bit // 8
        f.seek(pos)
        b = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([b ^ (1 << (bit % 8))]))
    q = Queue(spool).open("runner")
    try:
        listed = {m.id: m.quarantined for m in q.listed()}
        assert w.id in listed, ("acknowledged message vanished", os.listdir(spool + "/corrupt"))
    finally:
        q.close()


def test_flipped_length_bit_in_the_last_record_of_an_older_segment(tmp_path):
    spool = str(tmp_path)
    q = Queue(spool, segment_size=4096).open("runner")
    w = q.writer()
    w.write(b"Subject: x\r\n\r\n" + b"h" * 3000)
    w.commit(Envelope("a@x", ["b@y"], received=1))
    q.sync()
    w2 = q.writer()
    w2.write(b"Subject: y\r\n\r\n" + b"h" * 3000)          # lands in segment 2
    w2.commit(Envelope("a@x", ["b@y"], received=1))
    q.sync()
    q.close()
    path = os.path.join(spool, segment_name(1))
    rec = last_record(path)
    assert rec.type == record.COMMIT and rec.msgid == w.id.encode()
    with open(path, "r+b") as f:
        f.seek(rec.offset + 6)
        b = f.read(1)[0]
        f.seek(rec.offset + 6)
        f.write(bytes([b ^ 0x10]))
    q = Queue(spool, segment_size=4096).open("runner")
    try:
        listed = {m.id: m.quarantined for m in q.listed()}
        assert w.id in listed and w2.id in listed, listed
    finally:
        q.close()
