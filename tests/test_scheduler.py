"""The scheduler as a pure core: route choice, retry times, warnings, batching and results
on a fake clock, the queue in memory (the same facade and index as on disk, see
test_queue_contract.py) and agents that answer as told.

No sockets and no sleeps: the test moves the clock and turns the loop. The queue facade is
wrapped to count what the scheduler asks of it (messages looked at, syncs) and to fail its
writes on demand (disk full).
"""

from masq.base.host import MessagesQueued, RouteChanged
from masq.config import schema as config
from masq.outbound import scheduler as sched
from masq.outbound.outcome import Outcome
from masq.policy.local import Locality
from masq.queue.envelope import Envelope
from masq.queue.memory import MemoryQueue
from masq.queue.spool import LogError, Queue

from fakes import FakeClock, FakeHost
from helpers import OFFLINE

HOUR = 3600.0


class Log:
    def __init__(self):
        self.lines = []

    def _add(self, text, *args):
        self.lines.append(text % args if args else text)

    info = warning = error = debug = _add

    def delivery(self, event):
        self.lines.append(event)


def counting(base):
    """Return a queue class over base (MemoryQueue, or Queue for a test about the disk) that
    counts the scheduler's questions and fails its writes on demand."""

    class CountingQueue(base):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self.looked = 0
            self.syncs = 0
            self.results = 0
            self.full = False

        def get_live(self, msgid):
            self.looked += 1
            return super().get_live(msgid)

        def live(self):
            found = super().live()
            self.looked += len(found)
            return found

        def record_results(self, msgid, rows, warned=None):
            if self.full:
                raise LogError("No space left on device")
            self.results += 1
            super().record_results(msgid, rows, warned)

        def writer(self, msgid=None, own=False):
            if self.full:
                raise LogError("No space left on device")
            return super().writer(msgid, own)

        def sync_now(self):
            if self.sync_pending():
                self.syncs += 1
            super().sync_now()

    return CountingQueue


class Agent:
    """A delivery agent that answers through the loop, as real ones do.

    answer(address) returns an Outcome; batch=True makes it take jobs in batches
    (deliver_many, one connection) like the SMTP agent."""

    def __init__(self, loop, answer=None, batch=True):
        self.loop = loop
        self.answer = answer or (lambda addr: Outcome.ok())
        self.jobs = []
        self.batches = 0
        if batch:
            self.deliver_many = self._deliver_many

    def deliver(self, job, done):
        self.jobs.append(job)
        outcomes = [self.answer(a) for a in job.recipients]
        self.loop.call_soon(lambda: done(outcomes))

    def _deliver_many(self, jobs, done):
        self.batches += 1
        for job in jobs:
            self.jobs.append(job)
            outcomes = [self.answer(a) for a in job.recipients]
            self.loop.call_soon(lambda job=job, outcomes=outcomes: done(job, outcomes))

    def delivered(self):
        return [a for job in self.jobs for a in job.recipients]


class Agents:
    def __init__(self, loop, names):
        self.local = Agent(loop, batch=False)
        self.routes = {name: Agent(loop) for name in names}
        self.is_local = Locality(["test.example"]).is_local

    def for_route(self, route):
        return self.routes[route.name]


