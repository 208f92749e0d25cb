"""The queue's index: what the log says about each message, rebuilt by scanning it.

Owns the in-memory view of the log (an entry per id, masq.queue.entry: where its text,
COMMIT and last RESULTs lie, bytes used, the oldest segment it needs), what each record
means for its message (a COPY record starts a copy made by compaction, whose COMMIT
replaces the original; ABORTED after COMMIT withdraws a commit whose sync failed), reading
a message's envelope and text back from the log, and the operations that append records.

Memory: the index holds only unfinished messages (live, quarantined, or still being
written); a message leaves it as soon as its last recipient is final, it is removed, or its
writer aborts, and later records for an id the index no longer holds are dead bytes. Per
message it keeps no envelope and no text, only their locations (entry.py); envelopes are
read back from the log when needed, and the last ENVELOPES read stay decoded (a bounded
cache: the scheduler looks at a new message twice in one turn, a job's results need its
envelope once more). Compaction needs `pins`: per segment, the ids of the unfinished
messages whose oldest needed record is in it. `tools/bench_index.py` measures the bytes
per waiting message.

The store stores; it does not schedule (retry timing lives in masq.outbound). Group commit is `want_sync`
plus `sync_now` at the end of a loop turn. Crash states and their recovery rules are in
docs/QUEUE.md.
"""

import errno
import os
import struct

from masq.base.tables import ShrinkingDict
from masq.queue import envelope as env_mod
from masq.queue import record
from masq.queue import entry
from masq.queue.entry import Message
from masq.queue.log import LogError

CHUNK = 64 * 1024
RECENT = 64     # finished messages whose bodies stay readable (a bounce built after the last result)
ENVELOPES = 64  # envelopes kept decoded (the last read or written)
_ALPHABET = "0123456789abcdefghijklmnopqrstuv"


