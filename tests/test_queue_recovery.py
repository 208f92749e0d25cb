"""Recovery: cut the log at every byte offset, damage it in the middle, forge records.

The oracle is `masq queue --dump` of the whole log: for a cut of the newest segment at
offset c, exactly the messages whose COMMIT record ends at or before c come back, with the
recipient states of the RESULT records that end at or before c.
"""

import json
import os
import shutil

import pytest

from masq.queue import record
from masq.queue.dump import dump_lines
from masq.queue.envelope import BOUNCED, DELIVERED, DEFERRED, Envelope, Recipient
from masq.queue.log import LOG_NAME, segment_name, segment_numbers
from masq.queue.spool import Queue, SpoolError
from masq.queue.store import new_id

NOW = 1_800_000_000.0


def newest(spool):
    """Return the path of the newest segment of spool."""
    return os.path.join(spool, segment_name(segment_numbers(spool)[-1]))


def build_log(spool, big=70000, segment_size=1 << 20):
    """Write a log with committed, partly delivered, removed and uncommitted messages."""
    queue = Queue(spool, segment_size=segment_size).open("runner")
    ids = []
    for n, body in enumerate([b"a" * 300, b"b" * big, b"c" * 10, b"d" * 500]):
        msgid = new_id(NOW)
        writer = queue.writer(msgid)
        writer.write(b"Subject: %d\r\n\r\n" % n + body)
        writer.commit(Envelope("s%d@x" % n, ["r%d@y" % n, "q%d@y" % n], received=n))
        ids.append(msgid)
    queue.record_result(ids[0], 0, Recipient("r0@y", state=DELIVERED))
    queue.record_result(ids[1], 1, Recipient("q1@y", state=DEFERRED, attempts=1,
                                             last_error="451 4.3.0 try later"))
    queue.record_result(ids[1], 0, Recipient("r1@y", state=BOUNCED))
    queue.remove(ids[2], "test")
    # a body chunk whose message was never committed (its writer died)
    queue.append([(record.BODY, new_id(NOW), b"x" * min(big, 64 * 1024))])
    queue.record_result(ids[3], 1, Recipient("q3@y", state=DELIVERED))
    queue.record_result(ids[3], 0, Recipient("r3@y", state=DELIVERED))
    queue.sync()
    queue.close()
    return ids


def oracle(spool):
    """Return [((segment, end offset), type, id, payload dict or None)] from the dump."""
    rows = []
    for line in dump_lines(spool):
        span, kind, msgid, rest = line.split(" ", 3)
        seg, _, span = span.partition(":")
        end = int(span.split("-")[1])
        rows.append(((int(seg), end), kind, msgid,
                     json.loads(rest) if kind not in ("BODY", "COPY") else None))
    return rows


def expected_at(rows, cut):
    """Return {id: [states]} of the messages a log cut at (segment, offset) must show."""
    state = {}
    for end, kind, msgid, payload in rows:
        if end > cut:
            break
        if kind == "COMMIT":
            state[msgid] = [r["st"] for r in payload["r"]]
        elif kind == "RESULT":
            state[msgid][payload["i"]] = payload["st"]
        elif kind == "REMOVED":
            state[msgid] = None
    return {k: v for k, v in state.items()
            if v is not None and not all(s in ("delivered", "bounced") for s in v)}


def seen(spool):
    queue = Queue(spool).open("runner")
    try:
        return {m.id: [r.state for r in m.envelope.recipients] for m in queue.live()}
    finally:
        queue.close()


@pytest.mark.parametrize("big,stride,segment_size", [
    (700, 1, 1 << 20), (70000, 211, 1 << 20), (700, 1, 1200)])
def test_cut_at_every_offset_recovers_exactly_the_committed(tmp_path, big, stride,
                                                             segment_size):
    """Every byte offset of the newest segment for a log of small messages (in one segment,
    and spread over several small ones); for multi-chunk bodies, every offset near a record
    boundary and a stride in between."""
    full = str(tmp_path / "full")
    os.mkdir(full)
    build_log(full, big, segment_size)
    rows = oracle(full)
    numbers = segment_numbers(full)
    last = numbers[-1]
    data = open(newest(full), "rb").read()
    ends = sorted({end for (seg, end), *_ in rows if seg == last})
    cuts = set(range(record.FILE_HEADER_SIZE, len(data) + 1, stride)) | set(ends)
    for end in ends:
        cuts |= set(range(max(end - 30, 0), min(end + 30, len(data) + 1)))
    for cut in sorted(cuts):
        spool = str(tmp_path / ("cut%d" % cut))
        os.mkdir(spool)
        for number in numbers[:-1]:
            shutil.copy(os.path.join(full, segment_name(number)), spool)
        with open(os.path.join(spool, segment_name(last)), "wb") as out:
            out.write(data[:cut])
        assert seen(spool) == expected_at(rows, (last, cut)), "cut at %d" % cut
        last_good = max([e for e in ends if e <= cut] + [record.FILE_HEADER_SIZE])
        assert os.path.getsize(newest(spool)) == last_good
        shutil.rmtree(spool)