class Host(FakeHost):
    """What the scheduler needs: config, loop (fake clock), queue, online state, log."""

    def __init__(self, tmp_path, main="", routes="config route 'isp'\n", disk=False):
        text = ("config masq 'main'\n\toption hostname 'test.example'\n"
                "\toption spool_dir '%s'\n\tlist local_domain 'test.example'\n%s\n%s"
                % (tmp_path / "spool", main, routes))
        self.clock = FakeClock()
        if disk:                      # a test about the disk (a failing sync) itself
            queue = counting(Queue)(str(tmp_path / "spool"), volatile_ok=True,
                                    clock=self.clock).open("runner")
        else:
            queue = counting(MemoryQueue)(clock=self.clock)
        super().__init__(config.loads(text, path="test.conf"), Log(), self.clock, queue)
        self.loop.at_turn_end(self.queue.sync_now)
        self.agents = Agents(self.loop, [r.name for r in self.cfg.routes])
        self.scheduler = sched.Scheduler(self, self.agents)
        self.subscribe(RouteChanged, self.scheduler.route_changed)

    def route(self, name):
        return self.agents.routes[name]

    def send(self, *rcpts, sender="writer@example.org"):
        writer = self.queue.writer()
        writer.write(b"Subject: test\r\nFrom: writer@example.org\r\n\r\nhello\r\n")
        writer.commit(Envelope(sender, list(rcpts), received=self.clock.time()))
        self.queue.sync()
        return writer.id

    def arrive(self, *rcpts, **kw):
        msgid = self.send(*rcpts, **kw)
        self.scheduler.queued(MessagesQueued((msgid,)))
        self.turn()
        return msgid

    def turn(self, times=4):
        for _ in range(times):
            self.loop.run_once(block=False)

    def later(self, seconds):
        """Move the clock and let whatever fell due run."""
        self.clock.advance(seconds)
        self.turn()

    def state(self, msgid, index=0):
        msg = self.queue.get(msgid)
        return None if msg is None else msg.envelope.recipients[index]

    def set_online(self, name, online):
        self.online.detected(name, online, self.clock.time())

    def dsns(self, origin):
        return [m for m in self.queue.live() if m.envelope.origin == origin]


def temp(addr):
    return Outcome.temp("4.4.1", "connection refused")


def test_a_job_carries_whether_its_text_is_known_crlf_only(tmp_path):
    """The SMTP agent skips the line-end check for a text its writer made CRLF only (the
    envelope's crlf); an envelope without it (old mail) is checked."""
    host = Host(tmp_path)
    host.arrive("far@example.org")
    writer = host.queue.writer()
    writer.write(b"Subject: test\r\n\r\nhello\r\n")
    writer.commit(Envelope("w@example.org", ["far@example.org"], received=host.clock.time(),
                           crlf=True))
    host.queue.sync()
    host.scheduler.queued(MessagesQueued((writer.id,)))
    host.turn()
    assert [job.crlf for job in host.route("isp").jobs] == [False, True]


def test_retry_backoff_doubles_up_to_retry_max(tmp_path):
    host = Host(tmp_path, main="\toption retry_interval '5m'\n\toption retry_max '20m'\n")
    host.route("isp").answer = temp
    msgid = host.arrive("far@example.org")
    starts = [host.clock.time()]
    for _ in range(5):
        rcpt = host.state(msgid)
        host.later(rcpt.next_attempt - host.clock.time() - 1)
        assert len(host.route("isp").jobs) == len(starts)       # not before its time
        host.later(1)
        starts.append(host.clock.time())
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps == [300, 600, 1200, 1200, 1200]
    assert host.state(msgid).attempts == 6 and host.state(msgid).state == "deferred"


def test_no_timer_while_the_route_is_offline(tmp_path):
    host = Host(tmp_path, routes="config route 'isp'\n\toption online '" + OFFLINE + "'\n")
    msgid = host.arrive("far@example.org")
    assert host.route("isp").jobs == [] and host.loop.next_deadline() is None
    assert host.scheduler.waiting_routes() == {"isp"}
    host.set_online("isp", True)
    host.turn()
    assert host.route("isp").delivered() == ["far@example.org"]
    assert host.state(msgid) is None                    # delivered: the message is done
    assert host.scheduler.waiting_routes() == set()


def test_a_retry_due_while_offline_waits_for_the_route(tmp_path):
    host = Host(tmp_path, routes="config route 'isp'\n\toption online '" + OFFLINE + "'\n")
    host.set_online("isp", True)
    host.route("isp").answer = temp
    host.arrive("far@example.org")
    assert host.loop.next_deadline() is not None
    host.set_online("isp", False)
    assert host.loop.next_deadline() is None            # offline: no wake-up at all
    host.later(10 * HOUR)
    assert len(host.route("isp").jobs) == 1


def test_queue_lifetime_bounces_at_the_next_attempt(tmp_path):
    host = Host(tmp_path, main="\toption queue_lifetime '1h'\n\toption retry_interval '40m'\n"
                "\toption retry_max '40m'\n")
    host.route("isp").answer = temp
    msgid = host.arrive("far@example.org")
    host.later(40 * 60)
    assert host.state(msgid).state == "deferred" and host.dsns("bounce") == []
    host.later(40 * 60)
    assert host.queue.get_live(msgid) is None           # bounced: final
    (bounce,) = host.dsns("bounce")
    assert bounce.envelope.recipients[0].address == "writer@example.org"
    assert b"gave up after 3 attempts" in b"".join(host.queue.body(bounce.id))


