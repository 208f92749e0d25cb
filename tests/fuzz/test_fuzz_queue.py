"""Fuzz the queue record reader (masq/queue/record.py) and recovery over a damaged log.

Input: a real log written through the Queue facade (committed, delivered, removed and
uncommitted messages), then (a) bytes flipped, cut and inserted anywhere after the file
header, and (b) records forged with the log's own salt, so that they pass the checksum:
any type, known and unknown message ids, payloads from the envelope grammar with fields
of the wrong JSON type, and random bytes. Plus plain random bytes for `record.scan`.
Properties: `scan` reports records and damage that tile the scanned range exactly, in
order, each record with a valid type and id; a damaged log opens as a queue (a torn tail
is cut, damage quarantined), its messages list, and the status document and `mailq` lines
can be made from them, raising nothing.
"""

import json
import os

import pytest
from hypothesis import given, strategies as st

from fuzzing import fuzz_settings, mutated
from masq.queue import record
from masq.queue.envelope import DELIVERED, Envelope, Recipient
from masq.queue.log import segment_name
from masq.queue.spool import Queue
from masq.queue.store import new_id
from masq.status.text import format_message
from masq.status import model

NOW = 1_800_000_000.0

SALT = b"fuzzsalt"


@fuzz_settings()
@given(st.one_of(mutated(st.lists(st.tuples(st.sampled_from(sorted(record.TYPES)),
                                            st.binary(max_size=30)), max_size=5).map(
    lambda recs: b"".join(record.encode(record.seed(SALT), t, b"0123456789abcd", p)
                          for t, p in recs))), st.binary(max_size=200)))
def test_scan_tiles_any_bytes_with_records_and_damage(data):
    pos = 0
    for item in record.scan(data, 0, len(data), record.seed(SALT), with_bodies=True):
        assert item.offset == pos
        if isinstance(item, record.Record):
            assert item.type in record.TYPES and record.ID_CHARS.issuperset(item.msgid)
            assert len(item.payload) == item.length
            pos = item.end
        else:
            assert item.end > item.offset
            pos = item.end
    assert pos == len(data)


def build(spool):
    """Write a small log; return the ids of its messages."""
    queue = Queue(spool).open("runner")
    ids = []
    for n in range(3):
        msgid = new_id(NOW)
        writer = queue.writer(msgid)
        writer.write(b"Subject: %d\r\n\r\nbody\r\n" % n)
        writer.commit(Envelope("s%d@x" % n, ["r%d@y" % n, "q%d@y" % n], received=1000.0 + n))
        ids.append(msgid)
    queue.record_result(ids[0], 0, Recipient("r0@y", state=DELIVERED))
    queue.remove(ids[2], "test")
    queue.append([(record.BODY, new_id(NOW), b"uncommitted")])
    queue.sync()
    queue.close()
    return ids


_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2, 2 ** 70), st.floats(allow_nan=False),
              st.sampled_from(["", "a@b", "queued", "delivered", "bounced", "x\u00e9"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["a", "st", "at", "le", "i"]),
                                            inner, max_size=3)), max_leaves=6)
_envelope_key = st.sampled_from(["s", "t", "z", "p", "c", "h", "u", "o", "e", "ret", "b",
                                 "8", "w", "q", "r", "i", "a", "st", "at", "nx", "le", "ro",
                                 "up", "why", "who", "reason", "filter"])


@st.composite
def payloads(draw):
    good = {"s": "a@b", "t": 1.0, "r": [{"a": "r0@y", "st": "queued"}], "i": 0, "a": "r0@y",
            "st": "delivered"}
    data = {k: v for k, v in good.items() if draw(st.booleans())}
    data.update(draw(st.dictionaries(_envelope_key, _json_value, max_size=4)))
    return draw(st.one_of(st.just(json.dumps(data).encode()), st.binary(max_size=30)))


@st.composite
def forged(draw, ids):
    rtype = draw(st.sampled_from(sorted(record.TYPES)))
    msgid = draw(st.sampled_from(ids + ["0000000000zzzz", "00000000000001"]))
    return rtype, msgid.encode("ascii"), draw(payloads())


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    spool = str(tmp_path_factory.mktemp("template"))
    ids = build(spool)
    with open(os.path.join(spool, segment_name(1)), "rb") as f:    # one segment: all of it
        return f.read(), ids


@fuzz_settings(weight=3)
@given(st.data())
def test_a_damaged_or_forged_log_opens_lists_and_reports(template, tmp_path_factory, data):
    original, ids = template
    salt = record.parse_file_header(original)[0]
    body = data.draw(mutated(st.just(original[record.FILE_HEADER_SIZE:]))
                     | st.just(original[record.FILE_HEADER_SIZE:]))
    extra = data.draw(st.lists(forged(ids), max_size=4))
    body += b"".join(record.encode(record.seed(salt), t, i, p) for t, i, p in extra)
    spool = str(tmp_path_factory.mktemp("spool"))
    with open(os.path.join(spool, segment_name(1)), "wb") as f:
        f.write(original[:record.FILE_HEADER_SIZE] + body)
    queue = Queue(spool).open("runner")
    try:
        messages = queue.listed()
        doc = model.document("h", 0.0, [], messages, model.new_counters(), now=5000.0)
        json.dumps(doc)
        for msg in doc["queue"]:
            assert format_message(msg).endswith("\n")
        for msg in queue.live():
            assert isinstance(b"".join(queue.body(msg.id)), bytes)
    finally:
        queue.close()
