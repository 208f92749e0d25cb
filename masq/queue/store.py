"""The queue's index: what the log says about each message, rebuilt by scanning it.

Owns the in-memory view of the log (`Message` per id: envelope, body chunk offsets, bytes
used), recovery (torn tail cut, damage in the middle quarantined), and the operations that
append records: writing a body, committing it, recording results, removing.

Memory: the index holds only unfinished messages (live, quarantined, or still being
written); a message leaves it as soon as its last recipient is final, it is removed, or its
writer aborts, and later records for an id the index no longer holds are dead bytes. Per
message it keeps its envelope (repeated strings shared, see envelope.py) and a flat tuple of
(offset, length) per body chunk of up to 64 KiB; bodies stay in the log and are read back in
chunks. `tools/bench_queue.py` measures the bytes per waiting message.

The store stores; it does not schedule (STYLE.md rule 5). Group commit is `want_sync`
plus `sync_now` at the end of a loop turn. Crash states and their recovery rules are in
docs/QUEUE.md.
"""

import os
import time

from masq.queue import envelope as env_mod
from masq.queue import record
from masq.queue.log import Log, LogError

CHUNK = 64 * 1024
RECENT = 64     # finished messages whose bodies stay readable (a bounce built after the last result)
_ALPHABET = "0123456789abcdefghijklmnopqrstuv"


def new_id(now=None):
    """Return a fresh message id: 7 base-32 digits of time, 7 of randomness."""
    seconds = int(now if now is not None else time.time())
    rand = int.from_bytes(os.urandom(5), "big") >> 5
    return _b32(seconds, 7) + _b32(rand, 7)


def _b32(value, width):
    out = []
    for _ in range(width):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


class Message:
    """One unfinished message as the log describes it."""

    __slots__ = ("id", "envelope", "at", "bytes", "removed", "aborted", "quarantined")

    def __init__(self, msgid):
        self.id = msgid
        self.envelope = None
        self.at = ()          # body chunks, flat: (offset, length, offset, length, ...)
        self.bytes = 0        # log bytes its records use
        self.removed = False
        self.aborted = False
        self.quarantined = None

    @property
    def committed(self):
        """Return True once the COMMIT record has been seen."""
        return self.envelope is not None

    @property
    def live(self):
        """Return True while the message has recipients left to deliver."""
        return (self.committed and not self.removed and not self.quarantined
                and not self.envelope.done)

    @property
    def kept(self):
        """Return True if compaction must keep the message."""
        return self.live or (self.quarantined is not None and not self.removed)

    @property
    def finished(self):
        """Return True once nothing will happen to the message any more (it leaves the index)."""
        if self.removed or self.aborted:
            return True
        return self.committed and not self.kept

    @property
    def size(self):
        """Return the size of the message text in bytes."""
        return sum(self.at[1::2])