def test_warn_intervals_send_one_warning_per_mark(tmp_path):
    host = Host(tmp_path, main="\tlist warn_intervals '1h'\n\tlist warn_intervals '4h'\n"
                "\toption retry_interval '30m'\n\toption retry_max '30m'\n")
    host.route("isp").answer = lambda addr: (Outcome.ok() if addr == "writer@example.org"
                                             else temp(addr))
    host.arrive("far@example.org")
    seen = []
    for _ in range(12):                                 # six hours, an attempt each 30 min
        host.later(30 * 60)
        seen.append(len([j for j in host.route("isp").jobs if j.sender == ""]))
    assert seen == [0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]


def test_default_warn_intervals_is_delay_warning(tmp_path):
    host = Host(tmp_path, main="\toption delay_warning '2h'\n")
    assert host.cfg.main.warn_intervals == [2 * HOUR]


def two_routes(last=False):
    return ("config route 'a'\n\toption smarthost 'a.example'\n%s\n"
            "config route 'b'\n\toption smarthost 'b.example'\n"
            % ("\toption last_route '1'\n" if last else ""))


def test_temporary_failure_falls_through_to_the_next_route(tmp_path):
    host = Host(tmp_path, routes=two_routes())
    host.route("a").answer = lambda addr: temp(addr) if addr.startswith("x") else Outcome.ok()
    msgid = host.arrive("x@example.org", "y@example.org")
    assert sorted(host.route("a").delivered()) == ["x@example.org", "y@example.org"]
    assert host.route("b").delivered() == ["x@example.org"]
    assert host.queue.get_live(msgid) is None


def test_last_route_keeps_its_recipients(tmp_path):
    host = Host(tmp_path, routes=two_routes(last=True))
    host.route("a").answer = temp
    msgid = host.arrive("x@example.org")
    assert host.route("b").jobs == []
    assert host.state(msgid).state == "deferred" and host.state(msgid).route == "a"


def test_when_every_route_fails_the_last_failure_is_recorded_once(tmp_path):
    host = Host(tmp_path, routes=two_routes())
    host.route("a").answer = temp
    host.route("b").answer = lambda addr: Outcome.temp("4.2.0", "b says later")
    msgid = host.arrive("x@example.org")
    rcpt = host.state(msgid)
    assert (rcpt.attempts, rcpt.route, rcpt.last_error) == (1, "b", "b says later")
    assert host.queue.results == 1
    host.later(rcpt.next_attempt - host.clock.time())   # the next attempt starts at a again
    assert len(host.route("a").jobs) == 2 and len(host.route("b").jobs) == 2


def test_qo_keeps_each_recipient_on_the_route_its_criteria_pick(tmp_path):
    routes = ("config route 'lan'\n\tlist allowed_recipient '*@lan.example'\n"
              "config route 'isp'\n\toption online '" + OFFLINE + "'\n")
    host = Host(tmp_path, routes=routes, main="\toption do_queue '1'\n")
    host.arrive("pc@lan.example", "far@example.org", "me@test.example")
    summary = []
    host.scheduler.flush("isp", forced=True, done=summary.append)
    host.turn()
    assert host.route("lan").delivered() == ["pc@lan.example"]
    assert host.route("isp").delivered() == ["far@example.org"]
    assert host.agents.local.jobs == []                 # -qo makes no local delivery
    assert summary == [{"attempted": 2, "delivered": 2, "deferred": 0, "bounced": 0}]


def test_one_result_per_job_and_one_sync_per_batch(tmp_path):
    host = Host(tmp_path, main="\toption do_queue '1'\n")
    ids = [host.send("r%d@example.org" % i, "s%d@example.org" % i) for i in range(50)]
    host.queue.syncs = 0
    host.scheduler.flush()
    host.turn()
    assert host.route("isp").batches == 1 and len(host.route("isp").jobs) == 50
    assert host.queue.results == 50                     # one RESULT write per job
    assert host.queue.syncs == 1                        # one fdatasync for the batch
    assert all(host.queue.get_live(i) is None for i in ids)


