"""The queue's index: what the log says about each message, rebuilt by scanning it.

Owns the in-memory view of the log (`Message` per id: envelope, body chunk locations, bytes
used, the oldest segment it needs), what each record means for its message (a COPY record
starts a copy made by compaction, whose COMMIT replaces the original; ABORTED after COMMIT
withdraws a commit whose sync failed), and the operations that append records.

Memory: the index holds only unfinished messages (live, quarantined, or still being
written); a message leaves it as soon as its last recipient is final, it is removed, or its
writer aborts, and later records for an id the index no longer holds are dead bytes. Per
message it keeps its envelope (repeated strings shared, see envelope.py) and a flat tuple of
(segment, offset, length) per body chunk of up to 64 KiB; bodies stay in the log and are
read back in chunks. Compaction needs `pins`: per segment, the ids of the unfinished
messages whose oldest needed record is in it. `tools/bench_queue.py` measures the bytes per waiting message.

The store stores; it does not schedule (retry timing lives in masq.outbound). Group commit is `want_sync`
plus `sync_now` at the end of a loop turn. Crash states and their recovery rules are in
docs/QUEUE.md.
"""

import errno
import os

from masq.queue import envelope as env_mod
from masq.queue import record
from masq.queue.log import LogError

CHUNK = 64 * 1024
RECENT = 64     # finished messages whose bodies stay readable (a bounce built after the last result)
_ALPHABET = "0123456789abcdefghijklmnopqrstuv"


class TextUnreadable(LogError, OSError):
    """A message text cannot be read whole (gone, or an I/O error part-way).

    Both a LogError and an OSError (EIO): whoever reads a text for a delivery and catches
    either treats it as a temporary failure, never as the end of the text."""

    def __init__(self, message):
        LogError.__init__(self, message, temporary=True)
        self.errno, self.strerror = errno.EIO, message

    def __str__(self):
        return self.strerror


def new_id(now):
    """Return a fresh message id: 7 base-32 digits of the time now, 7 of randomness."""
    seconds = int(now)
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

    __slots__ = ("id", "envelope", "at", "bytes", "removed", "aborted", "quarantined",
                 "first_seg", "copy")

    def __init__(self, msgid):
        self.id = msgid
        self.envelope = None
        self.at = ()          # body chunks, flat: (segment, offset, length, segment, ...)
        self.bytes = 0        # log bytes its records use
        self.removed = False  # removed, or its commit withdrawn (ABORTED after COMMIT)
        self.aborted = False
        self.quarantined = None
        self.first_seg = None  # the oldest segment holding a record that still matters
        self.copy = None      # chunks of a copy in progress (after a COPY record)

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
        return self.live or (self.quarantined is not None and not self.removed
                             and self.committed)

    @property
    def pending(self):
        """Return True while the message is being written (chunks, no COMMIT or ABORTED)."""
        return not self.committed and not self.aborted and bool(self.at)

    @property
    def finished(self):
        """Return True once nothing will happen to the message any more (it leaves the index)."""
        if self.removed or self.aborted:
            return True
        if not self.committed:
            return not self.at            # damage named an id that has no text here
        return not self.kept

    @property
    def size(self):
        """Return the size of the message text in bytes."""
        return sum(self.at[2::3])