class TextUnreadable(LogError, OSError):
    """A message text (or envelope) cannot be read whole (gone, or an I/O error part-way).

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


class Store:
    """The index over one journal; `apply` feeds it records in log order.

    A store opened only to append (`sendmail`, `-bs`) is not `indexed`: it keeps no index,
    so appending decodes nothing (and `sendmail` never imports json)."""

    def __init__(self, journal, indexed=True):
        self.journal = journal
        self.indexed = indexed
        self.Message = type("Message", (Message,), {"__slots__": (), "store": self})
        self.messages = ShrinkingDict()   # id -> Message, unfinished only, in arrival order
        self.envelopes = {}       # id -> Envelope, the last ENVELOPES decoded; the records
                                  # that change one (COMMIT, RESULT, WARNED) update it
        self.kept_bytes = 0       # log bytes of the messages compaction must keep
        self.recent = {}          # id -> Message, the last RECENT messages that finished
        self.pins = {}            # segment -> {id: None} of unfinished messages starting there
                                  # (a dict of str keys costs half a set's bytes per id)
        self.copies = {}          # id -> chunks of a copy in progress (after a COPY record)
        self.damage = []
        self.sync_waiters = []
        self.unsynced_commits = []   # clients' commits since the last sync: withdrawn if it fails
        self.unsynced_kept = []      # the daemon's own commits since then: written again if it fails
        self.again = {}              # ids whose text and COMMIT must be written again (a copy)
        self._older_used = None      # (segments key, bytes used in all but the newest)

    # reading the log

    def get(self, msgid):
        """Return the Message with this id, creating an empty one if unknown."""
        msg = self.messages.get(msgid)
        if msg is None:
            msg = self.messages[msgid] = self.Message(msgid)
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
            msg = self.messages[msgid] = self.Message(msgid)
        was_kept, old_bytes, old_pin = msg.kept, msg.bytes, msg.first_seg
        msg.bytes = old_bytes + record.OVERHEAD + item.length
        try:
            _APPLY[item.type](self, msg, item)
        except (ValueError, KeyError, TypeError, AttributeError, struct.error) as exc:
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
                ids.pop(msg.id, None)
                if not ids:
                    del self.pins[old_pin]
            if pin is not None:
                self.pins.setdefault(pin, {})[msg.id] = None
        if finished and self.messages.pop(msg.id, None) is not None:
            self.copies.pop(msg.id, None)
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
        last = msg.last_chunk()[:2]
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
        packed, i, start = None, 0, 0
        while pos < total:
            msg = self.messages.get(msgid) or self.recent.get(msgid)
            if msg is None or msg.packed is not packed:
                packed, i, start = self._locate(msg, msgid, total)
            number, offset, length = entry.chunk(packed, i)
            while start + length <= pos:
                start += length
                i += 1
                number, offset, length = entry.chunk(packed, i)
            seg = self.journal.segments.get(number)
            if seg is None:
                raise TextUnreadable("%s: message %s: segment %d is gone"
                                     % (self.journal.dir, msgid, number))
            skip = pos - start
            try:
                head = seg.read(offset - record.HEAD_SIZE, record.HEAD_SIZE)
                data = seg.read(offset, length)
                trailer = seg.read(offset + length, record.TRAILER_SIZE)
            except (OSError, LogError) as exc:
                raise TextUnreadable("%s: message %s: %s" % (self.journal.dir, msgid, exc)) \
                    from None
            if not record.intact(head, data, trailer, seg.seed):
                raise TextUnreadable("%s: message %s: text damaged in segment %d at offset "
                                     "%d (checksum)" % (self.journal.dir, msgid, number, offset))
            if skip:
                data = data[skip:]
            pos += len(data)
            yield data

    def envelope(self, msg):
        """Return msg's envelope as its COMMIT and last RESULTs say; TextUnreadable if the
        log cannot be read there (the caller treats it as a temporary failure).

        The result is shared with the cache: treat it as read-only."""
        cached = self.envelopes.get(msg.id)
        if cached is not None:
            return cached
        where = msg.commit_at
        if where is None:
            raise TextUnreadable("%s: message %s has no envelope" % (self.journal.dir, msg.id))
        try:
            envelope = env_mod.Envelope.decode(self._read(msg, *where))
            envelope.kept = None      # where its text lies: the index has that
            for index, (seg, offset, length, _) in enumerate(msg.results()):
                if length:
                    env_mod.apply_result(envelope, self._read(msg, seg, offset, length))
        except ValueError as exc:
            raise TextUnreadable("%s: message %s: envelope: %s" % (self.journal.dir, msg.id,
                                                                   exc)) from None
        envelope.warned = msg.warned
        self._remember(msg, envelope)
        return envelope

    def _remember(self, msg, envelope):
        envelopes = self.envelopes
        envelopes.pop(msg.id, None)
        envelopes[msg.id] = envelope
        if len(envelopes) > ENVELOPES:
            del envelopes[next(iter(envelopes))]

    def _read(self, msg, seg_number, offset, length):
        seg = self.journal.segments.get(seg_number)
        if seg is None:
            raise TextUnreadable("%s: message %s: segment %d is gone"
                                 % (self.journal.dir, msg.id, seg_number))
        try:
            return seg.read(offset, length)
        except (OSError, LogError) as exc:
            raise TextUnreadable("%s: message %s: %s" % (self.journal.dir, msg.id, exc)) \
                from None

    def _locate(self, msg, msgid, total):
        """Return (packed locations, chunk index, text offset) of msg's first chunk, checked
        against total."""
        if msg is None or msg.size != total:
            raise TextUnreadable("%s: message %s changed or left the queue while being read"
                                 % (self.journal.dir, msgid))
        return msg.packed, 0, 0

    def live_bytes(self):
        """Return the log bytes used by messages compaction must keep."""
        return self.kept_bytes

    def dead_bytes(self):
        """Return the log bytes compaction would free."""
        return self._used() - self.kept_bytes

    def _used(self):
        """Return the log bytes in use: the older segments' sum is kept until the set of
        segments changes (only the newest grows), so the check each loop turn does not
        walk the 1,024 segments a 1 GB message fills."""
        segments, newest = self.journal.segments, self.journal.newest
        key = (len(segments), newest.number)
        if self._older_used is None or self._older_used[0] != key:
            older = sum(seg.end - seg.header_size for seg in segments.values()
                        if seg is not newest)
            self._older_used = (key, older)
        return self._older_used[1] + newest.end - newest.header_size

    # writing

    def append(self, records, track=True, grow=False):
        """Append [(type, msgid, payload)] as one write and index them; return (seg, offset).
        `grow`: the text of a large message (log.Journal.append).

        With track, its COMMIT records are a client's: withdrawn if the next sync fails (the
        client is answered 4xx and retries). Without, they are the daemon's own (copies made
        by compaction, DSNs, forwarded copies, quarantine notes): something already relies
        on them, so if the next sync fails they are written again, never trusted."""
        def frame(seg):
            return b"".join([part for t, i, p in records
                             for part in record.frame(seg.seed, t, i.encode("ascii"), p)])
        number, start = self.journal.append(frame, grow) if grow else \
            self.journal.append(frame)
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
        self._older_used = None      # a failed sync may cut a segment short
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

    def copy(self, msg, keep=()):
        """Append a copy of msg (COPY, its text, COMMIT with its current state).

        `keep`: segments that hold nothing but chunks of msg's text (a large text's own
        segments): those chunks are not copied (`_copy_keeping`)."""
        envelope = self.envelope(msg)
        stay = self._staying(msg, keep) if keep else None
        if stay:
            self._copy_keeping(msg, envelope, stay)
            return
        payload = envelope.copy(quarantined=msg.quarantined or envelope.quarantined,
                                text_of=None, replaces=None).encode()
        records = [(record.COPY, msg.id, b"")]
        size = 0
        for part in _coalesce(self.body(msg.id)):
            data = b"".join(part)
            if size + len(data) > CHUNK and len(records) > 1:
                self.append(records, track=False)
                records, size = [], 0
            records.append((record.BODY, msg.id, data))
            size += len(data)
        records.append((record.COMMIT, msg.id, payload))
        self.append(records, track=False)

    @staticmethod
    def _staying(msg, keep):
        """Return the segments of keep in which msg's chunks lie in the order of its text
        (as every writer and copy appends them; `_splice` relies on it)."""
        ends, stay = {}, set(keep)
        for seg, offset, _ in entry.unpack_chunks(msg.raw_chunks()):
            if seg in stay:
                if offset < ends.get(seg, 0):
                    stay.discard(seg)
                ends[seg] = offset
        return stay & ends.keys()

    def _copy_keeping(self, msg, envelope, stay):
        """Copy msg leaving its chunks in the segments `stay` where they are: the other
        chunks are written again, in a segment of their own (log.Journal.append), and the
        COMMIT lists where every run of the text lies (`kp`: [[text offset, segment], ...]),
        so it needs neither the COPY record nor the chunks' order in the log."""
        self.append([(record.COPY, msg.id, b"")], track=False)
        kept, pos, last = [], 0, None
        for seg, offset, length in entry.unpack_chunks(msg.raw_chunks()):   # a snapshot
            if seg not in stay:
                data = self._read(msg, seg, offset, length)
                seg, _ = self.append([(record.BODY, msg.id, data)], track=False, grow=msg.id)
            if seg != last:
                kept.append([pos, seg])
                last = seg
            pos += length
        payload = envelope.copy(quarantined=msg.quarantined or envelope.quarantined,
                                text_of=None, replaces=None, kept=kept).encode()
        self.append([(record.COMMIT, msg.id, payload)], track=False)

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