def test_recipients_stay_in_flight_until_their_batch_is_synced(tmp_path):
    host = Host(tmp_path, main="\toption do_queue '1'\n\toption retry_interval '0s'\n")
    host.route("isp").answer = temp
    for i in range(3):
        host.send("r%d@example.org" % i)
    host.scheduler.flush()
    for _ in range(3):
        host.loop._run_soon()                           # the jobs end; no turn end yet
    assert host.scheduler.running == 0
    assert len(host.scheduler.inflight) == 3            # due again, but not yet durable
    host.scheduler.flush()
    assert len(host.route("isp").jobs) == 3             # nothing started twice
    host.turn()
    assert host.scheduler.inflight == set()


def test_arrival_looks_at_the_new_message_only(tmp_path):
    routes = "config route 'isp'\n\toption online '" + OFFLINE + "'\n"
    looked = {}
    for waiting in (10, 1000):
        host = Host(tmp_path / str(waiting), routes=routes)
        for i in range(waiting):
            host.send("r%d@example.org" % i)
        host.scheduler.kick()
        host.turn()
        assert host.scheduler.waiting_routes() == {"isp"}
        before = (host.scheduler.looked, host.queue.looked)
        host.arrive("new@example.org")
        host.scheduler.waiting_routes()                 # what the detectors ask on arrival
        looked[waiting] = (host.scheduler.looked - before[0], host.queue.looked - before[1])
    assert looked[10] == looked[1000]
    assert looked[10][0] == 1


def test_rearming_does_not_walk_the_queue(tmp_path):
    host = Host(tmp_path, main="\toption retry_interval '1h'\n")
    host.route("isp").answer = temp
    for i in range(200):
        host.arrive("r%d@example.org" % i)
    before = host.queue.looked
    host.arrive("new@example.org")                      # attempted, deferred, timer rearmed
    assert host.queue.looked - before < 10


def test_results_that_cannot_be_written_pause_deliveries(tmp_path):
    host = Host(tmp_path, main="\toption do_queue '1'\n\toption retry_interval '1m'\n")
    ids = [host.send("r%d@example.org" % i) for i in range(30)]
    host.queue.full = True
    host.scheduler.flush()
    host.turn()
    assert len(host.route("isp").jobs) == 30
    for _ in range(15):                                 # 150 s of a full disk
        host.later(sched.PROBE)
        host.scheduler.flush()                          # even a flush starts nothing
        host.turn()
    assert len(host.route("isp").jobs) == 30            # no second delivery at all
    assert any("paused" in str(line) for line in host.log.lines)
    host.queue.full = False
    host.later(sched.PROBE)
    assert all(host.queue.get_live(i) is None for i in ids)
    host.later(HOUR)
    host.scheduler.flush()
    host.turn()
    assert len(host.route("isp").jobs) == 30
    new = host.send("after@example.org")                # deliveries resumed
    host.scheduler.flush(ids=[new])
    host.turn()
    assert host.queue.get_live(new) is None and len(host.route("isp").jobs) == 31


def test_local_retry_runs_on_the_timer(tmp_path):
    host = Host(tmp_path, main="\toption retry_interval '10m'\n")
    host.agents.local.answer = lambda addr: Outcome.temp("4.2.1", "mailbox busy")
    msgid = host.arrive("me@test.example")
    host.later(599)
    assert len(host.agents.local.jobs) == 1
    host.agents.local.answer = lambda addr: Outcome.ok()
    host.later(1)
    assert len(host.agents.local.jobs) == 2 and host.queue.get_live(msgid) is None


def test_new_mail_is_waiting_before_the_run(tmp_path):
    """Detectors ask which routes have mail waiting in the same turn as the arrival."""
    host = Host(tmp_path, routes="config route 'isp'\n\toption online '" + OFFLINE + "'\n")
    msgid = host.send("far@example.org")
    host.scheduler.queued(MessagesQueued((msgid,)))
    assert host.scheduler.waiting_routes() == {"isp"}


def test_mail_queued_before_the_start_is_waiting_at_once(tmp_path):
    """The detectors ask at daemon start, before the scheduler's first run."""
    host = Host(tmp_path, routes="config route 'isp'\n\toption online '" + OFFLINE + "'\n")
    host.send("far@example.org")
    fresh = sched.Scheduler(host, host.agents)
    assert fresh.waiting_routes() == {"isp"}
