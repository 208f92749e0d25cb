"""The queue facade's contract, run against both backends: the log on disk and the queue in
memory (masq/queue/memory.py) that tests about other things use.

Whatever a caller outside masq/queue/ can see must be the same: ids, states, results,
removal, warnings, texts, sync callbacks, compaction. What only a disk has (recovery,
locks, torn tails, failing syncs) is tested on disk alone, in the test_queue_* modules.
"""

import pytest

from masq.queue import record
from masq.queue.envelope import DEFERRED, DELIVERED, Envelope, Recipient, encode_note
from masq.queue.memory import MemoryQueue
from masq.queue.spool import Queue

from fakes import FakeClock

BACKENDS = ["disk", "memory"]


@pytest.fixture(params=BACKENDS)
def make_queue(request, tmp_path):
    """Return a factory of open queues of the backend under test (closed after the test)."""
    made = []

    def make(segment_size=1 << 20, clock=None):
        if request.param == "memory":
            queue = MemoryQueue(segment_size=segment_size, clock=clock)
        else:
            queue = Queue(str(tmp_path / ("spool%d" % len(made))), volatile_ok=True,
                          segment_size=segment_size, clock=clock).open("runner")
        made.append(queue)
        return queue
    yield make
    for queue in made:
        queue.close()


@pytest.fixture
def queue(make_queue):
    return make_queue()


def put(queue, text=b"Subject: t\r\n\r\nhello\r\n", rcpts=("a@x.example",), sender="s@y.example",
        received=100.0):
    writer = queue.writer()
    for at in range(0, len(text), 1000):
        writer.write(text[at:at + 1000])
    writer.commit(Envelope(sender, list(rcpts), received=received))
    return writer.id


def text_of(queue, msgid):
    return b"".join(queue.body(msgid))


def test_a_committed_message_is_live_listed_and_reads_back(queue):
    text = b"Subject: big\r\n\r\n" + b"0123456789" * 20000          # several chunks
    msgid = put(queue, text, rcpts=("a@x.example", "b@x.example"))
    assert [m.id for m in queue.live()] == [msgid] == [m.id for m in queue.listed()]
    msg = queue.get(msgid)
    assert msg is queue.get_live(msgid)
    assert msg.envelope.sender == "s@y.example" and msg.envelope.size == len(text)
    assert [r.address for r in msg.envelope.recipients] == ["a@x.example", "b@x.example"]
    assert text_of(queue, msgid) == text


def test_ids_are_fresh_and_dated_by_the_queue_clock(make_queue):
    early = make_queue(clock=FakeClock(wall=1_000_000_000.0))
    late = make_queue(clock=FakeClock(wall=1_900_000_000.0))
    ids = [early.writer().id for _ in range(50)]
    assert len(set(ids)) == 50 and all(len(i) == 14 for i in ids)
    assert early.writer().id[:7] < late.writer().id[:7]            # time first: sorts by age
    assert early.writer("fixedid0000001").id == "fixedid0000001"


def test_messages_keep_arrival_order(queue):
    ids = [put(queue, rcpts=("r%d@x.example" % n,)) for n in range(5)]
    assert [m.id for m in queue.live()] == ids


def test_an_uncommitted_or_aborted_message_is_not_in_the_queue(queue):
    writer = queue.writer()
    writer.write(b"x" * 100000)
    assert queue.get(writer.id) is None and queue.live() == []
    writer.abort()
    assert queue.get(writer.id) is None and queue.listed() == []


def test_results_change_states_and_the_last_final_one_ends_the_message(queue):
    msgid = put(queue, rcpts=("a@x.example", "b@x.example"))
    queue.record_result(msgid, 0, Recipient("a@x.example", state=DELIVERED, attempts=1))
    queue.record_results(msgid, [(1, Recipient("b@x.example", state=DEFERRED, attempts=1,
                                                next_attempt=500.0, last_error="4.4.1 no"))],
                         warned=400.0)
    msg = queue.get_live(msgid)
    assert [r.state for r in msg.envelope.recipients] == [DELIVERED, DEFERRED]
    assert msg.envelope.recipients[1].next_attempt == 500.0
    assert msg.envelope.warned == 400.0
    queue.record_result(msgid, 1, Recipient("b@x.example", state=DELIVERED, attempts=2))
    assert queue.get(msgid) is None and queue.get_live(msgid) is None and queue.live() == []
    assert text_of(queue, msgid).endswith(b"hello\r\n")       # a bounce may still read it


