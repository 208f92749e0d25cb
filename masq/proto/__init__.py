"""Sans-IO protocol engines: bytes in, events out; calls in, bytes out.

Nothing in this package opens a socket or a file, reads a clock or the configuration.
Events and results are small immutable records made with `frozen` below: what
`dataclasses.dataclass(frozen=True)` gives, without importing dataclasses and inspect
(about 3 MB of RSS on a router).
"""


class Sentinel:
    """A named marker an engine returns instead of an event (NEED_DATA, PAUSED)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


NEED_DATA = Sentinel("NEED_DATA")   # every engine's "feed more bytes with receive_data()"


class Factory:
    """A default made anew for each record (dataclasses' default_factory)."""

    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


def frozen(cls):
    """Make an annotated class an immutable record: __init__, __eq__, __hash__, __repr__.

    Fields are the class annotations in order; a class value is the default (a Factory is
    called per record); names listed in `_hidden` stay out of repr (passwords).
    """
    names = tuple(cls.__dict__.get("__annotations__", ()))
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    hidden = frozenset(cls.__dict__.get("_hidden", ()))

    def __init__(self, *args, **kwargs):
        if len(args) > len(names):
            raise TypeError("%s takes at most %d arguments" % (cls.__name__, len(names)))
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names or key in values:
                raise TypeError("%s: unexpected or repeated argument %r" % (cls.__name__, key))
            values[key] = value
        for name in names:
            if name not in values:
                if name not in defaults:
                    raise TypeError("%s: missing argument %r" % (cls.__name__, name))
                default = defaults[name]
                values[name] = default.make() if isinstance(default, Factory) else default
            object.__setattr__(self, name, values[name])

    def values(self):
        return tuple(getattr(self, name) for name in names)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return values(self) == values(other)

    def __repr__(self):
        return "%s(%s)" % (cls.__qualname__, ", ".join(
            "%s=%r" % (name, getattr(self, name)) for name in names if name not in hidden))

    def __setattr__(self, name, value):
        raise AttributeError("%s is immutable" % cls.__name__)

    cls.__init__, cls.__eq__, cls.__repr__ = __init__, __eq__, __repr__
    cls.__hash__ = lambda self: hash((cls.__name__,) + values(self))
    cls.__setattr__ = cls.__delattr__ = __setattr__
    cls._fields = names
    return cls


def replace(record, **changes):
    """Return a copy of a frozen record with some fields changed."""
    values = {name: getattr(record, name) for name in record._fields}
    values.update(changes)
    return type(record)(**values)
