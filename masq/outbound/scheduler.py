"""The scheduler: which recipients are tried now, through which route, and when next.

Owns delivery runs. A run looks at messages, takes the recipients that are due (never
tried, or their retry time has come) and not in flight, sends local ones to the local agent
and remote ones through the first usable route whose criteria accept them (masq.route), and
hands each group to that route's agent as a Job. Outcomes go to masq.outbound.results.

Route choice and fallback (masqmail's rules): a route never takes a message larger than its
`max_message_size`; a recipient whom no route (online or not) can take for that reason
bounces at once (5.3.4, stating the limit). A recipient that a route fails temporarily is
offered at once to the next usable route that accepts it, unless the failing route has
`last_route`; only the last failure is recorded. `flush ROUTE` with `forced` (`-qo ROUTE`)
uses ROUTE as if it were online beside the online routes, and each recipient still leaves by
the route its criteria pick; no local delivery then.

Triggers: new mail (only the new messages are looked at), `flush [ROUTE]` (due or not), a
route coming online, and one timer for the earliest retry among recipients that have a usable
way out. Retry times wait in one heap per route (and one for local mail), so neither an
arrival nor re-arming the timer walks the queue; `waiting_routes` answers from an index of
which routes have mail waiting (both in masq.outbound.waiting). While no route is online and
nothing is local, no timer runs.

Group commit: the results of one batch (the jobs one agent got together, e.g. one SMTP
connection) are synced with one fdatasync when the batch ends; its recipients stay in flight
until then, so none is tried again before its result is durable. A crash loses at most the
results of the batches in flight: at most one extra delivery per message.

Results that cannot be written (disk full, I/O error): deliveries pause. Batches already
running go on, and their outcomes are kept in memory (their recipients stay in flight);
every PROBE seconds the kept results are written again as the test write; once that write
and its fdatasync succeed, deliveries resume. So an outage costs no extra delivery while
the process lives. A one-shot runner does not wait: what it could not write is tried again
by the next run.

Time comes from the loop (`loop.time()`, wall clock): tests drive it with a fake clock.
Concurrency: at most MAX_JOBS batches at once, at most BATCH jobs per batch.
"""

from collections import deque

from masq import route as routes
from masq.base.tables import ShrinkingDict, ShrinkingSet
from masq.outbound import results
from masq.outbound.job import Job
from masq.outbound.outcome import TEMPFAIL, Outcome
from masq.outbound.waiting import LOCAL, Waiting
from masq.queue.envelope import FINAL
from masq.queue.spool import LogError

MAX_JOBS = 8
BATCH = 100         # jobs one SMTP agent gets at once (one connection per destination)
PROBE = 10.0        # seconds between test writes while results cannot be written


class Flush:
    """A flush waiting for its jobs: done(summary) when the last one ends."""

    def __init__(self, done):
        self.done = done
        self.jobs = 0
        self.summary = {"attempted": 0, "delivered": 0, "deferred": 0, "bounced": 0}

    def finished(self, outcomes):
        """Count one job's final outcomes; call done when it was the last job."""
        self.jobs -= 1
        self.summary["attempted"] += len(outcomes)
        for outcome in outcomes:
            key = {"ok": "delivered", "permfail": "bounced"}.get(outcome.kind, "deferred")
            self.summary[key] += 1
        if self.jobs == 0 and self.done:
            done, self.done = self.done, None
            done(self.summary)


class Item:
    """A job to start (its Job is built when it starts: a waiting item holds no envelope
    data) and what the scheduler needs when it ends."""

    __slots__ = ("name", "agent", "msgid", "route", "job", "indices", "flush", "usable",
                 "from_addrs")

    def __init__(self, name, agent, msgid, route, indices, flush, usable, from_addrs):
        self.name = name                # route name, or "local"
        self.agent = agent
        self.msgid = msgid
        self.route = route              # the route's config section, None for local
        self.job = None                 # the Job, once started
        self.indices = indices          # recipient numbers in the message
        self.flush = flush
        self.usable = usable            # the run's route test, for the fallback
        self.from_addrs = from_addrs


