"""The content filter stage: each message passes every configured filter once, in order, before routing.

Owns which filter a message is at, running it (at most RUNNING at once; `pipe:` filters
are masq.outbound.filter_pipe, `smtp:` filters masq.outbound.filter_smtp) and recording
its verdict in the queue, where a crash cannot lose it (docs/FILTERS.md):
- the envelope's `filtered` counts the filters passed; a message is held from routing
  while it is below the number of `filter` entries (the daemon's own messages, DSNs and
  alias forwards, and copies an smtp: filter sent back, are EXEMPT);
- pass: one COMMIT gives the message its new text (the filter's output, streamed into the
  log beforehand under a fresh id) and `filtered` + 1; quarantine: the same COMMIT with
  `quarantined` (the reason) and `held_by` (the filter) instead; reject: every open
  recipient bounces, 5.7.1 with the filter's reason; tempfail: the message stays as it
  was and the filter runs again after `retry_interval`, doubling up to `retry_max`
  (counted in memory); a message still not through `queue_lifetime` after arrival bounces.
- the message is routed only once that record is synced (until then the stage holds it).

A crash at any point before the sync leaves the message as it was: it is filtered again,
never lost, never routed unfiltered; a crash after it leaves the verdict. Built only when
`filter` is configured (masq.outbound.delivery): otherwise none of this is imported.
"""

from collections import deque

from masq.outbound import results
from masq.outbound.filter_verdict import Verdict
from masq.outbound.outcome import Outcome
from masq.queue.envelope import EXEMPT
from masq.queue.spool import LogError

RUNNING = 2     # filters running at once


