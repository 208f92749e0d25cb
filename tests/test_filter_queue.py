"""The queue side of content filters (docs/QUEUE.md, docs/FILTERS.md): a verdict is one
COMMIT for the same id that gives the message a new envelope and, for a rewritten text, the
chunks another (own, uncommitted) writer appended. After a reopen (the daemon SIGKILLed)
the message is either as it was or as the verdict says, never without a text; compaction
keeps the adopted text and drops the chunks of a text never adopted."""

from masq.queue import record
from masq.queue.envelope import EXEMPT, Envelope
from masq.queue.spool import Queue

import test_queue_contract as contract
from test_queue_contract import put, text_of

make_queue = contract.make_queue        # the fixture: both backends, disk and memory

ORIGINAL = b"Subject: t\r\n\r\n" + b"original " * 20000          # several chunks


def reopen(queue):
    queue.close()
    return Queue(queue.dir, volatile_ok=True, segment_size=queue.segment_size).open("runner")


def filtered_text(queue, data):
    writer = queue.writer(own=True)
    for at in range(0, len(data), 5000):
        writer.write(data[at:at + 5000])
    return writer


def test_a_verdict_adopts_the_new_text_and_counts_the_filter(make_queue):
    queue = make_queue(segment_size=64 * 1024)
    msgid = put(queue, ORIGINAL)
    new = b"X-Spam-Status: No\r\n" + ORIGINAL
    writer = filtered_text(queue, new)
    env = queue.get_live(msgid).envelope
    queue.recommit(msgid, env.copy(filtered=1), writer)
    queue.sync()
    assert text_of(queue, msgid) == new
    msg = queue.get_live(msgid)
    assert msg.envelope.filtered == 1 and msg.envelope.size == len(new)
    assert [m.id for m in queue.live()] == [msgid]          # the writer's id is no message
    if isinstance(queue, Queue) and queue.dir != ":memory:":
        queue = reopen(queue)
        assert text_of(queue, msgid) == new and queue.get_live(msgid).envelope.filtered == 1
    assert queue.compact()
    assert text_of(queue, msgid) == new and queue.get_live(msgid).envelope.filtered == 1


def test_a_quarantine_keeps_the_text_and_a_release_lets_it_go_on(make_queue):
    from masq.outbound.release import release_each
    queue = make_queue()
    msgid = put(queue, ORIGINAL)
    env = queue.get_live(msgid).envelope
    queue.recommit(msgid, env.copy(quarantined="spam", held_by="pipe:spamc"))
    assert queue.get_live(msgid) is None
    held = queue.get(msgid)
    assert held.quarantined == "spam" and held.envelope.held_by == "pipe:spamc"
    assert queue.compact()
    assert queue.get(msgid).quarantined == "spam"
    assert queue.get(msgid).envelope.held_by == "pipe:spamc"
    assert release_each(queue, [msgid, "nosuch"]) == (
        [msgid], ["nosuch: no such message"])
    msg = queue.get_live(msgid)
    assert msg is not None and msg.envelope.filtered == 1 and msg.envelope.held_by is None
    assert text_of(queue, msgid) == ORIGINAL
    assert release_each(queue, [msgid])[1] == ["%s: not quarantined by a filter" % msgid]


def test_killed_before_the_verdict_the_message_is_as_it_was(tmp_path):
    queue = Queue(str(tmp_path / "spool"), volatile_ok=True,
                  segment_size=64 * 1024).open("runner")
    msgid = put(queue, ORIGINAL)
    writer = filtered_text(queue, b"X-Half: yes\r\n" + ORIGINAL[:100000])
    assert writer.written                       # chunks of the new text are in the log
    queue.sync()
    queue = reopen(queue)                       # the daemon died: no verdict
    assert [m.id for m in queue.live()] == [msgid]
    assert text_of(queue, msgid) == ORIGINAL
    assert queue.get_live(msgid).envelope.filtered == 0
    assert queue.compact()                      # the new text's chunks are garbage
    assert [m.id for m in queue.listed()] == [msgid] and text_of(queue, msgid) == ORIGINAL
    queue.close()


def test_a_verdict_naming_a_text_that_is_not_there_is_not_trusted(make_queue):
    queue = make_queue()
    msgid = put(queue, ORIGINAL)
    env = queue.get_live(msgid).envelope
    writer = queue.writer(own=True)
    writer.write(b"new")
    writer.abort()
    queue.append([(record.COMMIT, msgid, env.copy(text_of="0000000nosuchid").encode())],
                 track=False)
    msg = queue.get(msgid)
    assert msg.quarantined and "not in the log" in msg.quarantined
    assert queue.get_live(msgid) is None          # held, never delivered with a wrong text


def test_the_daemons_own_messages_are_exempt(make_queue):
    queue = make_queue()
    writer = queue.writer(own=True)
    writer.write(b"Subject: dsn\r\n\r\nx\r\n")
    writer.commit(Envelope("", ["a@x.example"], received=1.0))
    assert queue.get_live(writer.id).envelope.filtered == EXEMPT
    assert queue.get_live(put(queue)).envelope.filtered == 0
