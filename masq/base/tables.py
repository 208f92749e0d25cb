"""Dicts and sets that give their memory back when they shrink.

A Python dict or set keeps the table it grew to after its entries are deleted, until the
next insertion happens to resize it: a daemon idle after a burst (20,000 messages relayed,
then nothing) would hold every burst-sized table for good. These rebuild their table in
place once they fall to a quarter of the largest size they had (and it was more than
MIN), so the cost is amortised over the deletions that led there. Insertion order is kept.
"""

MIN = 64            # tables this small are not worth rebuilding


class ShrinkingDict(dict):
    """A dict that rebuilds its table after shrinking to a quarter of its peak."""

    __slots__ = ("peak",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.peak = len(self)

    def pop(self, key, *default):
        """Remove key and return its value (or default), as dict.pop."""
        self._before()
        value = dict.pop(self, key, *default)
        self._after()
        return value

    def __delitem__(self, key):
        self._before()
        dict.__delitem__(self, key)
        self._after()

    def _before(self):
        if len(self) > self.peak:       # the largest size shows just before a deletion
            self.peak = len(self)

    def _after(self):
        if self.peak > MIN and len(self) * 4 < self.peak:
            items = list(self.items())
            self.clear()
            self.update(items)
            self.peak = len(self)


class ShrinkingSet(set):
    """A set that rebuilds its table after shrinking to a quarter of its peak."""

    __slots__ = ("peak",)

    def __init__(self, *args):
        super().__init__(*args)
        self.peak = len(self)

    def discard(self, item):
        """Remove item if present, as set.discard."""
        if len(self) > self.peak:
            self.peak = len(self)
        set.discard(self, item)
        if self.peak > MIN and len(self) * 4 < self.peak:
            items = list(self)
            self.clear()
            self.update(items)
            self.peak = len(self)
