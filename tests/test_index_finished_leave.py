"""The queue's index holds unfinished messages only: a delivered, bounced, removed or aborted
message leaves it at once (issue 10, "bounded memory"), in the running process and after
recovery, and what follows in the log for such an id is dead bytes, not damage.

The bytes per waiting message are a benchmark figure (tools/bench_queue.py), not a test.
"""

import pytest

from masq.queue.envelope import BOUNCED, DEFERRED, DELIVERED, Envelope, Recipient
from masq.queue.spool import Queue


def commit(queue, rcpts=("r@y.example",), body=b"Subject: t\r\n\r\nhello\r\n"):
    writer = queue.writer()
    writer.write(body)
    writer.commit(Envelope("s@x.example", list(rcpts), received=1.0))
    return writer.id


@pytest.fixture
def queue(tmp_path):
    q = Queue(str(tmp_path)).open("runner")
    yield q
    q.close()


def fill(queue):
    """Queue one message of each fate; return {fate: id}."""
    ids = {fate: commit(queue) for fate in ("delivered", "waiting", "removed")}
    ids["bounced"] = commit(queue, ["a@y.example", "b@y.example"])
    ids["half"] = commit(queue, ["a@y.example", "b@y.example"])
    aborted = queue.writer()
    aborted.write(b"x" * (70 * 1024))        # one chunk reaches the log, then the writer gives up
    aborted.abort()
    ids["aborted"] = aborted.id
    queue.record_result(ids["delivered"], 0, Recipient("r@y.example", state=DELIVERED))
    queue.record_result(ids["bounced"], 0, Recipient("a@y.example", state=BOUNCED))
    queue.record_result(ids["bounced"], 1, Recipient("b@y.example", state=DELIVERED))
    queue.record_result(ids["half"], 0, Recipient("a@y.example", state=DELIVERED))
    queue.record_result(ids["half"], 1, Recipient("b@y.example", state=DEFERRED, attempts=1))
    queue.remove(ids["removed"], "test")
    queue.sync()
    return ids


def test_finished_messages_leave_the_index_at_once(queue):
    ids = fill(queue)
    assert set(queue.store.messages) == {ids["waiting"], ids["half"]}
    assert [m.id for m in queue.live()] == [ids["waiting"], ids["half"]]


def test_recovery_indexes_only_the_unfinished(tmp_path, queue):
    ids = fill(queue)
    queue.close()
    again = Queue(str(tmp_path)).open("runner")
    try:
        assert set(again.store.messages) == {ids["waiting"], ids["half"]}
        assert again.store.damage == []
        assert [m.quarantined for m in again.listed()] == [None, None]
    finally:
        again.close()


def test_a_late_record_of_a_finished_message_is_dead_bytes_not_damage(queue):
    msgid = commit(queue)
    queue.record_result(msgid, 0, Recipient("r@y.example", state=DELIVERED))
    before = queue.store.dead_bytes()
    queue.mark_warned(msgid, 2.0)
    queue.record_result(msgid, 0, Recipient("r@y.example", state=DELIVERED))
    assert msgid not in queue.store.messages
    assert queue.listed() == []
    assert queue.store.dead_bytes() > before


def test_the_body_of_a_message_that_just_finished_stays_readable(queue):
    """A bounce is built from the body after the last RESULT made the message finished."""
    msgid = commit(queue, body=b"Subject: gone\r\n\r\nbody\r\n")
    queue.record_result(msgid, 0, Recipient("r@y.example", state=BOUNCED))
    assert b"".join(queue.body(msgid)) == b"Subject: gone\r\n\r\nbody\r\n"
