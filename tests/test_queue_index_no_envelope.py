"""The queue's index holds no envelope (issue 10, "about 300 bytes per waiting message").

Each waiting message's entry keeps where its COMMIT and each recipient's last RESULT lie in
the log; its envelope is read back from there. Pinned here: no entry reaches an Envelope,
Recipient or address; the store keeps at most ENVELOPES decoded; and what is read back is
the envelope as the records say (recipient states, attempts, errors, the warning time, the
DSN fields), in the running process, after compaction copied the message into another
segment, and after recovery rebuilt the index by scanning. The bytes per entry are a
benchmark figure (tools/bench_index.py), not a test.
"""

import gc

import pytest

from masq.queue.envelope import DEFERRED, DELIVERED, Envelope, Recipient
from masq.queue.spool import Queue
from masq.queue.store import ENVELOPES

SENDER = "sender-no-envelope@x.example"


def commit(queue, n, rcpts=None):
    writer = queue.writer()
    writer.write(b"Subject: %d\r\n\r\n" % n + b"line\r\n" * 40)
    rcpts = rcpts or [Recipient("a%d@y.example" % n, orcpt="rfc822;a@y.example",
                                notify="FAILURE,DELAY"),
                      Recipient("b%d@y.example" % n)]
    writer.commit(Envelope(SENDER, rcpts, received=1000.0 + n, protocol="esmtp",
                           client="192.0.2.7", helo="pc.lan", envid="env-%d" % n,
                           ret="HDRS", body="8BITMIME"))
    return writer.id


def history(queue, msgid):
    """Defer recipient 0 twice and deliver recipient 1; warn once."""
    env = queue.get(msgid).envelope
    a, b = env.recipients
    queue.record_results(msgid, [(0, Recipient(a.address, state=DEFERRED, attempts=1,
                                               next_attempt=2000.0, last_error="451 first",
                                               route="uplink", updated=1500.0))])
    queue.record_results(msgid, [(0, Recipient(a.address, state=DEFERRED, attempts=2,
                                               next_attempt=3000.0, last_error="451 second",
                                               route="uplink", updated=2500.0)),
                                 (1, Recipient(b.address, state=DELIVERED, attempts=1,
                                               route="uplink", updated=2500.0))],
                         warned=2600.0)


def check(env, n):
    """Assert env is message n's envelope after history()."""
    assert (env.sender, env.received, env.protocol, env.client, env.helo) == (
        SENDER, 1000.0 + n, "esmtp", "192.0.2.7", "pc.lan")
    assert (env.envid, env.ret, env.body, env.warned) == ("env-%d" % n, "HDRS", "8BITMIME",
                                                          2600.0)
    a, b = env.recipients
    assert (a.address, a.state, a.attempts, a.next_attempt, a.last_error, a.updated) == (
        "a%d@y.example" % n, DEFERRED, 2, 3000.0, "451 second", 2500.0)
    assert (a.orcpt, a.notify) == ("rfc822;a@y.example", "FAILURE,DELAY")
    assert (b.address, b.state, b.attempts) == ("b%d@y.example" % n, DELIVERED, 1)
    assert not env.done


def reached(root):
    """Return every object reachable from root through containers and slots."""
    seen, todo, found = set(), [root], []
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type) or obj is getattr(root, "store", None):
            continue
        seen.add(id(obj))
        found.append(obj)
        todo.extend(gc.get_referents(obj))
        for name in getattr(type(obj), "__slots__", ()):
            value = getattr(obj, name, None)
            if value is not None:
                todo.append(value)
    return found


@pytest.fixture
def queue(tmp_path):
    q = Queue(str(tmp_path), segment_size=64 * 1024).open("runner")
    yield q
    q.close()


def test_an_index_entry_holds_no_envelope(queue):
    ids = [commit(queue, n) for n in range(3 * ENVELOPES)]
    history(queue, ids[0])
    queue.sync()
    for msgid in ids:
        for obj in reached(queue.store.messages[msgid]):
            assert not isinstance(obj, (Envelope, Recipient)), msgid
            assert not (isinstance(obj, str) and "@" in obj), (msgid, obj)


def test_the_store_keeps_a_bounded_number_of_envelopes_decoded(queue):
    ids = [commit(queue, n) for n in range(3 * ENVELOPES)]
    for msgid in ids:
        assert queue.get(msgid).envelope.sender == SENDER
    gc.collect()
    decoded = [o for o in gc.get_objects() if isinstance(o, Envelope)
               and o.envid and o.envid.startswith("env-") and o.helo == "pc.lan"]
    assert len(ids) > ENVELOPES >= len(decoded) > 0


def test_the_envelope_is_read_back_as_its_records_say(queue):
    msgid = commit(queue, 1)
    history(queue, msgid)
    queue.store.envelopes.clear()          # read back from the log, not from the cache
    check(queue.get(msgid).envelope, 1)
    assert queue.get_live(msgid).open == 1


def test_the_envelope_is_read_back_after_compaction_moved_the_message(queue):
    ids = [commit(queue, n) for n in range(200)]      # a few segments
    for msgid in ids:
        history(queue, msgid)
    queue.sync()
    before = {msgid: queue.get(msgid).commit_at for msgid in ids}
    oldest = min(queue.store.journal.segments)
    assert queue.compact()
    assert oldest not in queue.store.journal.segments
    queue.store.envelopes.clear()
    for n, msgid in enumerate(ids):
        msg = queue.get_live(msgid)
        assert msg.commit_at != before[msgid]
        assert all(length == 0 for _, _, length, _ in msg.results()[:1])   # in the copy
        check(msg.envelope, n)
        assert b"".join(queue.body(msgid)).startswith(b"Subject: %d\r\n" % n)


def test_the_envelope_is_read_back_after_recovery(tmp_path, queue):
    ids = [commit(queue, n) for n in range(150)]
    for msgid in ids[:100]:
        history(queue, msgid)
    queue.sync()
    assert queue.compact()
    for msgid in ids[100:]:                 # results after the copies, and without copies
        history(queue, msgid)
    queue.sync()
    queue.close()
    again = Queue(str(tmp_path), segment_size=64 * 1024).open("runner")
    try:
        assert sorted(m.id for m in again.live()) == sorted(ids)
        again.store.envelopes.clear()
        for n, msgid in enumerate(ids):
            check(again.get(msgid).envelope, n)
    finally:
        again.close()


def test_a_message_whose_last_recipient_is_final_leaves_with_its_envelope_readable(queue):
    """The delivery log reads the envelope after the RESULT that finished the message."""
    msgid = commit(queue, 7, rcpts=["only@y.example"])
    msg = queue.get_live(msgid)
    queue.record_result(msgid, 0, Recipient("only@y.example", state=DELIVERED, attempts=1))
    assert queue.get(msgid) is None
    queue.store.envelopes.clear()
    assert msg.envelope.done and msg.envelope.sender == SENDER
