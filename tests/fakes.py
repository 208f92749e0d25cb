"""Fakes for unit tests: clocks the test drives (no sleeps)."""


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