class Batch:
    """Jobs handed to one agent together; their results are synced together."""

    __slots__ = ("scheduler", "agent", "items", "started", "settled", "dsns")

    def __init__(self, scheduler, items, started):
        self.scheduler = scheduler
        self.agent = items[0].agent
        self.items = {id(item.job): item for item in items}
        self.started = started
        self.settled = []               # (message id, index) recorded, not yet synced
        self.dsns = []                  # DSN message ids queued by these results

    def done(self, job, outcomes):
        """An agent reports one job's outcomes (deliver_many's callback)."""
        self.scheduler._job_done(self, job, outcomes)

    def done_only(self, outcomes):
        """An agent reports the batch's only job (deliver's callback)."""
        self.scheduler._job_done(self, next(iter(self.items.values())).job, outcomes)


class Refusal:
    """An agent that answers every recipient with one outcome (a message too large for
    every route that would take it), through the loop as agents do."""

    def __init__(self, loop, outcome):
        self.loop, self.outcome = loop, outcome

    def deliver(self, job, done):
        outcomes = [self.outcome] * len(job.recipients)
        self.loop.call_soon(lambda: done(outcomes))


class Scheduler:
    """Runs deliveries for a host (the daemon, or a one-shot queue runner)."""

    def __init__(self, host, agents):
        self.host = host
        self.loop = host.loop
        self.agents = agents          # agents.for_route(route) / agents.local
        self.inflight = ShrinkingSet()    # (message id, recipient index)
        self.running = 0              # batches handed to agents
        self.busy = set()             # ids of batch agents with a batch in hand
        self.waiting = {}             # id(agent) -> (agent, deque of Items not started yet)
        self.tried = ShrinkingDict()  # (message id, index) -> routes it fell through in this
                                      # attempt (its current route not included)
        self.waits = Waiting(host, self._is_local, self.inflight)
        self.learned = False          # the indexes hold the whole queue (after a full run)
        self.held = []                # (Batch, Item, indices, outcomes, time, counts)
        self.paused = False           # results cannot be written: start nothing
        self.probe = None             # the Timer of the next test write
        self.timer = None
        self.wake = None              # when the retry timer fires
        self.kicked = False
        self.new_ids = []             # new messages to look at in the next run
        self.looked = 0               # messages looked at (tests count the work)
        self.stage = None             # the content filter stage, if `filter` is configured
                                      # (masq.outbound.filters: it holds unfiltered mail)

    # triggers

    def kick(self, ids=None):
        """Run soon for ids (or every message); kicks in one turn make one run."""
        if ids is None:
            self.new_ids = None
        elif self.new_ids is not None:
            self.new_ids.extend(ids)
        if not self.kicked:
            self.kicked = True
            self.loop.call_soon(self._kicked)

    def _kicked(self):
        ids, self.new_ids = self.new_ids, []
        self.kicked = False
        self.run(ids=ids)

    def queued(self, event):
        """New mail (a MessagesQueued event) is noted at once (the detectors ask which
        routes have mail waiting in this same turn) and tried soon (unless do_queue)."""
        ids = event.ids
        for msg in map(self.host.queue.get_live, ids or ()):
            if msg is not None:
                self.waits.learn(msg, push=False)
        if not self.host.cfg.main.do_queue:
            self.kick(ids)

    def route_changed(self, event):
        """A route came online (a RouteChanged event): flush what may use it; went
        offline: rearm the timer."""
        state = event.route
        if state.online:
            self.host.log.info("route %s is online: flushing", state.name)
            self.flush(state.name)
        else:
            self._arm()

    def flush(self, route_name=None, forced=False, done=None, ids=None):
        """Try every pending recipient now (those that leave by route_name, if given)."""
        flush = Flush(done)
        self.run(flush=flush, ignore_times=True, only=route_name, forced=forced, ids=ids)
        if flush.jobs == 0 and flush.done:
            flush.done(flush.summary)

    # a run

    def run(self, flush=None, ignore_times=False, only=None, forced=False, ids=None):
        """Start jobs for every due recipient (of the messages ids, if given)."""
        now = self.loop.time()
        usable = self._usable(only, forced)
        queue = self.host.queue
        if ids is None:
            messages = queue.live()
            self.waits.reset()
        else:
            messages = [m for m in map(queue.get_live, dict.fromkeys(ids)) if m is not None]
        for msg in messages:
            try:
                self._plan(msg, now, usable, ignore_times, only, forced, flush)
                self.waits.learn(msg, push=ids is None)
            except LogError as exc:         # its envelope cannot be read now: next run
                self.host.log.error("%s: not tried: %s", msg.id, exc)
        self.learned = self.learned or ids is None
        self._pump()
        if ids is None:
            self._arm()

    def _usable(self, only, forced):
        online = self.host.online

        def usable(route):
            if forced and route.name == only:
                return True
            state = online.by_name.get(route.name)
            return state is not None and state.online
        return usable

    def _plan(self, msg, now, usable, ignore_times, only, forced, flush):
        self.looked += 1
        env = msg.envelope
        if self.stage is not None and self.stage.holds(msg, env):
            return
        due = [i for i, r in enumerate(env.recipients)
               if r.state not in FINAL and (msg.id, i) not in self.inflight
               and (ignore_times or r.next_attempt is None or r.next_attempt <= now)]
        if not due:
            return
        local = [i for i in due if self._is_local(env.recipients[i].address)]
        if local and only is None:
            self._start("local", self.agents.local, msg, local, None, flush, usable, ())
        remote = [(i, env.recipients[i].address) for i in due if i not in local]
        if not remote:
            return
        from_addrs = self._from_addresses(msg)
        chosen, left = routes.choose(self.host.cfg.routes, usable, env.sender, remote,
                                     from_addrs, size=env.size)
        self._refuse_too_large(msg, left, usable, from_addrs, flush)
        for name, indices in chosen.items():
            if only is not None and not forced and name != only:
                continue            # a route that came online takes only its own recipients
            route = self.host.cfg.route(name)
            self._start(name, self.agents.for_route(route), msg, indices, route, flush,
                        usable, from_addrs)

    def _refuse_too_large(self, msg, indices, usable, from_addrs, flush):
        """Bounce the recipients no route could ever take because the message is too large."""
        env, by_route = msg.envelope, {}
        for i in indices:
            route = routes.too_small(self.host.cfg.routes, env.sender,
                                     env.recipients[i].address, env.size, from_addrs)
            if route is not None:
                by_route.setdefault(route.name, (route, []))[1].append(i)
        for name, (route, picked) in by_route.items():
            outcome = Outcome.perm("5.3.4", "message size %d exceeds the limit of %d of route "
                                   "%s (max_message_size)" % (env.size, route.max_message_size,
                                                             name))
            self._start(name, Refusal(self.loop, outcome), msg, picked, None, flush, usable,
                        from_addrs)

    def _is_local(self, addr):
        return self.agents.is_local(addr)

    def _from_addresses(self, msg):
        if not any(r.allowed_from or r.denied_from for r in self.host.cfg.routes):
            return ()
        from masq.mail import address, message     # only routes with From criteria
        headers = message.split_message(self.host.queue.body(msg.id))[0]
        try:
            return [a for v in headers.get_all("From") for a in address.parse_address_list(v)]
        except address.AddressError:
            return None

    def waiting_routes(self):
        """Return the names of routes that some undelivered remote recipient could use."""
        if not self.learned:                # asked before the first run (daemon start)
            self.waits.reset()
            for msg in self.host.queue.live():
                self.waits.learn(msg, push=True)
            self.learned = True
        return self.waits.routes()

    # jobs

    def _start(self, name, agent, msg, indices, route, flush, usable, from_addrs):
        for i in indices:
            self.inflight.add((msg.id, i))
        if flush is not None:
            flush.jobs += 1
        item = Item(name, agent, msg.id, route, tuple(indices), flush, usable, from_addrs)
        self.waiting.setdefault(id(agent), (agent, deque()))[1].append(item)

    def _job(self, item):
        """Return item's Job, built from its envelope now; None if the message is gone or
        its envelope cannot be read (its recipients are released: the next run tries)."""
        msg = self.host.queue.get_live(item.msgid)
        try:
            env = msg and msg.envelope
        except LogError as exc:
            self.host.log.error("%s: not tried: %s", item.msgid, exc)
            env = None
        if env is None:
            self._release(item.msgid, item.indices)
            if item.flush is not None:
                item.flush.finished([Outcome.temp("4.3.0", "not attempted: message not "
                                                  "readable")] * len(item.indices))
            return None
        rcpts = [env.recipients[i] for i in item.indices]
        route = item.route
        sender, open_body = env.sender, (lambda msgid=msg.id: self.host.queue.body(msgid))
        if route is not None and routes.has_rewrites(route):
            sender, open_body = self.agents.rewrite(route, msg)
        return Job(msg.id, sender, [r.address for r in rcpts], open_body, size=env.size,
                   route=route, notify=[r.notify for r in rcpts], orcpt=[r.orcpt for r in rcpts],
                   envid=env.envid, ret=env.ret, smtputf8=env.smtputf8,
                   body8bit=env.body == "8BITMIME", received=env.received,
                   binary=env.body == "BINARYMIME", crlf=env.crlf)

    def _pump(self):
        """Start waiting jobs; an agent that can takes its waiting jobs in batches, one
        batch at a time (so a failure bounds what is already handed out)."""
        if self.paused:
            self._drop_waiting()
            return
        while self.running < MAX_JOBS:
            items = self._take_batch()
            if not items:
                return
            batch = Batch(self, items, self.loop.time())
            agent = batch.agent
            self.running += 1
            if hasattr(agent, "deliver_many"):
                self.busy.add(id(agent))
                agent.deliver_many([item.job for item in items], batch.done)
            else:
                agent.deliver(items[0].job, batch.done_only)

    def _take_batch(self):
        """Return the next jobs to start together (none if every waiting agent is busy).

        Looks at each agent once, not at each waiting job: the jobs wait per agent, and an
        agent that got a batch goes to the back of the line. Each job is built now."""
        while True:
            for key, (agent, items) in self.waiting.items():
                if key not in self.busy:
                    break
            else:
                return []
            size = BATCH if hasattr(agent, "deliver_many") else 1
            batch = [items.popleft() for _ in range(min(size, len(items)))]
            del self.waiting[key]
            if items:
                self.waiting[key] = (agent, items)
            for item in batch:
                item.job = self._job(item)
            batch = [item for item in batch if item.job is not None]
            if batch:
                return batch

    def _drop_waiting(self):
        """Forget jobs not started yet (results cannot be written): they run again later."""
        waiting, self.waiting = self.waiting, {}
        for _, items in waiting.values():
            for item in items:
                self._release(item.msgid, item.indices)
                if item.flush is not None:
                    item.flush.finished([Outcome.temp("4.3.1", "not attempted: queue not "
                                                      "writable")] * len(item.indices))

    def _release(self, msgid, indices):
        for i in indices:
            self.inflight.discard((msgid, i))
            self.tried.pop((msgid, i), None)

    # outcomes

    def _job_done(self, batch, job, outcomes):
        item = batch.items.pop(id(job), None)
        if item is None:
            self.host.log.error("%s: an agent reported a job twice", job.message_id)
            return
        if not batch.items:
            self.running -= 1
            self.busy.discard(id(batch.agent))
        final = self._fall_through(item, outcomes)
        indices = [i for i, _ in final]
        outcomes = [o for _, o in final]
        if indices:
            self._settle(batch, item, indices, outcomes)
        if item.flush is not None:
            item.flush.finished(outcomes)
        if not batch.items:
            self._batch_ended(batch)
        self._pump()

    def _fall_through(self, item, outcomes):
        """Offer temporarily failed recipients to the next usable route (unless the route
        is a last_route); return [(index, outcome)] of those that stay with this result."""
        pairs = list(zip(item.indices, outcomes))
        route = item.job.route
        again = [(i, a) for (i, o), a in zip(pairs, item.job.recipients)
                 if o.kind == TEMPFAIL]
        if route is None or route.last_route or not again or self.paused:
            return pairs
        msg = self.host.queue.get_live(item.job.message_id)
        if msg is None:
            return pairs
        after = {i: self.tried.get((msg.id, i), ()) + (item.name,) for i, _ in again}
        remote = [(i, msg.envelope.recipients[i].address) for i, _ in again]
        chosen, _ = routes.choose(self.host.cfg.routes, item.usable, msg.envelope.sender,
                                  remote, item.from_addrs, after=after, size=msg.envelope.size)
        moved = set()
        for name, indices in chosen.items():
            for i in indices:
                self.tried[(msg.id, i)] = after[i]
            nxt = self.host.cfg.route(name)
            self._start(name, self.agents.for_route(nxt), msg, indices, nxt, item.flush,
                        item.usable, item.from_addrs)
            moved.update(indices)
        return [(i, o) for i, o in pairs if i not in moved]

    def _settle(self, batch, item, indices, outcomes):
        """Record a job's outcomes (or keep them while results cannot be written)."""
        msgid = item.job.message_id
        msg = self.host.queue.get(msgid)
        if msg is None or not msg.committed or msg.removed:
            self._release(msgid, indices)
            return
        counts = item.name == "local" or self._still_online(item.name, batch.started)
        held = (batch, item, indices, outcomes, self.loop.time(), counts)
        if self.paused:
            self.held.append(held)
            return
        try:
            self._write(held)
        except LogError as exc:
            self.held.append(held)
            self._pause(exc)

    def _write(self, held):
        batch, item, indices, outcomes, when, counts = held
        msg = self.host.queue.get(item.job.message_id)
        if msg is None or not msg.committed or msg.removed:
            self._release(item.job.message_id, indices)
            return
        batch.dsns += results.record(self.host, msg, indices, outcomes, item.name, when,
                                     counts)
        self._note_route(item.name, outcomes, when)
        batch.settled += [(msg.id, i) for i in indices]
        for i in indices:
            self.tried.pop((msg.id, i), None)

    def _batch_ended(self, batch):
        if batch.settled or batch.dsns:
            self.host.queue.want_sync(lambda error, batch=batch: self._synced(batch, error))

    def _synced(self, batch, error):
        """The batch's results are durable (or the sync failed): its recipients may be
        tried again, its DSNs may leave, the retry timer learns the new times."""
        for key in batch.settled:
            self.inflight.discard(key)
        if error is not None:
            self._pause(error)
        elif batch.dsns:
            self.kick(batch.dsns)
        queue = self.host.queue
        for msgid in dict.fromkeys(msgid for msgid, _ in batch.settled):
            msg = queue.get_live(msgid)
            if msg is not None:
                self.waits.learn(msg, push=True)
            else:
                self.waits.forget(msgid)
        self._arm()

    def _still_online(self, name, started):
        state = self.host.online.by_name.get(name)
        return state is None or (state.online and state.since <= started)

    def _note_route(self, name, outcomes, when):
        state = self.host.online.by_name.get(name)
        if state is None:
            return
        for outcome in outcomes:
            if outcome.is_ok:
                state.last_delivery = when
            else:
                state.last_error = outcome.text

    # results that cannot be written

    def _pause(self, error):
        """Start no delivery until a test write succeeds."""
        if not self.paused:
            self.host.log.error("cannot record delivery results (%s): deliveries paused "
                                "until the queue can be written", error)
        self.paused = True
        self._drop_waiting()
        if self.probe is None:
            self.probe = self.loop.call_later(PROBE, self._test_write)

    def _test_write(self):
        """Write the kept results again; resume once they (and a sync) succeed."""
        self.probe = None
        while self.held:
            try:
                self._write(self.held[0])
            except LogError:
                self.probe = self.loop.call_later(PROBE, self._test_write)
                return
            batch = self.held.pop(0)[0]
            if not batch.items and batch not in (h[0] for h in self.held):
                self._batch_ended(batch)
        self.host.queue.want_sync(self._test_synced)

    def _test_synced(self, error):
        if error is not None:
            self.probe = self.loop.call_later(PROBE, self._test_write)
            return
        self.paused = False
        self.host.log.info("delivery results can be written again: deliveries resume")
        self.kick()

    # the retry timer

    def _online(self, key):
        if key == LOCAL:
            return True
        state = self.host.online.by_name.get(key)
        return state is not None and state.online

    def _arm(self):
        """Set one timer for the earliest retry that could leave now."""
        earliest = self.waits.earliest(self._online)
        if earliest == self.wake and self.timer is not None:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer, self.wake = None, None
        if earliest is not None:
            self.wake = earliest
            self.timer = self.loop.call_later(max(0.0, earliest - self.loop.time()),
                                              self._timer_fired)

    def _timer_fired(self):
        self.timer, self.wake = None, None
        self.run(ids=self.waits.take_due(self._online, self.loop.time()))
        self._arm()

    def idle(self):
        """Return True when no delivery is in flight or waiting (compaction may run)."""
        return self.running == 0 and not self.waiting and (
            self.stage is None or self.stage.idle())

    def stop(self):
        """Cancel the timers (jobs in flight are abandoned: they will be retried)."""
        if self.held:
            self.host.log.error("%d delivery result(s) could not be written: those "
                                "recipients will be tried again" % len(self.held))
        if self.probe is not None:
            self.probe.cancel()
            self.probe = None
        if self.stage is not None:
            self.stage.stop()
        if self.timer is not None:
            self.timer.cancel()
            self.timer, self.wake = None, None
