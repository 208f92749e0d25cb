"""The scheduler: which recipients are tried now, through which agent, and when next.

Owns delivery runs. A run looks at every live message, takes the recipients that are due
(never tried, or their retry time has come) and not in flight, sends local ones to the local
agent and remote ones through the first usable route that accepts them (masq.route), and
hands each group to that route's agent as a Job. Outcomes go to masq.outbound.results.

Triggers: new mail, `flush [ROUTE]` (due or not; `forced` uses the route as if it were
online, like masqmail's `-qo`), a route coming online, and one timer set for the earliest
retry among recipients that have a usable way out. While no route is online and nothing is
local, no timer runs and no connection is attempted.

Concurrency: at most MAX_JOBS jobs at once; SMTP jobs of one run are given to their agent
together so that one connection carries several messages.
"""

import time

from masq import address, message, route as routes
from masq.outbound import results
from masq.outbound.job import Job
from masq.outbound.outcome import Outcome
from masq.queue.envelope import FINAL
from masq.queue.log import LogError

MAX_JOBS = 8
BATCH = 100         # jobs one SMTP agent gets at once (one connection per destination)
STALL = 60.0        # seconds without new deliveries after results could not be written


class Flush:
    """A flush waiting for its jobs: done(summary) when the last one ends."""

    def __init__(self, done):
        self.done = done
        self.jobs = 0
        self.summary = {"attempted": 0, "delivered": 0, "deferred": 0, "bounced": 0}

    def finished(self, outcomes):
        self.jobs -= 1
        self.summary["attempted"] += len(outcomes)
        for outcome in outcomes:
            key = {"ok": "delivered", "permfail": "bounced"}.get(outcome.kind, "deferred")
            self.summary[key] += 1
        if self.jobs == 0 and self.done:
            done, self.done = self.done, None
            done(self.summary)


