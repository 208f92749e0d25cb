"""Sans-IO protocol engines: bytes in, events out; calls in, bytes out.

Nothing in this package opens a socket or a file, reads a clock or the configuration.
"""


class Sentinel:
    """A named marker an engine returns instead of an event (NEED_DATA, PAUSED)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name
