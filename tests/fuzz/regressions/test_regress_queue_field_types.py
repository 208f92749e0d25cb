"""Regression (found by tests/fuzz/test_fuzz_queue.py): a checksummed COMMIT or RESULT
record whose fields have the wrong JSON type (`"t": null`, `"z": "1"`, `"at": true`) was
taken into the index as it was, and the status document, mailq and the scheduler then
raised TypeError on it. Such a record is now a bad record (damage): a bad COMMIT leaves its message out of the
queue's view, a bad RESULT quarantines its message.
"""

import json
import os

import pytest

from masq.queue import record
from masq.queue.envelope import Envelope
from masq.queue.log import segment_name, segment_numbers
from masq.queue.spool import Queue
from masq.queue.store import new_id
from masq.status import model

NOW = 1_800_000_000.0


def forge(spool, rtype, msgid, payload):
    path = os.path.join(spool, segment_name(segment_numbers(spool)[-1]))
    with open(path, "rb") as f:
        salt = record.parse_file_header(f.read(record.FILE_HEADER_SIZE))[0]
    with open(path, "ab") as f:
        f.write(record.encode(record.seed(salt), rtype, msgid.encode(), payload))


@pytest.mark.parametrize("fields", [{"t": None}, {"t": "yesterday"}, {"z": "1"},
                                    {"z": True}, {"p": 5}, {"8": "yes"}, {"w": []}])
def test_a_commit_with_a_field_of_the_wrong_type_is_quarantined(spool, fields):
    Queue(spool).open("runner").close()
    msgid = new_id(NOW)
    forge(spool, record.COMMIT, msgid, json.dumps(
        dict({"s": "a@b", "t": 1.0, "r": [{"a": "c@d", "st": "queued"}]}, **fields)).encode())
    queue = Queue(spool).open("runner")
    try:
        assert queue.listed() == [] and queue.live() == []     # no envelope taken in
        assert queue.get(msgid) is None
    finally:
        queue.close()


@pytest.mark.parametrize("fields", [{"at": True}, {"at": "2"}, {"nx": "soon"},
                                    {"st": None}, {"le": 451}])
def test_a_result_with_a_field_of_the_wrong_type_is_quarantined(spool, fields):
    queue = Queue(spool).open("runner")
    msgid = new_id(NOW)
    writer = queue.writer(msgid)
    writer.write(b"Subject: x\r\n\r\nbody\r\n")
    writer.commit(Envelope("a@b", ["c@d"], received=1.0))
    queue.sync()
    queue.close()
    forge(spool, record.RESULT, msgid, json.dumps(
        dict({"i": 0, "a": "c@d", "st": "deferred"}, **fields)).encode())
    queue = Queue(spool).open("runner")
    try:
        messages = queue.listed()
        assert messages[0].quarantined.startswith("bad R record")
        doc = model.document("h", 0.0, [], messages, model.new_counters(), now=5.0)
        assert doc["queue"][0]["recipients"][0]["state"] == "queued"
    finally:
        queue.close()