class Store:
    """The index over one log; `apply` feeds it records in log order.

    A store opened only to append (`sendmail`, `-bs`) is not `indexed`: it keeps no index,
    so appending decodes nothing (and `sendmail` never imports json)."""

    def __init__(self, log, indexed=True):
        self.log = log
        self.indexed = indexed
        self.messages = {}        # id -> Message, unfinished messages only, in arrival order
        self.kept_bytes = 0       # log bytes of the messages compaction must keep
        self.recent = {}          # id -> Message, the last RECENT messages that finished
        self.damage = []
        self.sync_waiters = []

    # reading the log

    def get(self, msgid):
        """Return the Message with this id, creating an empty one if unknown."""
        msg = self.messages.get(msgid)
        if msg is None:
            msg = self.messages[msgid] = Message(msgid)
        return msg

    def apply(self, item):
        """Update the index from one scanned Record or Damage."""
        if not self.indexed:
            return
        if isinstance(item, record.Damage):
            self._damaged(item)
            return
        msgid = item.msgid.decode("ascii")
        msg = self.messages.get(msgid)
        if msg is None:
            if item.type != record.BODY and item.type != record.COMMIT:
                return            # a record of a finished message: dead bytes
            msg = self.messages[msgid] = Message(msgid)
        was_kept = msg.kept
        old_bytes = msg.bytes
        msg.bytes += record.OVERHEAD + item.length
        try:
            _APPLY[item.type](msg, item)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            msg.quarantined = msg.quarantined or "bad %s record: %s" % (chr(item.type), exc)
        self._track(msg, was_kept, old_bytes)

    def _track(self, msg, was_kept, old_bytes):
        """Keep the kept-bytes total in step with msg's change; drop msg once finished."""
        self.kept_bytes += (msg.bytes if msg.kept else 0) - (old_bytes if was_kept else 0)
        if msg.finished and self.messages.pop(msg.id, None) is not None:
            recent = self.recent
            recent[msg.id] = msg
            if len(recent) > RECENT:
                del recent[next(iter(recent))]

    def _damaged(self, damage):
        self.damage.append(damage)
        if damage.msgid:
            msg = self.get(damage.msgid.decode("ascii"))
            was_kept, old_bytes = msg.kept, msg.bytes
            msg.quarantined = "damaged record at offset %d" % damage.offset
            self._track(msg, was_kept, old_bytes)

    def forget(self, msgid):
        """Drop a message from the index (after compaction removed it)."""
        msg = self.messages.pop(msgid, None)
        if msg is not None:
            self.kept_bytes -= msg.bytes if msg.kept else 0

    # views

    def live(self):
        """Return the live messages in arrival order."""
        return [m for m in self.messages.values() if m.live]

    def listed(self):
        """Return messages mailq shows: live and quarantined, in arrival order."""
        return [m for m in self.messages.values() if m.kept and m.committed]

    def body(self, msgid):
        """Yield the message text of msgid in chunks."""
        msg = self.messages.get(msgid) or self.recent.get(msgid)
        if msg is None:
            raise LogError("%s: message %s is no longer in the queue" % (self.log.path, msgid))
        at = msg.at
        for i in range(0, len(at), 2):
            yield self.log.read(at[i], at[i + 1])

    def live_bytes(self):
        """Return the log bytes used by messages compaction must keep."""
        return self.kept_bytes

    def dead_bytes(self):
        """Return the log bytes compaction would free."""
        return self.log.end - record.FILE_HEADER_SIZE - self.live_bytes()

    # writing

    def append(self, records):
        """Append [(type, msgid, payload)] as one write and index them; return offset."""
        data = b"".join(self.log.encode(t, i.encode("ascii"), p) for t, i, p in records)
        start = self.log.append(data)
        pos = start
        for rtype, msgid, payload in records:
            item = record.Record(pos, rtype, msgid.encode("ascii"), len(payload), payload)
            self.apply(item)
            pos = item.end
        return start

    def want_sync(self, callback):
        """Call callback(error or None) after the next group fdatasync."""
        self.sync_waiters.append(callback)

    def sync_now(self):
        """Run the group fdatasync if anyone waits for it, then tell each waiter."""
        if not self.sync_waiters:
            return
        waiters, self.sync_waiters = self.sync_waiters, []
        error = None
        try:
            self.log.sync()
        except LogError as exc:
            error = exc
        for callback in waiters:
            callback(error)


def _body(msg, item):
    if msg.committed:
        raise ValueError("body after commit")
    msg.at += (item.payload_offset, item.length)


def _commit(msg, item):
    if msg.committed:
        raise ValueError("second commit")
    msg.envelope = env_mod.Envelope.decode(item.payload)
    if msg.envelope.quarantined:
        msg.quarantined = msg.envelope.quarantined


def _result(msg, item):
    env_mod.apply_result(msg.envelope, item.payload)


def _warned(msg, item):
    msg.envelope.warned = env_mod.decode_note(item.payload).get("t")


def _removed(msg, item):
    msg.removed = True


def _aborted(msg, item):
    if msg.committed:
        raise ValueError("abort after commit")
    msg.aborted = True
    msg.at = ()


def _quarantined(msg, item):
    msg.quarantined = env_mod.decode_note(item.payload).get("why") or "quarantined"


_APPLY = {
    record.BODY: _body, record.COMMIT: _commit, record.RESULT: _result,
    record.WARNED: _warned, record.REMOVED: _removed, record.ABORTED: _aborted,
    record.QUARANTINED: _quarantined,
}


def open_store(path):
    """Open the log at path and return a Store without reading it (appending only)."""
    log = Log(path)
    log.open()
    store = Store(log, indexed=False)
    log.end = log.size()
    return store
