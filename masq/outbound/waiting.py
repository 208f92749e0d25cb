"""What waits where: which routes have mail waiting, and when waiting recipients fall due.

Owns two indexes the scheduler keeps instead of walking the queue: for each route, the
messages with an undelivered recipient it could take (so `routes()` answers the online
detectors in constant time), and one heap of (retry time, message id) per route plus one
for local recipients (so the next retry, and what is due, are found without looking at
every waiting message). Entries are never updated in place: a newer retry time is pushed
beside the old one, and entries that no longer hold (delivered, removed, retried since, in
flight) are dropped when they reach the top. Nothing here delivers or reads a clock.
"""

import heapq

from masq import route as routes
from masq.base.tables import ShrinkingDict
from masq.queue.envelope import FINAL
from masq.queue.log import LogError

LOCAL = ""          # the heap of local recipients (no route name is empty)


class Waiting:
    """The indexes over a host's queue (host.queue, host.cfg are read at each use: a
    reload changes the routes); `is_local(addr)` and `inflight` come from the scheduler."""

    def __init__(self, host, is_local, inflight):
        self.host = host
        self.is_local = is_local
        self.inflight = inflight        # the scheduler's set of (message id, index)
        self.heaps = {}                 # route name (LOCAL) -> heap of (retry time, id)
        self.by_route = {}              # route name -> {message id: None} that may use it

    def reset(self):
        """Forget everything (a run over the whole queue learns it again)."""
        self.heaps, self.by_route = {}, {}

    def ways(self, env, addr):
        """Return where recipient addr of env may wait: [LOCAL], or route names."""
        if self.is_local(addr):
            return [LOCAL]
        return [r.name for r in self.host.cfg.routes
                if routes.fits(r, env.size) and routes.accepts_message(r, env.sender, ())
                and routes.accepts_recipient(r, addr)]

    def learn(self, msg, push):
        """Note which routes msg waits for; with push, add its retry times to the heaps."""
        try:
            env = msg.envelope
        except LogError:            # cannot be read now: the next full run learns it
            return
        for i, rcpt in enumerate(env.recipients):
            if rcpt.state in FINAL or (msg.id, i) in self.inflight:
                continue
            for key in self.ways(env, rcpt.address):
                if key != LOCAL:
                    ids = self.by_route.get(key)
                    if ids is None:
                        ids = self.by_route[key] = ShrinkingDict()
                    ids[msg.id] = None
                if push and rcpt.next_attempt is not None:
                    heapq.heappush(self.heaps.setdefault(key, []), (rcpt.next_attempt, msg.id))

    def forget(self, msgid):
        """Drop msgid, which waits for nothing any more (its heap entries go when they
        reach the top)."""
        for ids in self.by_route.values():
            ids.pop(msgid, None)

    def routes(self):
        """Return the names of routes that some undelivered remote recipient could use."""
        names = set()
        for name, ids in self.by_route.items():
            gone = []
            for msgid in ids:
                if self._waits_for(name, msgid):
                    names.add(name)
                    break
                gone.append(msgid)
            for msgid in gone:
                del ids[msgid]
        return names

    def _waits_for(self, name, msgid):
        msg = self.host.queue.get_live(msgid)
        if msg is None:
            return False
        try:
            env = msg.envelope
        except LogError:            # cannot be read now: it may wait for any route
            return True
        return any(r.state not in FINAL and name in self.ways(env, r.address)
                   for r in env.recipients)

    def earliest(self, online):
        """Return the earliest retry time on the heaps whose key online(key) accepts."""
        earliest = None
        for key, heap in self.heaps.items():
            if not online(key):
                continue
            while heap and not self._current(heap[0]):
                heapq.heappop(heap)
            if heap and (earliest is None or heap[0][0] < earliest):
                earliest = heap[0][0]
        return earliest

    def _current(self, entry):
        """Return True if a recipient of the entry's message still waits for that time."""
        when, msgid = entry
        msg = self.host.queue.get_live(msgid)
        if msg is None:
            return False
        try:
            recipients = msg.envelope.recipients
        except LogError:            # cannot be read now: the run at that time will say
            return True
        return any(
            r.state not in FINAL and r.next_attempt is not None and r.next_attempt <= when
            and (msgid, i) not in self.inflight for i, r in enumerate(recipients))

    def take_due(self, online, now):
        """Remove and return the ids of messages due by now on the heaps online accepts."""
        ids = {}
        for key, heap in self.heaps.items():
            if online(key):
                while heap and heap[0][0] <= now:
                    ids[heapq.heappop(heap)[1]] = None
        return list(ids)