def test_bodies_read_back_after_recovery(spool):
    ids = build_log(spool)
    queue = Queue(spool).open("read")
    body = b"".join(queue.body(ids[1]))
    assert body == b"Subject: 1\r\n\r\n" + b"b" * 70000
    queue.close()


def test_garbage_appended_is_cut_and_later_appends_work(spool):
    build_log(spool)
    before = seen(spool)
    path = newest(spool)
    size = os.path.getsize(path)
    with open(path, "ab") as out:
        out.write(b"Mq\x43\x01garbage that is not a record")
    assert seen(spool) == before
    assert os.path.getsize(path) == size


def test_damage_in_the_middle_quarantines_only_that_message(spool):
    ids = build_log(spool)
    rows = oracle(spool)
    body_end = next(end for (_, end), kind, msgid, _ in rows
                    if kind == "BODY" and msgid == ids[1])
    path = newest(spool)
    with open(path, "r+b") as f:
        f.seek(body_end - 100)
        f.write(b"\xff\xfe")
    queue = Queue(spool).open("runner")
    try:
        live = {m.id for m in queue.live()}
        assert ids[0] in live and ids[3] not in live   # ids[3] is all delivered
        assert ids[1] not in live
        quarantined = [m for m in queue.listed() if m.quarantined]
        assert [m.id for m in quarantined] == [ids[1]]
        assert os.listdir(os.path.join(spool, "corrupt"))
    finally:
        queue.close()


def test_forged_record_inside_a_body_is_never_believed(spool):
    """A body that contains a perfectly framed COMMIT (with a guessed salt) stays a body."""
    queue = Queue(spool).open("runner")
    forged = record.encode(record.seed(b"\0" * 8), record.COMMIT, b"0" * 14,
                           Envelope("evil@x", ["victim@y"]).encode())
    writer = queue.writer()
    writer.write(b"Subject: hi\r\n\r\n" + forged * 3)
    writer.commit(Envelope("a@b", ["c@d"]))
    queue.sync()
    queue.close()
    path = newest(spool)
    with open(path, "r+b") as f:        # damage the body record's length field
        f.seek(record.FILE_HEADER_SIZE + 4)
        f.write(b"\x7f")
    state = seen(spool)
    assert all(m[0] != "victim@y" for m in state.values())
    queue = Queue(spool).open("read")
    senders = [m.envelope.sender for m in queue.listed()]
    queue.close()
    assert "evil@x" not in senders


@pytest.mark.parametrize("make", ["garbage", "directory", "empty"])
def test_bad_log_refuses_with_config_error(spool, make):
    path = os.path.join(spool, LOG_NAME)
    if make == "garbage":
        open(path, "wb").write(b"this is not a queue\n" * 10)
    elif make == "directory":
        os.mkdir(path)
    else:
        open(path, "wb").close()
    with pytest.raises(SpoolError) as err:
        Queue(spool).open("runner")
    assert err.value.status == 78
    assert LOG_NAME in str(err.value)
    assert os.path.lexists(path)


def test_spool_on_tmpfs_is_refused_unless_volatile(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("tmpfs %s tmpfs rw 0 0\n" % tmp_path)
    from masq.queue import spool as spool_mod
    assert spool_mod.mount_type(str(tmp_path / "spool"), str(mounts)) == "tmpfs"


def test_compaction_keeps_live_and_drops_dead(spool):
    ids = build_log(spool)
    before = seen(spool)
    queue = Queue(spool).open("runner")
    size = queue.log_size()
    assert queue.compact()
    after = {m.id: [r.state for r in m.envelope.recipients] for m in queue.live()}
    assert after == before
    assert queue.log_size() < size
    assert b"".join(queue.body(ids[0])) == b"Subject: 0\r\n\r\n" + b"a" * 300
    queue.close()
    assert seen(spool) == before


def test_second_runner_is_refused(spool):
    first = Queue(spool).open("runner")
    with pytest.raises(SpoolError) as err:
        Queue(spool).open("runner")
    assert err.value.status == 75
    first.close()


def test_appender_and_runner_share_the_log(spool):
    runner = Queue(spool).open("runner")
    appender = Queue(spool).open("append")
    msgid = new_id(NOW)
    writer = appender.writer(msgid)
    writer.write(b"Subject: x\r\n\r\nhello\r\n")
    writer.commit(Envelope("a@b", ["c@d"]))
    appender.sync()
    appender.close()
    runner.catch_up()
    assert [m.id for m in runner.live()] == [msgid]
    assert b"".join(runner.body(msgid)).endswith(b"hello\r\n")
    runner.close()
