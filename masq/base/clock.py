"""The clock: wall time (for what is stored: arrival, retry times) and monotonic time (for timers).

The loop owns one Clock and every component that needs the time asks the loop
(`loop.now` monotonic, `loop.time()` wall), so tests drive time by handing the loop a fake
clock with the same two methods. Nothing here sleeps.
"""

import time


class Clock:
    """The system's clocks."""

    __slots__ = ()

    def monotonic(self):
        """Return seconds on a clock that never goes back (timers)."""
        return time.monotonic()

    def time(self):
        """Return the wall-clock time in seconds since the epoch (what is stored)."""
        return time.time()