def _body(store, msg, item):
    copy = store.copies.get(msg.id)
    if copy is not None:
        copy += entry.pack_chunk(item.seg, item.payload_offset, item.length)
        return
    if msg.committed:
        raise ValueError("body after commit")
    _first(msg, item)
    msg.add_chunk(item.seg, item.payload_offset, item.length)


def _copy(store, msg, item):
    store.copies[msg.id] = bytearray()  # before its COMMIT too: the original's COMMIT may have rotted


def _commit(store, msg, item):
    """The COMMIT in force: a client's, or a copy's (which carries the states the index
    held when the copy was made: every RESULT before it is in it)."""
    envelope = env_mod.Envelope.decode(item.payload)
    at = store.copies.pop(msg.id, None)
    kept, envelope.kept = envelope.kept, None
    if kept:                      # a copy that left a large text's own segments in place
        at = _splice(msg, at or b"", kept)
    elif at is None and envelope.text_of is not None:
        at = _adopt(store, msg, envelope.text_of)
    if at is not None:            # a copy (maybe with no text) replaces the original whole:
                                  # its text, and its quarantine or none
        msg.set_chunks(at)
        if not at:
            msg.first_seg = item.seg
        elif kept:
            msg.first_seg = min(seg for seg, _, _ in entry.unpack_chunks(at))
        else:
            msg.first_seg = msg.first_chunk()[0]
        msg.bytes = msg.size + record.OVERHEAD * (msg.chunks() + 2) + item.length
        msg.quarantined = None
    elif envelope.text_of is not None:      # a new envelope over the same text
        msg.quarantined = None
    elif msg.committed:
        raise ValueError("second commit")
    else:
        _first(msg, item)
    if envelope.replaces is not None:
        _replace(store, envelope.replaces)
    msg.committed_at(item.seg, item.payload_offset, item.length,
                     [r.final for r in envelope.recipients])
    msg.warned = envelope.warned
    if envelope.quarantined:
        msg.quarantined = envelope.quarantined
    elif msg.size != envelope.size:
        msg.quarantined = "text of %d bytes, envelope says %d" % (msg.size, envelope.size)
    store._remember(msg, envelope)