class Scheduler:
    """Runs deliveries for a host (the daemon, or a one-shot queue runner)."""

    def __init__(self, host, agents):
        self.host = host
        self.loop = host.loop
        self.agents = agents          # agents.for_route(route) / agents.local
        self.inflight = set()         # (message id, recipient index)
        self.running = 0
        self.busy = set()             # ids of batch agents with a batch in hand
        self.waiting = []             # (agent kind, agent, jobs, flush)
        self.timer = None
        self.stalled = None           # a Timer while results cannot be written
        self.wake = None              # when the timer fires
        self.kicked = False
        self.new_ids = []             # new messages to look at in the next run

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

    def on_event(self, event, **data):
        """React to daemon events: new mail is tried at once (unless do_queue)."""
        if event == "new" and not self.host.cfg.main.do_queue:
            self.kick(data.get("ids"))

    def route_changed(self, state):
        """A route came online: flush what may use it; went offline: rearm timers."""
        if state.online:
            self.host.log.info("route %s is online: flushing", state.name)
            self.flush(state.name)
        else:
            self._arm()

    def flush(self, route_name=None, forced=False, done=None, ids=None):
        """Try every pending recipient now (those that may use route_name, if given)."""
        flush = Flush(done)
        self.run(flush=flush, ignore_times=True, only=route_name, forced=forced, ids=ids)
        if flush.jobs == 0 and flush.done:
            flush.done(flush.summary)

    # a run

    def run(self, flush=None, ignore_times=False, only=None, forced=False, ids=None):
        """Start jobs for every due recipient (of the messages ids, if given)."""
        now = time.time()
        usable = self._usable(only, forced)
        queue = self.host.queue
        if ids is None:
            messages = queue.live()
        else:
            messages = [m for m in map(queue.get_live, dict.fromkeys(ids)) if m is not None]
        for msg in messages:
            self._plan(msg, now, usable, ignore_times, only, flush)
        self._pump()
        if ids is None:
            self._arm()

    def _usable(self, only, forced):
        online = self.host.online

        def usable(route):
            if only is not None and route.name != only:
                return False
            if forced and route.name == only:
                return True
            return online.by_name[route.name].online
        return usable

    def _plan(self, msg, now, usable, ignore_times, only, flush):
        env = msg.envelope
        due = [i for i, r in enumerate(env.recipients)
               if r.state not in FINAL and (msg.id, i) not in self.inflight
               and (ignore_times or r.next_attempt is None or r.next_attempt <= now)]
        if not due:
            return
        local = [i for i in due if self._is_local(env.recipients[i].address)]
        if local and only is None:
            self._start("local", self.agents.local, msg, local, None, flush)
        remote = [(i, env.recipients[i].address) for i in due if i not in local]
        if not remote:
            return
        chosen, _ = routes.choose(self.host.cfg.routes, usable, env.sender, remote,
                                  self._from_addresses(msg))
        for name, indices in chosen.items():
            route = self.host.cfg.route(name)
            self._start(name, self.agents.for_route(route), msg, indices, route, flush)

    def _is_local(self, addr):
        domain = addr.rpartition("@")[2].lower()
        return not domain or domain in self.agents.local_domains

    def _from_addresses(self, msg):
        if not any(r.allowed_from or r.denied_from for r in self.host.cfg.routes):
            return ()
        headers = message.split_message(self.host.queue.body(msg.id))[0]
        try:
            return [a for v in headers.get_all("From") for a in address.parse_address_list(v)]
        except address.AddressError:
            return None

    # jobs

    def _start(self, name, agent, msg, indices, route, flush):
        env = msg.envelope
        rcpts = [env.recipients[i] for i in indices]
        sender, open_body = env.sender, (lambda: self.host.queue.body(msg.id))
        if route is not None and routes.has_rewrites(route):
            sender, open_body = self.agents.rewrite(route, msg)
        job = Job(msg.id, sender, [r.address for r in rcpts], open_body, size=env.size,
                  route=route, notify=[r.notify for r in rcpts], orcpt=[r.orcpt for r in rcpts],
                  envid=env.envid, ret=env.ret, smtputf8=env.smtputf8,
                  body8bit=env.body == "8BITMIME", received=env.received)
        for i in indices:
            self.inflight.add((msg.id, i))
        if flush is not None:
            flush.jobs += 1
        self.waiting.append((name, agent, job, indices, flush))

    def _stall(self, error):
        """Results cannot be written (disk full, I/O error): start nothing new for a while.

        Deliveries whose results are lost are made again later (duplicates, bounded by the
        jobs already handed to agents); waiting jobs are dropped, not started (FAULTS #47).
        """
        if self.stalled is None:
            self.host.log.error("cannot record delivery results (%s): no new deliveries "
                                "for %d s", error, STALL)
            self.stalled = self.loop.call_later(STALL, self._unstall)
        waiting, self.waiting = self.waiting, []
        for _, _, job, indices, flush in waiting:
            for i in indices:
                self.inflight.discard((job.message_id, i))
            if flush is not None:
                flush.finished([Outcome.temp("4.3.1", "not attempted: queue not writable")]
                               * len(indices))

    def _unstall(self):
        self.stalled = None
        self.kick()

    def _pump(self):
        """Start waiting jobs; an agent that can takes its waiting jobs in batches, one
        batch at a time (so a failure bounds what is already handed out)."""
        if self.stalled is not None:
            self._stall("still")
            return
        while self.running < MAX_JOBS:
            batch = self._take_batch()
            if not batch:
                return
            agent = batch[0][1]
            self.running += 1
            if hasattr(agent, "deliver_many"):
                self.busy.add(id(agent))
            started = time.time()
            by_job = {id(item[2]): item for item in batch}
            left = [len(batch)]

            def done_each(job, outcomes, by_job=by_job, left=left, started=started,
                          agent=agent):
                name, _, _, indices, flush = by_job[id(job)]
                left[0] -= 1
                if left[0] == 0:
                    self.running -= 1
                    self.busy.discard(id(agent))
                self._done(name, job, indices, outcomes, flush, started)
            if hasattr(agent, "deliver_many"):
                agent.deliver_many([item[2] for item in batch], done_each)
            else:
                job = batch[0][2]
                agent.deliver(job, lambda outcomes, job=job: done_each(job, outcomes))

    def _take_batch(self):
        """Return the next jobs to start together (none if every waiting agent is busy)."""
        first = next((i for i, item in enumerate(self.waiting)
                      if id(item[1]) not in self.busy), None)
        if first is None:
            return []
        head = self.waiting.pop(first)
        if not hasattr(head[1], "deliver_many"):
            return [head]
        batch, rest = [head], []
        for item in self.waiting:
            (batch if item[1] is head[1] and len(batch) < BATCH else rest).append(item)
        self.waiting = rest
        return batch

    def _done(self, name, job, indices, outcomes, flush, started):
        for i in indices:
            self.inflight.discard((job.message_id, i))
        msg = self.host.queue.get(job.message_id)
        if msg is not None and msg.committed and not msg.removed:
            counts = name == "local" or self._still_online(name, started)
            try:
                queued_dsn = results.record(self.host, msg, indices, outcomes, name,
                                            time.time(), counts)
            except LogError as exc:
                self._stall(exc)
            else:
                self._note_route(name, outcomes)
                self.host.queue.want_sync(
                    lambda error: self._synced(error, queued_dsn))
        if flush is not None:
            flush.finished(outcomes)
        self._pump()
        if msg is not None and msg.live:
            self._arm_for(msg)

    def _synced(self, error, queued_dsn):
        if error is not None:
            self.host.log.error("cannot sync delivery results: %s", error)
        elif queued_dsn:
            self.kick(queued_dsn)

    def _still_online(self, name, started):
        state = self.host.online.by_name.get(name)
        return state is None or (state.online and state.since <= started)

    def _note_route(self, name, outcomes):
        state = self.host.online.by_name.get(name)
        if state is None:
            return
        for outcome in outcomes:
            if outcome.is_ok:
                state.last_delivery = time.time()
            else:
                state.last_error = outcome.text

    # the retry timer

    def _arm(self):
        """Set one timer for the earliest retry that could leave now."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer, self.wake = None, None
        usable = self._usable(None, False)
        for msg in self.host.queue.live():
            self._arm_for(msg, usable)

    def _arm_for(self, msg, usable=None):
        """Bring the timer forward if msg's next retry comes before it."""
        when = self._next_time(msg, usable or self._usable(None, False))
        if when is None or (self.wake is not None and self.wake <= when):
            return
        if self.timer is not None:
            self.timer.cancel()
        self.wake = when
        self.timer = self.loop.call_later(max(0.0, when - time.time()), self._timer_fired)

    def _next_time(self, msg, usable):
        env = msg.envelope
        times = []
        for i, rcpt in enumerate(env.recipients):
            if rcpt.state in FINAL or (msg.id, i) in self.inflight or rcpt.next_attempt is None:
                continue
            if self._is_local(rcpt.address) or any(
                    usable(r) and routes.accepts_recipient(r, rcpt.address)
                    for r in self.host.cfg.routes):
                times.append(rcpt.next_attempt)
        return min(times) if times else None

    def _timer_fired(self):
        self.timer, self.wake = None, None
        self.run()

    def waiting_routes(self):
        """Return the names of routes that some undelivered remote recipient could use."""
        names = set()
        for msg in self.host.queue.live():
            env = msg.envelope
            for rcpt in env.recipients:
                if rcpt.state in FINAL or self._is_local(rcpt.address):
                    continue
                for r in self.host.cfg.routes:
                    if r.name not in names and routes.accepts_message(r, env.sender, ()) \
                            and routes.accepts_recipient(r, rcpt.address):
                        names.add(r.name)
        return names

    def idle(self):
        """Return True when no delivery is in flight or waiting (compaction may run)."""
        return self.running == 0 and not self.waiting

    def stop(self):
        """Cancel the timers (jobs in flight are abandoned: they will be retried)."""
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer, self.wake = None, None

