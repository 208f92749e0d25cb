"""Tables that grew in a burst give their memory back once it is over (issue 10: "RSS after
the sustained run returns to within 2 MB of where it started").

A dict or set keeps the table it grew to after its entries are deleted; the index of the
queue, the scheduler's in-flight set and the waiting index used to keep, after 20,000
messages relayed, the tables (and, in the waiting index, the ids) of all of them. Checked
here by the size of each table (sys.getsizeof), never by RSS: that is a benchmark figure
(tools/bench_sustained.py).
"""

import sys

from masq.base.host import MessagesQueued
from masq.base.tables import MIN, ShrinkingDict, ShrinkingSet
from masq.outbound.outcome import Outcome
from masq.queue.envelope import DELIVERED, Envelope, Recipient
from masq.queue.spool import Queue

from test_scheduler import Host

BURST = 5000


def test_a_dict_rebuilds_its_table_when_it_shrinks_and_keeps_its_order():
    table = ShrinkingDict()
    for n in range(BURST):
        table["k%d" % n] = n
    grown = sys.getsizeof(table)
    for n in range(BURST - 3):
        if n % 2:
            del table["k%d" % n]
        else:
            assert table.pop("k%d" % n) == n
    assert list(table.items()) == [("k%d" % n, n) for n in range(BURST - 3, BURST)]
    assert sys.getsizeof(table) < grown / 20
    assert table.pop("nothing", None) is None
    assert sys.getsizeof(table) <= sys.getsizeof(dict.fromkeys(range(4 * MIN)))


def test_a_set_rebuilds_its_table_when_it_shrinks():
    items = ShrinkingSet()
    for n in range(BURST):
        items.add((str(n), n))
    grown = sys.getsizeof(items)
    for n in range(BURST - 2):
        items.discard((str(n), n))
    assert items == {(str(BURST - 2), BURST - 2), (str(BURST - 1), BURST - 1)}
    assert sys.getsizeof(items) < grown / 20


def test_the_queue_index_gives_back_its_table_after_a_burst(tmp_path):
    queue = Queue(str(tmp_path)).open("runner")
    try:
        ids = []
        for n in range(BURST):
            writer = queue.writer()
            writer.write(b"Subject: %d\r\n\r\nx\r\n" % n)
            writer.commit(Envelope("s@x.example", ["r@y.example"], received=1.0))
            ids.append(writer.id)
        grown = sys.getsizeof(queue.store.messages)
        for msgid in ids[:-1]:
            queue.record_result(msgid, 0, Recipient("r@y.example", state=DELIVERED))
        assert list(queue.store.messages) == ids[-1:]
        assert sys.getsizeof(queue.store.messages) < grown / 20
    finally:
        queue.close()


def test_the_scheduler_keeps_nothing_of_a_burst_it_delivered(tmp_path):
    host = Host(tmp_path)
    host.route("isp").answer = lambda addr: Outcome.ok()
    ids = [host.send("far%d@example.org" % n) for n in range(BURST // 5)]
    host.scheduler.queued(MessagesQueued(tuple(ids)))
    inflight = host.scheduler.inflight
    host.turn(times=40)
    assert len(host.route("isp").jobs) == len(ids) and host.queue.live() == []
    assert not host.scheduler.inflight and not host.scheduler.tried
    small = sys.getsizeof(set(range(4 * MIN))), sys.getsizeof(dict.fromkeys(range(4 * MIN)))
    assert sys.getsizeof(inflight) <= small[0]
    assert sys.getsizeof(host.scheduler.tried) <= small[1]
    assert all(not waiting for waiting in host.scheduler.waits.by_route.values())
    assert all(sys.getsizeof(waiting) <= small[1]
               for waiting in host.scheduler.waits.by_route.values())