def _splice(msg, copied, kept):
    """Return the chunks of a copy's text as its COMMIT lists them: each [offset, segment]
    in kept is a run of the text, up to the next one's offset (the last: to the end), made
    of msg's chunks in that segment (the original's, or the copy's own), in their order.
    ValueError if they are not where it says (the message is then quarantined, never
    delivered with a hole or out of order). Locations stay packed (12 bytes a chunk: a
    1 GB text's 16,384 take 192 KiB, not a tuple each)."""
    groups = {}                   # segment -> [its chunks packed, how many are taken]
    for source in (msg.raw_chunks(), copied):
        mine = set()
        for seg, offset, length in entry.unpack_chunks(source):
            if seg not in mine:
                if seg in groups:
                    raise ValueError("segment %d holds two copies of the text" % seg)
                mine.add(seg)
                groups[seg] = [bytearray(), 0]
            groups[seg][0] += entry.pack_chunk(seg, offset, length)
    for place in kept:
        if (not isinstance(place, list) or len(place) != 2
                or not all(type(n) is int for n in place)):
            raise ValueError("bad kept text %r" % (place,))
    out, pos = bytearray(), 0
    ends = [place[0] for place in kept[1:]] + [None]
    for (offset, seg), end in zip(kept, ends):
        group = groups.get(seg)
        if pos != offset or group is None or group[1] * entry.CHUNK_SIZE >= len(group[0]):
            raise ValueError("kept text at %d in segment %d is not in the log" % (offset, seg))
        packed, taken = group
        while taken * entry.CHUNK_SIZE < len(packed) and (end is None or pos < end):
            pos += entry.unpack_chunk(packed, taken)[2]
            taken += 1
        out += packed[group[1] * entry.CHUNK_SIZE:taken * entry.CHUNK_SIZE]
        group[1] = taken
    return bytes(out)


def _adopt(store, msg, text_of):
    """A COMMIT that gives committed msg a new envelope (a content filter's verdict,
    `masq release`): return the chunks of the pending text it adopts (that writer's entry
    leaves the index), or None when the text stays (text_of is msg's own id)."""
    if not msg.committed:
        raise ValueError("new envelope for a message never committed")
    if text_of == msg.id:
        return None
    source = store.messages.get(text_of)
    if source is None or not source.pending:
        raise ValueError("new text %s is not in the log" % text_of)
    at = source.raw_chunks()
    store.forget(text_of)
    return at


def _replace(store, msgid):
    """A COMMIT that replaces message msgid (an smtp: filter's copy coming back): msgid is
    removed by the same record that commits its replacement, so a crash leaves one or the
    other, never both and never neither."""
    old = store.messages.get(msgid)
    if old is not None and old.committed:
        was_kept, old_bytes, old_pin = old.kept, old.bytes, old.first_seg
        old.removed = True
        store._track(old, was_kept, old_bytes, old_pin)


def _result(store, msg, item):
    """A recipient's new state: checked against the envelope (read back if need be)."""
    if not msg.committed:
        raise ValueError("result before commit")
    try:
        envelope = store.envelope(msg)
    except LogError:              # its COMMIT cannot be read now: check what the RESULT
        envelope = None           # says on its own; the envelope is read again when needed
    if envelope is not None:
        index = env_mod.apply_result(envelope, item.payload)
        final = envelope.recipients[index].final
    else:
        index, rcpt = env_mod.decode_result(item.payload)
        final = rcpt.final
    msg.result_at(index, item.seg, item.payload_offset, item.length, final)


def _warned(store, msg, item):
    msg.warned = env_mod.decode_note(item.payload).get("t")
    envelope = store.envelopes.get(msg.id)
    if envelope is not None:
        envelope.warned = msg.warned


def _removed(store, msg, item):
    msg.removed = True


def _aborted(store, msg, item):
    if msg.committed:
        msg.removed = True          # a commit withdrawn: its sync failed, never acknowledged
        return
    msg.aborted = True
    msg.at = ()


def _quarantined(store, msg, item):
    msg.quarantined = env_mod.decode_note(item.payload).get("why") or "quarantined"


_APPLY = {
    record.BODY: _body, record.COMMIT: _commit, record.RESULT: _result,
    record.WARNED: _warned, record.REMOVED: _removed, record.ABORTED: _aborted,
    record.QUARANTINED: _quarantined, record.COPY: _copy,
}
