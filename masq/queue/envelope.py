"""Envelopes and recipient states: what a COMMIT or RESULT record says, and its encoding.

Owns the payload formats of COMMIT, RESULT, WARNED, REMOVED and QUARANTINED records. Payloads
are JSON (through masq.base.compat): every attacker-controlled field (addresses, HELO names, DSN
parameters, remote reply text) is a JSON string, so no CR, LF or quote in it can forge a
field (docs/QUEUE.md, record format).

A decoding error raises ValueError; the store treats such a record as damage.

Memory: the queue's index holds no Envelope (it reads them back from the log, and keeps
the last few decoded: masq.queue.store); decoded strings are interned (`sys.intern`) so
that the states, the protocol, and the senders and recipients that envelopes read together
share are held once.
"""

import sys

from masq.base import compat

QUEUED, DEFERRED, DELIVERED, BOUNCED = "queued", "deferred", "delivered", "bounced"
STATES = (QUEUED, DEFERRED, DELIVERED, BOUNCED)
FINAL = frozenset((DELIVERED, BOUNCED))

# Envelope attribute -> JSON key (short keys: the COMMIT record is written per message).
_ENVELOPE_KEYS = (
    ("sender", "s"), ("received", "t"), ("size", "z"), ("protocol", "p"),
    ("client", "c"), ("helo", "h"), ("auth_user", "u"), ("origin", "o"),
    ("envid", "e"), ("ret", "ret"), ("body", "b"), ("smtputf8", "8"),
    ("warned", "w"), ("quarantined", "q"), ("fetched", "f"),
    ("filtered", "fl"), ("held_by", "qf"), ("text_of", "tx"), ("replaces", "rp"),
    ("crlf", "cr"), ("kept", "kp"),
)
EXEMPT = -1     # `filtered` of a message no content filter sees (the daemon's own: DSNs,
                # alias forwards; a copy reinjected by an smtp: filter)
_RECIPIENT_KEYS = (
    ("address", "a"), ("orcpt", "or"), ("notify", "n"), ("state", "st"),
    ("attempts", "at"), ("next_attempt", "nx"), ("last_error", "le"),
    ("route", "ro"), ("updated", "up"),
)


class Recipient:
    """One envelope recipient and where its delivery stands."""

    __slots__ = tuple(name for name, _ in _RECIPIENT_KEYS)

    def __init__(self, address, orcpt=None, notify=None, state=QUEUED, attempts=0,
                 next_attempt=None, last_error=None, route=None, updated=None):
        self.address = address
        self.orcpt = orcpt
        self.notify = notify
        self.state = state
        self.attempts = attempts
        self.next_attempt = next_attempt
        self.last_error = last_error
        self.route = route
        self.updated = updated

    @property
    def final(self):
        """Return True once the recipient is delivered or bounced."""
        return self.state in FINAL

    def to_json(self):
        """Return the recipient as a JSON-ready dict, leaving out empty fields."""
        return _pack(self, _RECIPIENT_KEYS, {"a"})

    @classmethod
    def from_json(cls, data):
        """Return a Recipient from the dict to_json made."""
        rcpt = cls(_intern(_text(data["a"])))
        _unpack(rcpt, data, _RECIPIENT_KEYS)
        if rcpt.state not in STATES:
            raise ValueError("bad recipient state %r" % (rcpt.state,))
        return rcpt

    def __repr__(self):
        return "Recipient(%r, %s)" % (self.address, self.state)