def test_a_result_for_a_recipient_that_is_not_there_quarantines(queue):
    msgid = put(queue)
    queue.record_result(msgid, 5, Recipient("a@x.example", state=DELIVERED))
    assert queue.get_live(msgid) is None
    assert queue.get(msgid).quarantined and [m.id for m in queue.listed()] == [msgid]


def test_mark_warned_and_remove(queue):
    first, second = put(queue), put(queue)
    queue.mark_warned(first, 1234.5)
    assert queue.get(first).envelope.warned == 1234.5
    queue.remove(first, "removed by test")
    assert queue.get(first) is None and [m.id for m in queue.live()] == [second]


def test_remove_each_says_why_per_id(queue):
    mine, theirs = put(queue, sender="me@x.example"), put(queue, sender="you@x.example")
    removed, errors = queue.remove_each(
        [mine, theirs, "nosuchid000000"], lambda msg: msg.envelope.sender == "me@x.example",
        "tester")
    assert removed == [mine]
    assert errors == ["%s: permission denied" % theirs, "nosuchid000000: no such message"]
    assert [m.id for m in queue.live()] == [theirs]


def test_quarantined_is_listed_but_not_live(queue):
    msgid = put(queue)
    queue.append([(record.QUARANTINED, msgid, encode_note(why="a test"))])
    assert queue.live() == [] and queue.get_live(msgid) is None
    assert [m.id for m in queue.listed()] == [msgid] and queue.get(msgid).quarantined == "a test"


def test_sync_callbacks_run_once_after_the_group_sync(queue):
    put(queue)
    got = []
    assert not queue.sync_pending()
    queue.want_sync(got.append)
    queue.want_sync(got.append)
    assert queue.sync_pending() and got == []
    queue.sync_now()
    assert got == [None, None] and not queue.sync_pending()
    queue.sync_now()
    assert got == [None, None]
    queue.sync()                                                   # no one waits: fine too


def test_compaction_frees_finished_mail_and_keeps_the_rest_whole(make_queue):
    queue = make_queue(segment_size=4096)
    texts = {put(queue, b"Subject: %d\r\n\r\n" % n + bytes([65 + n % 26]) * 1500): n
             for n in range(30)}
    ids = list(texts)
    for msgid in ids[:25]:
        queue.remove(msgid, "done")
    queue.sync()
    before, segments = queue.log_size(), queue.segment_count()
    assert segments > 3
    assert queue.compact()
    assert queue.segment_count() < segments and queue.log_size() < before
    assert [m.id for m in queue.live()] == ids[25:]
    for msgid in ids[25:]:
        n = texts[msgid]
        assert text_of(queue, msgid) == b"Subject: %d\r\n\r\n" % n + bytes([65 + n % 26]) * 1500


def test_compaction_steps_keep_a_message_being_written(make_queue):
    queue = make_queue(segment_size=4096)
    writer = queue.writer()
    writer.write(b"y" * 3000)
    for _ in range(10):
        queue.remove(put(queue, b"z" * 1500), "done")
    queue.sync()
    while queue.compact_step():
        pass
    writer.write(b"y" * 10)
    writer.commit(Envelope("s@y.example", ["a@x.example"], received=1.0))
    assert text_of(queue, writer.id) == b"y" * 3010


def test_the_crlf_fact_is_kept_through_compaction_and_old_commits_say_unknown(make_queue):
    """The envelope's `crlf` (its writer made the text CRLF only, docs/QUEUE.md) survives a
    compaction copy; a COMMIT written before the field existed reads as False: check."""
    queue = make_queue(segment_size=4096)
    writer = queue.writer()
    writer.write(b"Subject: t\r\n\r\nhello\r\n")
    writer.commit(Envelope("s@y.example", ["a@x.example"], received=100.0, crlf=True))
    flagged, old = writer.id, put(queue)
    assert b'"cr":true' in queue.get(flagged).envelope.encode()
    for n in range(8):                                  # filler, then gone: a compaction
        queue.remove(put(queue, b"Subject: %d\r\n\r\n" % n + b"x" * 1500), "done")
    queue.sync()
    assert queue.compact()
    assert queue.get(flagged).envelope.crlf is True
    assert queue.get(old).envelope.crlf is False
    payload = queue.get(old).envelope.encode()
    assert b'"cr"' not in payload and Envelope.decode(payload).crlf is False
    with pytest.raises(ValueError):
        Envelope.decode(payload[:-1] + b',"cr":"yes"}')
