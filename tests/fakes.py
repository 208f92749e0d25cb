"""Fakes for unit tests: clocks the test drives (no sleeps), a host for components."""

from masq.base.host import Host
from masq.base.loop import Loop
from masq.online.state import OnlineState
from masq.status import model


class FakeClock:
    """A clock that moves only when the test says: `advance(seconds)`.

    Wall time and monotonic time move together, as on a machine whose clock is not set."""

    def __init__(self, wall=1_800_000_000.0, mono=1000.0):
        self.wall = wall
        self.mono = mono

    def monotonic(self):
        return self.mono

    def time(self):
        return self.wall

    def advance(self, seconds):
        self.wall += seconds
        self.mono += seconds


class Frozen(FakeClock):
    """A clock that never moves: a loop on it runs no timer it did not find due at once
    (proof that an answer came from an event, not from a timeout)."""

    advance = None


class FakeHost(Host):
    """The tests' host (masq.base.host): a configuration, a loop (on the given clock, else
    the real one), the log and queue the test gives, and the routes' online state, whose
    transitions are published as events like the daemon's."""

    def __init__(self, cfg, log, clock=None, queue=None, scheduler=None):
        loop = Loop(clock) if clock is not None else Loop()
        super().__init__(cfg, loop, log, queue=queue, counters=model.new_counters())
        self.online = OnlineState(cfg.routes, loop.time(), self.publish)
        self.scheduler = scheduler