class Store:
    """The index over one journal; `apply` feeds it records in log order.

    A store opened only to append (`sendmail`, `-bs`) is not `indexed`: it keeps no index,
    so appending decodes nothing (and `sendmail` never imports json)."""

    def __init__(self, journal, indexed=True):
        self.journal = journal
        self.indexed = indexed
        self.messages = {}        # id -> Message, unfinished messages only, in arrival order
        self.kept_bytes = 0       # log bytes of the messages compaction must keep
        self.recent = {}          # id -> Message, the last RECENT messages that finished
        self.pins = {}            # segment -> ids of unfinished messages starting there
        self.damage = []
        self.sync_waiters = []
        self.unsynced_commits = []   # clients' commits since the last sync: withdrawn if it fails
        self.unsynced_kept = []      # the daemon's own commits since then: written again if it fails
        self.again = {}              # ids whose text and COMMIT must be written again (a copy)

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
        was_kept, old_bytes, old_pin = msg.kept, msg.bytes, msg.first_seg
        msg.bytes += record.OVERHEAD + item.length
        try:
            _APPLY[item.type](msg, item)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            msg.quarantined = msg.quarantined or "bad %s record: %s" % (chr(item.type), exc)
        self._track(msg, was_kept, old_bytes, old_pin)

    def _track(self, msg, was_kept, old_bytes, old_pin):
        """Keep kept bytes and pins in step with msg's change; drop msg once finished."""
        self.kept_bytes += (msg.bytes if msg.kept else 0) - (old_bytes if was_kept else 0)
        finished = msg.finished
        pin = None if finished else msg.first_seg
        if pin != old_pin:
            ids = self.pins.get(old_pin)
            if ids is not None:
                ids.discard(msg.id)
                if not ids:
                    del self.pins[old_pin]
            if pin is not None:
                self.pins.setdefault(pin, set()).add(msg.id)
        if finished and self.messages.pop(msg.id, None) is not None:
            recent = self.recent
            recent[msg.id] = msg
            if len(recent) > RECENT:
                del recent[next(iter(recent))]

    def _damaged(self, damage):
        self.damage.append(damage)
        msg = self.messages.get(damage.msgid.decode("ascii")) if damage.msgid else None
        if msg is not None:
            was_kept, old_bytes, old_pin = msg.kept, msg.bytes, msg.first_seg
            msg.quarantined = "damaged record at segment %d offset %d" % (
                damage.seg, damage.offset)
            self._track(msg, was_kept, old_bytes, old_pin)

    def damage_after(self, msg):
        """Return the damage that may be the lost COMMIT of pending msg: anywhere after its
        last chunk (other sessions' records may lie between, or a segment boundary), naming
        no id, its id, or an id the index does not know (one rotted into another)."""
        last = (msg.at[-3], msg.at[-2])
        known = self.messages.keys() | self.recent.keys()
        found = []
        for damage in self.damage:
            claimed = damage.msgid.decode("ascii") if damage.msgid else None
            if (damage.seg, damage.offset) > last and (
                    claimed is None or claimed == msg.id or claimed not in known):
                found.append(damage)
        return found

    def forget(self, msgid):
        """Drop a message from the index (its writer died without saying so)."""
        msg = self.messages.get(msgid)
        if msg is not None:
            was_kept, old_bytes, old_pin = msg.kept, msg.bytes, msg.first_seg
            msg.aborted = True
            msg.at = ()
            self._track(msg, was_kept, old_bytes, old_pin)

    # views

    def live(self):
        """Return the live messages in arrival order."""
        return [m for m in self.messages.values() if m.live]

    def listed(self):
        """Return messages mailq shows: live and quarantined, in arrival order."""
        return [m for m in self.messages.values() if m.kept and m.committed]

    def body(self, msgid):
        """Yield the message text of msgid in chunks; TextUnreadable if it cannot be read whole.

        Where each chunk lies is looked up again before it is read: between two chunks a
        compaction step may have copied the message forward and deleted the segment the old
        locations named. The text read so far is kept by its length, so the rest comes from
        the copy; a text that changed size or lost its segment ends the read with an error,
        never with a short text."""
        msg = self.messages.get(msgid) or self.recent.get(msgid)
        if msg is None:
            raise TextUnreadable("%s: message %s is no longer in the queue"
                                 % (self.journal.dir, msgid))
        total, pos = msg.size, 0
        at, i, start = None, 0, 0
        while pos < total:
            msg = self.messages.get(msgid) or self.recent.get(msgid)
            if msg is None or msg.at is not at:
                at, i, start = self._locate(msg, msgid, total)
            while start + at[i + 2] <= pos:
                start += at[i + 2]
                i += 3
            seg = self.journal.segments.get(at[i])
            if seg is None:
                raise TextUnreadable("%s: message %s: segment %d is gone"
                                     % (self.journal.dir, msgid, at[i]))
            skip = pos - start
            try:
                data = seg.read(at[i + 1] + skip, at[i + 2] - skip)
            except (OSError, LogError) as exc:
                raise TextUnreadable("%s: message %s: %s" % (self.journal.dir, msgid, exc)) \
                    from None
            pos += len(data)
            yield data

    def _locate(self, msg, msgid, total):
        """Return (at, index, text offset) of msg's chunk list, checked against total."""
        if msg is None or msg.size != total:
            raise TextUnreadable("%s: message %s changed or left the queue while being read"
                                 % (self.journal.dir, msgid))
        return msg.at, 0, 0

    def live_bytes(self):
        """Return the log bytes used by messages compaction must keep."""
        return self.kept_bytes

    def dead_bytes(self):
        """Return the log bytes compaction would free."""
        used = sum(seg.end - seg.header_size for seg in self.journal.segments.values())
        return used - self.kept_bytes

    # writing

    def append(self, records, track=True):
        """Append [(type, msgid, payload)] as one write and index them; return (seg, offset).

        With track, its COMMIT records are a client's: withdrawn if the next sync fails (the
        client is answered 4xx and retries). Without, they are the daemon's own (copies made
        by compaction, DSNs, forwarded copies, quarantine notes): something already relies
        on them, so if the next sync fails they are written again, never trusted."""
        def frame(seg):
            return b"".join(seg.encode(t, i.encode("ascii"), p) for t, i, p in records)
        number, start = self.journal.append(frame)
        pos = start
        for rtype, msgid, payload in records:
            item = record.Record(pos, rtype, msgid.encode("ascii"), len(payload), payload,
                                 number)
            self.apply(item)
            pos = item.end
            if rtype == record.COMMIT:
                (self.unsynced_commits if track else self.unsynced_kept).append(msgid)
        return number, start

    def want_sync(self, callback):
        """Call callback(error or None) after the next group fdatasync."""
        self.sync_waiters.append(callback)

    def sync(self):
        """fdatasync what was appended; raise LogError if that fails.

        A failed fdatasync is never retried and trusted: the clients' commits it covered are
        withdrawn, the daemon's own are written again as copies (COPY, text, COMMIT) that the
        next sync covers; the records that rely on them (a RESULT "bounced" on its DSN, the
        deletion of a segment on its copies) wait for that sync."""
        commits, self.unsynced_commits = self.unsynced_commits, []
        try:
            self._write_again()
            self.journal.sync()
        except LogError:
            self.withdraw(commits)
            self.again.update(dict.fromkeys(self.unsynced_kept))
            self.unsynced_kept = []
            try:
                self._write_again()
            except LogError:
                pass            # still owed: the next sync writes them first
            raise
        self.unsynced_kept = []

    def _write_again(self):
        """Append a fresh copy of every message a failed sync covered (LogError if one fails)."""
        while self.again:
            msgid = next(iter(self.again))
            msg = self.messages.get(msgid)
            if msg is not None and msg.committed and msg.kept:
                try:
                    self.copy(msg)
                except LogError as exc:
                    if exc.temporary:
                        raise   # disk full or EIO: try again at the next sync
                    # its text is no longer readable: nothing left to write again
            del self.again[msgid]

    def copy(self, msg):
        """Append a copy of msg (COPY, its text, COMMIT with its current state)."""
        envelope = msg.envelope
        if msg.quarantined:
            envelope.quarantined = msg.quarantined
        records = [(record.COPY, msg.id, b"")]
        size = 0
        for part in _coalesce(self.body(msg.id)):
            data = b"".join(part)
            if size + len(data) > CHUNK and len(records) > 1:
                self.append(records, track=False)
                records, size = [], 0
            records.append((record.BODY, msg.id, data))
            size += len(data)
        records.append((record.COMMIT, msg.id, envelope.encode()))
        self.append(records, track=False)

    def withdraw(self, ids):
        """Append ABORTED for commits whose sync failed: they were never acknowledged."""
        if ids:
            try:
                self.append([(record.ABORTED, i, b"") for i in ids], track=False)
            except LogError:
                pass            # the COMMIT stays: at worst a duplicate, never a loss

    def sync_now(self):
        """Run the group fdatasync if anyone waits for it, then tell each waiter."""
        if not self.sync_waiters:
            return
        waiters, self.sync_waiters = self.sync_waiters, []
        error = None
        try:
            self.sync()
        except LogError as exc:
            error = exc
        for callback in waiters:
            callback(error)