class Stage:
    """Holds unfiltered messages from the scheduler and runs their filters; kick(ids)
    hands a message back to the scheduler once its verdict is durable."""

    def __init__(self, host, kick):
        self.host = host
        self.kick = kick
        self.busy = {}          # id -> the running filter (or None while its verdict syncs)
        self.waiting = deque()  # ids to filter, in arrival order
        self.queued = set()
        self.later = {}         # id -> the Timer of its next try after a tempfail
        self.tries = {}         # id -> tempfails so far

    def holds(self, msg, env):
        """Return True if msg may not be routed now (a filter must see it first, or its
        verdict is not yet durable); start or queue that filter."""
        msgid = msg.id
        if msgid in self.busy:
            return True
        count = len(self.host.cfg.main.filter)
        if env.filtered == EXEMPT or env.filtered >= count:
            return False
        if msgid not in self.later and msgid not in self.queued:
            self.waiting.append(msgid)
            self.queued.add(msgid)
            self.host.loop.call_soon(self._pump)
        return True

    def idle(self):
        """Return True when no filter runs and none waits to start."""
        return not self.busy and not self.waiting

    def stop(self):
        """Kill the running filters (their messages are filtered again) and the timers."""
        for runner in self.busy.values():
            if runner is not None:
                runner.cancel()
        self.busy.clear()
        for timer in self.later.values():
            timer.cancel()
        self.later.clear()
        self.waiting.clear()
        self.queued.clear()

    def _pump(self):
        queue, filters = self.host.queue, self.host.cfg.main.filter
        while self.waiting and len(self.busy) < RUNNING:
            msgid = self.waiting.popleft()
            self.queued.discard(msgid)
            msg = queue.get_live(msgid)
            try:
                env = msg and msg.envelope
            except LogError as exc:
                self.host.log.error("%s: not filtered: %s", msgid, exc)
                continue
            if env is None or env.filtered == EXEMPT or env.filtered >= len(filters):
                continue
            spec = filters[env.filtered]
            runner = _runner(self.host, msgid, env, spec,
                             lambda verdict, msgid=msgid, n=env.filtered, spec=spec:
                             self._done(msgid, n, spec, verdict))
            self.busy[msgid] = runner
            runner.start()

    def _done(self, msgid, number, spec, verdict):
        """Record the verdict of filter number `number` (spec) on msgid."""
        if self.busy.get(msgid) is None:        # stopped meanwhile
            _drop(verdict)
            return
        self.busy[msgid] = None
        queue, log = self.host.queue, self.host.log
        msg = queue.get_live(msgid)
        try:
            env = msg and msg.envelope
            if env is None or env.filtered != number:       # removed meanwhile
                self.tries.pop(msgid, None)
                _drop(verdict)
                self._settled(msgid, (), None)
                return
            if verdict.kind == "sent":         # an smtp: filter took it; no copy yet
                verdict = Verdict("tempfail", "filter accepted the message but its copy "
                                  "has not come back")
            if verdict.kind == "tempfail":
                self._tempfail(msg, env, spec, verdict)
                return
            dsns = self._record(msg, env, number, spec, verdict)
        except LogError as exc:
            _drop(verdict)
            log.error("%s: filter %s: verdict not recorded: %s", msgid, spec, exc)
            self._retry(msgid)
            return
        queue.want_sync(lambda error: self._settled(msgid, dsns, error))

    def _record(self, msg, env, number, spec, verdict):
        """Append the verdict's records; return the DSNs it queued."""
        queue, log = self.host.queue, self.host.log
        self.tries.pop(msg.id, None)
        if verdict.kind == "pass":
            queue.recommit(msg.id, env.copy(filtered=number + 1), verdict.text)
            log.info("%s: passed filter %s", msg.id, spec)
            return ()
        if verdict.kind == "quarantine":
            queue.recommit(msg.id, env.copy(quarantined=verdict.reason, held_by=spec),
                           verdict.text)
            log.warning("%s: quarantined by filter %s: %s", msg.id, spec, verdict.reason)
            return ()
        _drop(verdict)
        return self._bounce(msg, env, "rejected by filter %s: %s" % (spec, verdict.reason))

    def _bounce(self, msg, env, text):
        indices = [i for i, r in enumerate(env.recipients) if not r.final]
        outcomes = [Outcome.perm("5.7.1", text)] * len(indices)
        self.host.log.warning("%s: %s", msg.id, text)
        return results.record(self.host, msg, indices, outcomes, "filter",
                              self.host.loop.time(), True)

    def _tempfail(self, msg, env, spec, verdict):
        _drop(verdict)
        main = self.host.cfg.main
        if self.host.loop.time() - env.received >= main.queue_lifetime:
            dsns = self._bounce(msg, env, "gave up: filter %s failed until the queue "
                                "lifetime ended: %s" % (spec, verdict.reason))
            self.host.queue.want_sync(lambda error: self._settled(msg.id, dsns, error))
            return
        self.host.log.warning("%s: filter %s: %s (tried again later)", msg.id, spec,
                              verdict.reason)
        self._retry(msg.id)

    def _retry(self, msgid):
        """Try msgid's filter again after retry_interval, doubling up to retry_max."""
        self.busy.pop(msgid, None)
        main = self.host.cfg.main
        tries = self.tries[msgid] = self.tries.get(msgid, 0) + 1
        delay = results.backoff(tries, main.retry_interval, main.retry_max)
        self.later[msgid] = self.host.loop.call_later(delay, lambda: self._again(msgid))
        self._pump()

    def _again(self, msgid):
        self.later.pop(msgid, None)
        self.kick([msgid])

    def _settled(self, msgid, dsns, error):
        """The verdict is durable (or its sync failed: it is written again, and the
        message waits for a later try): the scheduler may route the message now."""
        self.busy.pop(msgid, None)
        if error is not None:
            self.host.log.error("%s: filter verdict not synced: %s", msgid, error)
            self._retry(msgid)
            return
        self.kick([msgid] + list(dsns))
        self._pump()


def _runner(host, msgid, env, spec, done):
    if spec.startswith("smtp:"):
        from masq.outbound.filter_smtp import SMTPFilter
        return SMTPFilter(host, msgid, env, spec, done)
    from masq.outbound.filter_pipe import PipeFilter
    return PipeFilter(host, msgid, env, spec, done)


def _drop(verdict):
    if verdict.text is not None:
        verdict.text.abort()
        verdict.text = None