class Envelope:
    """The envelope of one queued message: sender, recipients and how it came in."""

    __slots__ = tuple(name for name, _ in _ENVELOPE_KEYS) + ("recipients",)

    def __init__(self, sender, recipients, received=0.0, size=0, protocol="local",
                 client=None, helo=None, auth_user=None, origin=None, envid=None, ret=None,
                 body=None, smtputf8=False, warned=None, quarantined=None, fetched=None,
                 filtered=0, held_by=None, text_of=None, replaces=None, crlf=False,
                 kept=None):
        self.sender = sender
        self.recipients = tuple(r if isinstance(r, Recipient) else Recipient(r)
                                for r in recipients)
        self.received = received
        self.size = size
        self.protocol = protocol
        self.client = client
        self.helo = helo
        self.auth_user = auth_user
        self.origin = origin
        self.envid = envid
        self.ret = ret
        self.body = body
        self.smtputf8 = smtputf8
        self.warned = warned
        self.quarantined = quarantined
        self.fetched = fetched      # "SOURCE UID" of fetched mail (docs/FETCH.md)
        self.filtered = filtered    # content filters passed (docs/FILTERS.md), or EXEMPT
        self.held_by = held_by      # the filter that quarantined it
        self.text_of = text_of      # a COMMIT of a committed message: its text is now the
                                    # pending text of this id (its own id: the text stays)
        self.replaces = replaces    # the id of the message this one replaces (removed by
                                    # this COMMIT: a copy an smtp: filter sent back)
        self.crlf = crlf            # True: the writer made the text CRLF only (its body
                                    # excepted if BINARYMIME); False: unknown, check
        self.kept = kept            # a copy's COMMIT: [[text offset, segment], ...] where
                                    # the text's chunks in that segment stay (docs/QUEUE.md)

    @property
    def done(self):
        """Return True when every recipient is final."""
        return all(r.final for r in self.recipients)

    def copy(self, **changes):
        """Return a new Envelope with the same fields and recipients, and changes."""
        env = Envelope(self.sender, self.recipients)
        for name in self.__slots__:
            setattr(env, name, changes[name] if name in changes else getattr(self, name))
        return env

    def encode(self):
        """Return the COMMIT payload for this envelope."""
        data = _pack(self, _ENVELOPE_KEYS, {"s", "t"})
        data["r"] = [r.to_json() for r in self.recipients]
        return compat.dumps(data).encode("ascii")

    @classmethod
    def decode(cls, payload):
        """Return the Envelope a COMMIT payload holds; ValueError if it is malformed."""
        data = _decode(payload)
        env = cls(_intern(_text(data["s"])), [Recipient.from_json(r) for r in data["r"]])
        _unpack(env, data, _ENVELOPE_KEYS)
        if not env.recipients:
            raise ValueError("envelope without recipients")
        return env


def encode_result(index, rcpt):
    """Return the RESULT payload recording recipient number index's new state."""
    data = rcpt.to_json()
    data["i"] = index
    return compat.dumps(data).encode("ascii")


def decode_result(payload):
    """Return (recipient number, Recipient) from a RESULT payload; ValueError if malformed."""
    data = _decode(payload)
    index = data.get("i")
    if not isinstance(index, int) or index < 0:
        raise ValueError("result for unknown recipient %r" % (index,))
    return index, Recipient.from_json(data)


def apply_result(envelope, payload):
    """Update envelope from a RESULT payload and return the recipient number; ValueError
    if it does not fit."""
    index, new = decode_result(payload)
    if index >= len(envelope.recipients):
        raise ValueError("result for unknown recipient %r" % (index,))
    old = envelope.recipients[index]
    if new.address != old.address:
        raise ValueError("result names another recipient")
    for name in ("orcpt", "notify"):
        setattr(new, name, getattr(old, name))
    rcpts = envelope.recipients
    envelope.recipients = rcpts[:index] + (new,) + rcpts[index + 1:]
    return index


def encode_note(**fields):
    """Return a small JSON payload (WARNED, REMOVED, QUARANTINED records)."""
    return compat.dumps(fields).encode("ascii")


def decode_note(payload):
    """Return the dict a note payload holds; ValueError if it is malformed."""
    return _decode(payload)


def _decode(payload):
    try:
        data = compat.loads(payload.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError("bad record payload: %s" % exc) from None
    if not isinstance(data, dict):
        raise ValueError("bad record payload: not an object")
    return data


def _text(value):
    if not isinstance(value, str):
        raise ValueError("expected a string, got %r" % (value,))
    return value


def _pack(obj, keys, always):
    data = {}
    for name, key in keys:
        value = getattr(obj, name)
        if key in always or value not in (None, False, 0, ""):
            data[key] = value
    return data


_NUMBER = (int, float)
# attribute -> the JSON type of its value (the others are strings); null where the
# attribute's default is None, never for those in _NOT_NULL
_TYPES = {"received": _NUMBER, "size": int, "smtputf8": bool, "crlf": bool, "warned": _NUMBER,
          "filtered": int, "kept": list,
          "attempts": int, "next_attempt": _NUMBER, "updated": _NUMBER}
_NOT_NULL = frozenset(("received", "size", "protocol", "smtputf8", "attempts", "state",
                       "filtered"))


def _unpack(obj, data, keys):
    for name, key in keys:
        if key in data:
            setattr(obj, name, _intern(_typed(name, data[key])))


def _typed(name, value):
    """Return value if it has the JSON type attribute name takes; ValueError if not."""
    kind = _TYPES.get(name, str)
    if (value is None and name not in _NOT_NULL) or (isinstance(value, kind) and (kind is bool
                                                      or not isinstance(value, bool))):
        return value
    raise ValueError("%s: expected %s, got %r" % (name, getattr(kind, "__name__", "a number"),
                                                   value))


def _intern(value):
    """Return value, a str shared with every equal str held (other values as they are)."""
    return sys.intern(value) if type(value) is str else value
