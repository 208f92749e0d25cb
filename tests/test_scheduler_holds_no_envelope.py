"""A job waiting for its agent holds no envelope data (issue 10, bounded memory).

Under sustained load the agents lag behind arrivals and thousands of jobs wait for a
batch; each used to hold a whole Job (sender, address lists, DSN fields: about 1.2 KB per
message). A waiting item now names its message and recipients only; the Job is built from
the envelope (read back from the queue) when its batch starts.
"""

from masq.base.host import MessagesQueued
from masq.outbound.job import Job
from masq.queue.envelope import Envelope, Recipient

from test_queue_index_no_envelope import reached
from helpers import OFFLINE
from test_scheduler import Host

COUNT = 250


def test_waiting_jobs_hold_no_envelope_and_are_built_when_they_start(tmp_path):
    host = Host(tmp_path)
    agent = host.route("isp")
    held = []
    agent.deliver_many = lambda jobs, done: held.append((jobs, done))    # busy until told
    ids = [host.send("far%d@example.org" % n, sender="s%d@example.org" % n)
           for n in range(COUNT)]
    host.scheduler.queued(MessagesQueued(tuple(ids)))
    host.turn()
    assert len(held) == 1 and len(held[0][0]) < COUNT          # one batch out, the rest wait
    waiting = [item for _, items in host.scheduler.waiting.values() for item in items]
    assert len(waiting) == COUNT - len(held[0][0])
    for item in waiting:              # what the item holds beside the agent, the route's
        data = [getattr(item, name) for name in type(item).__slots__    # config, the
                if name not in ("agent", "route", "usable", "flush")]      # run's test
        for obj in reached(data):
            assert not isinstance(obj, (Job, Envelope, Recipient)), obj
            assert not (isinstance(obj, str) and "@" in obj), obj
    while held:
        jobs, done = held.pop()
        for job in jobs:
            done(job, [host.route("isp").answer(a) for a in job.recipients])
        host.turn()
        for jobs_, _ in held:
            for job in jobs_:
                n = ids.index(job.message_id)
                assert (job.sender, job.recipients) == ("s%d@example.org" % n,
                                                        ["far%d@example.org" % n])
    assert host.queue.live() == []


def test_an_envelope_that_cannot_be_read_is_a_temporary_failure_not_a_crash(tmp_path):
    """Envelopes are read back from the log: an I/O error there (a bad sector under the
    COMMIT) costs that message this run, logged; the scheduler goes on, and once the log
    reads again the message leaves."""
    host = Host(tmp_path, routes="config route 'isp'\n\toption online '" + OFFLINE + "'\n")
    bad = host.arrive("bad@example.org")
    host.arrive("good@example.org")
    store = host.queue.store
    segment = store.journal.segments[store.messages[bad].commit_at[0]]
    where = store.messages[bad].commit_at[1]
    read = segment.read

    def failing(offset, length):
        if offset == where:
            raise OSError(5, "Input/output error")
        return read(offset, length)
    segment.read = failing
    store.envelopes.clear()
    host.set_online("isp", True)
    host.turn()
    assert host.route("isp").delivered() == ["good@example.org"]
    assert any(bad in line and "not tried" in line for line in host.log.lines
               if isinstance(line, str))
    segment.read = read
    host.scheduler.flush("isp")
    host.turn()
    assert host.route("isp").delivered() == ["good@example.org", "bad@example.org"]
    assert host.queue.live() == []