def _coalesce(chunks):
    part, size = [], 0
    for data in chunks:
        while data:
            take = data[:CHUNK - size]
            data = data[len(take):]
            part.append(take)
            size += len(take)
            if size == CHUNK:
                yield part
                part, size = [], 0
    if part:
        yield part


def _first(msg, item):
    if msg.first_seg is None:
        msg.first_seg = item.seg


def _body(msg, item):
    if msg.copy is not None:
        msg.copy += (item.seg, item.payload_offset, item.length)
        return
    if msg.committed:
        raise ValueError("body after commit")
    _first(msg, item)
    msg.at += (item.seg, item.payload_offset, item.length)


def _copy(msg, item):
    msg.copy = ()       # before its COMMIT too: the original's COMMIT may have rotted


def _commit(msg, item):
    envelope = env_mod.Envelope.decode(item.payload)
    if msg.copy is not None:      # a copy (maybe with no text) replaces the original whole:
        msg.at, msg.copy = msg.copy, None   # its text, and its quarantine or none
        msg.first_seg = msg.at[0] if msg.at else item.seg
        msg.bytes = sum(msg.at[2::3]) + record.OVERHEAD * (len(msg.at) // 3 + 2) + item.length
        msg.quarantined = None
        if msg.committed:         # the index already holds the state the copy was made of
            msg.envelope.quarantined = envelope.quarantined
            envelope = msg.envelope
    elif msg.committed:
        raise ValueError("second commit")
    else:
        _first(msg, item)
    msg.envelope = envelope
    if envelope.quarantined:
        msg.quarantined = envelope.quarantined
    elif msg.size != envelope.size:
        msg.quarantined = "text of %d bytes, envelope says %d" % (msg.size, envelope.size)


def _result(msg, item):
    env_mod.apply_result(msg.envelope, item.payload)


def _warned(msg, item):
    msg.envelope.warned = env_mod.decode_note(item.payload).get("t")


def _removed(msg, item):
    msg.removed = True


def _aborted(msg, item):
    if msg.committed:
        msg.removed = True          # a commit withdrawn: its sync failed, never acknowledged
        return
    msg.aborted = True
    msg.at = ()


def _quarantined(msg, item):
    msg.quarantined = env_mod.decode_note(item.payload).get("why") or "quarantined"


_APPLY = {
    record.BODY: _body, record.COMMIT: _commit, record.RESULT: _result,
    record.WARNED: _warned, record.REMOVED: _removed, record.ABORTED: _aborted,
    record.QUARANTINED: _quarantined, record.COPY: _copy,
}
