"""The spool directory: where the log lives, who may use it how, and keeping it healthy.

Owns the checks made before a spool is trusted (a directory we may use, segments that are
masq logs, not RAM unless the configuration says so), the locks between processes
(`runner.lock`: one queue runner at a time; `writers.lock`: one-shot appenders share it, so
that the runner can tell when nobody else is writing), recovery on open, quarantine files
and compaction, one bounded step per loop turn (docs/QUEUE.md has the steps and the crash
state of each).

How it fails: a spool that cannot be trusted raises SpoolError with status 78 (EX_CONFIG)
and one line naming the path and the reason; it never creates a fresh, empty queue that
would hide an old one. Running out of space or an I/O error raises LogError (temporary).
"""

import fcntl
import os

from masq.base import exits
from masq.base.clock import Clock
from masq.queue import entry
from masq.queue import envelope as env_mod
from masq.queue import record
from masq.queue.log import (LOG_NAME, SEGMENT_SIZE, Journal, LogError, corrupt_file,
                            save_damage, segment_name, segment_numbers)
from masq.queue.store import CHUNK, Store, new_id

APPEND = CHUNK                # a Writer appends its text as soon as a whole chunk is held
GROW_AFTER = 16 * CHUNK       # text beyond this may fill larger segments (log.GROW)
STEP_BYTES = 256 * 1024       # text copied forward per compaction step (at least one message)
VOLATILE_FS = ("tmpfs", "ramfs")


class SpoolError(Exception):
    """The spool cannot be used; carries the exit status for the command line."""

    def __init__(self, message, status=exits.CONFIG):
        super().__init__(message)
        self.status = status


def mount_type(path, mounts="/proc/self/mounts"):
    """Return the file system type of the mount that holds path ('' if unknown)."""
    path = os.path.realpath(path)
    best, fstype = "", ""
    try:
        with open(mounts) as lines:
            for line in lines:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, fstype = point, fields[2]
    except OSError:
        return ""
    return fstype


def check_dir(spool_dir, volatile_ok):
    """Create the spool if missing, then make sure it is a directory we may trust."""
    if not os.path.lexists(spool_dir):
        try:
            os.makedirs(spool_dir, 0o700)
        except OSError as exc:
            raise SpoolError("cannot create spool_dir %s: %s" % (spool_dir, exc.strerror))
    if not os.path.isdir(spool_dir):
        raise SpoolError("spool_dir %s is not a directory" % spool_dir)
    if not os.access(spool_dir, os.R_OK | os.W_OK | os.X_OK):
        raise SpoolError("spool_dir %s: permission denied" % spool_dir)
    if not volatile_ok and mount_type(spool_dir) in VOLATILE_FS:
        raise SpoolError("spool_dir %s is on %s (RAM): queued mail would die with the power; "
                         "set option volatile_spool '1' to allow it"
                         % (spool_dir, mount_type(spool_dir)))
    for number in [0] + segment_numbers(spool_dir):
        path = os.path.join(spool_dir, segment_name(number))
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
            raise SpoolError("%s is not a regular file" % path)


class Queue:
    """A spool opened for one kind of use: 'append', 'read' or 'runner'."""

    def __init__(self, spool_dir, volatile_ok=False, report=None, segment_size=SEGMENT_SIZE,
                 clock=None):
        self.dir = spool_dir
        self.clock = clock or Clock()   # the loop's; without one (sendmail, mailq) the real one
        self.volatile_ok = volatile_ok
        self.report = report or (lambda text: None)
        self.segment_size = segment_size
        self.lock_fds = {}
        self.store = None
        self.foreign_commits = []
        self.writing = set()          # ids our own Writers have not committed or aborted
        self.compactions = 0          # segments removed by this process
        self._bytes_of = {}           # id -> (its locations, {segment: its text bytes there})
        self._held_at = (None, 0)     # (key, kept bytes in segments of their own)

    def open(self, mode):
        """Open the spool for mode; SpoolError if it cannot be trusted."""
        check_dir(self.dir, self.volatile_ok)
        if mode == "runner":
            self._take_lock("runner.lock", fcntl.LOCK_EX | fcntl.LOCK_NB,
                            "another queue runner (the daemon?) holds %s")
            self._remove_stale()
        elif mode == "append":
            self._take_lock("writers.lock", fcntl.LOCK_SH, "cannot lock %s")
        journal = Journal(self.dir, self.segment_size,
                          on_foreign=None if mode == "append" else self._foreign,
                          report=self.report)
        try:
            journal.open(all_segments=mode != "append")
        except LogError as exc:
            self.close()
            raise SpoolError(str(exc), exits.TEMPFAIL if exc.temporary else exits.CONFIG) \
                from None
        self.store = Store(journal, indexed=mode != "append")
        if mode != "append":
            self.recover(repair=mode == "runner")
        return self

    def close(self):
        """Release the log and the locks."""
        if self.store:
            self.store.journal.close()
        for fd in self.lock_fds.values():
            os.close(fd)
        self.lock_fds.clear()

    def _take_lock(self, name, how, failure):
        path = os.path.join(self.dir, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            fcntl.flock(fd, how)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(failure % path, exits.TEMPFAIL) from None
        except OSError as exc:
            raise SpoolError("cannot lock %s: %s" % (path, exc.strerror)) from None
        self.lock_fds[name] = fd

    def _remove_stale(self):
        for name in os.listdir(self.dir):
            if ".log.new." in name or name == LOG_NAME + ".compact":
                os.unlink(os.path.join(self.dir, name))

    def _foreign(self, items):
        for item in items:
            self.store.apply(item)
            if isinstance(item, record.Damage):
                self._save_damage(item)
            if isinstance(item, record.Record) and item.type == record.COMMIT:
                self.foreign_commits.append(item.msgid.decode("ascii"))

    def take_foreign_commits(self):
        """Return (and forget) the ids other processes committed since the last call."""
        ids, self.foreign_commits = self.foreign_commits, []
        return ids

    # the facade: everything code outside masq/queue/ may do with a queue

    def live(self):
        """Return the live messages in arrival order."""
        return self.store.live()

    def listed(self):
        """Return the messages mailq shows (live and quarantined), in arrival order."""
        return self.store.listed()

    def get(self, msgid):
        """Return the committed message msgid that is still kept (live or quarantined), or None."""
        msg = self.store.messages.get(msgid)
        return msg if msg is not None and msg.committed and msg.kept else None

    def get_live(self, msgid):
        """Return the message msgid while it is live, else None."""
        msg = self.store.messages.get(msgid)
        return msg if msg is not None and msg.live else None

    def body(self, msgid):
        """Yield the text of message msgid in chunks."""
        return self.store.body(msgid)

    def writer(self, msgid=None, own=False):
        """Return a Writer for a new message (a fresh id unless msgid is given).

        `own` for a message the daemon makes itself (a DSN, a forwarded copy): no client
        retries it, so a failed sync writes it again instead of withdrawing it."""
        return Writer(self, msgid or new_id(self.clock.time()), own)

    def append(self, records, track=True, grow=False):
        """Append [(type, msgid, payload)] as one write (Writer and the record helpers);
        see Store.append for `track` and `grow`."""
        return self.store.append(records, track, grow)

    def remove_each(self, ids, may_remove, who):
        """Remove the kept messages ids that may_remove(msg) allows; return (removed, errors).

        Errors are texts naming the id; nothing is synced here."""
        removed, errors = [], []
        for msgid in ids:
            msg = self.get(msgid)
            if msg is None:
                errors.append("%s: no such message" % msgid)
            elif not may_remove(msg):
                errors.append("%s: permission denied" % msgid)
            else:
                self.remove(msgid, "removed by %s" % who)
                removed.append(msgid)
        return removed, errors

    def record_result(self, msgid, index, rcpt):
        """Append a RESULT record: recipient number index of msgid is now rcpt."""
        self.append([(record.RESULT, msgid, env_mod.encode_result(index, rcpt))])

    def record_results(self, msgid, rows, warned=None):
        """Append one job's RESULT records [(index, rcpt)] (and WARNED at `warned`, if
        given) as one write: all of them are indexed, or none (LogError)."""
        records = [(record.RESULT, msgid, env_mod.encode_result(index, rcpt))
                   for index, rcpt in rows]
        if warned is not None:
            records.append((record.WARNED, msgid, env_mod.encode_note(t=warned)))
        self.append(records)

    def recommit(self, msgid, envelope, text=None):
        """Give committed message msgid a new envelope (a content filter's verdict, a
        release) in one COMMIT record; with text, a Writer (own) whose chunks become its
        text in that same record. Not synced here; LogError if it cannot be written."""
        records = text._records(whole=False) if text is not None and text.parts else []
        envelope = envelope.copy(text_of=text.id if text is not None else msgid,
                                 size=text.size if text is not None else envelope.size)
        records.append((record.COMMIT, msgid, envelope.encode()))
        self.append(records, track=False)
        if text is not None:
            self.writing.discard(text.id)
            text.written = text.committed = True

    def remove(self, msgid, why):
        """Append a REMOVED record for msgid."""
        self.append([(record.REMOVED, msgid, env_mod.encode_note(why=why))])

    def mark_warned(self, msgid, when):
        """Append a WARNED record: a delay warning for msgid went out at `when`."""
        self.append([(record.WARNED, msgid, env_mod.encode_note(t=when))])

    def want_sync(self, callback):
        """Call callback(error or None) after the next group fdatasync."""
        self.store.want_sync(callback)

    def sync_pending(self):
        """Return True while someone waits for the group fdatasync."""
        return bool(self.store.sync_waiters)

    def sync_now(self):
        """Run the group fdatasync if anyone waits for it."""
        self.store.sync_now()

    def sync(self):
        """fdatasync the log now; LogError on failure (see Store.sync: clients' commits
        withdrawn, the daemon's own written again)."""
        self.store.sync()

    def catch_up(self):
        """Read, under the append lock, what other processes appended."""
        journal = self.store.journal
        journal.lock()
        try:
            journal.catch_up_locked()
        finally:
            journal.unlock()

    def log_size(self):
        """Return the bytes the log's segments use."""
        return self.store.journal.size()

    def segment_count(self):
        """Return how many segment files the log has."""
        return len(self.store.journal.segments)

    # recovery

    def recover(self, repair):
        """Scan every segment into the index; with repair, save and cut torn tails, save
        damage, and commit as quarantined what lost its COMMIT to damage."""
        journal = self.store.journal
        journal.lock()
        try:
            for seg in journal.ordered():
                size = seg.size()
                items = list(seg.scan(seg.header_size, size))
                tail = items[-1] if items else None
                if isinstance(tail, record.Damage) and not tail.complete:
                    items.pop()
                    if repair:
                        journal.cut_torn_tail(seg, tail.offset, size)
                    size = tail.offset
                seg.end = seg.synced = size
                for item in items:
                    self.store.apply(item)
            if repair:
                for damage in self.store.damage:
                    self._save_damage(damage)
                self._commit_damaged()
        finally:
            journal.unlock()

    def _save_damage(self, damage):
        seg = self.store.journal.segments[damage.seg]
        path = save_damage(self.dir, damage.seg, damage.offset,
                           seg.read(damage.offset, damage.end - damage.offset))
        self.report("queue: damaged bytes %d-%d of segment %d (message %s) copied to %s"
                    % (damage.offset, damage.end, damage.seg,
                       (damage.msgid or b"?").decode(), path))

    def _commit_damaged(self):
        """Give each message whose writer died and whose COMMIT may be damaged a quarantined
        COMMIT (listed, kept). Only while no one-shot appender is alive: what a live sendmail
        is still writing is unfinished, not damaged (compaction decides about it later)."""
        if not self._no_other_writers():
            return
        for msg in list(self.store.messages.values()):
            if msg.pending:
                self._quarantine_lost_commit(msg)

    def _quarantine_lost_commit(self, msg):
        """Commit pending msg (its writer is dead) as quarantined if damage may have been its
        COMMIT or hit its text; return False if there is none (it was never acknowledged).

        Its text is saved to corrupt/ID.body; the envelope is read from the damaged record
        when that still decodes, else it says that it is unknown."""
        suspects = self.store.damage_after(msg)
        if not suspects and not msg.quarantined:
            return False
        why = msg.quarantined or "damaged record after its text at segment %d offset %d" % (
            suspects[0].seg, suspects[0].offset)
        self._save_body(msg)
        envelope = self._salvage(suspects) or env_mod.Envelope(
            "", [env_mod.Recipient("unknown@invalid")], received=0.0)
        envelope.size = msg.size
        envelope.quarantined = "COMMIT lost: %s" % why
        try:
            self.store.append([(record.COMMIT, msg.id, envelope.encode())], track=False)
            self.store.sync()
        except LogError as exc:
            self.report("queue: cannot record quarantined message %s: %s" % (msg.id, exc))
        return True

    def _salvage(self, suspects):
        for damage in suspects:
            data = self.store.journal.segments[damage.seg].read(
                damage.offset, damage.end - damage.offset)
            start, end = data.find(b'{"'), data.rfind(b"}")
            if start < 0 or end < start:
                continue
            try:
                return env_mod.Envelope.decode(data[start:end + 1])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        return None

    def _save_body(self, msg):
        out, _ = corrupt_file(self.dir, "%s.body" % msg.id, replace=True)
        with out:
            for data in self.store.body(msg.id):
                out.write(data)

    # compaction: one bounded step per loop turn

    def compact_due(self):
        """Return True when a segment can go now, or dead bytes dominate the log (beside
        the kept bytes that would be copied: not a large text's own segments)."""
        store = self.store
        if len(store.journal.segments) < 2:
            return False
        target, _, parked = self._plan()
        if target is None:
            return False
        users = self._users(target, parked)
        if not users:
            return True
        return store.dead_bytes() >= max(self.segment_size, store.live_bytes() - self._held())

    def _held(self):
        """Return the kept bytes in segments of their own (never copied): summed again only
        when the segments or the messages change in number."""
        store, journal = self.store, self.store.journal
        key = (len(journal.segments), journal.newest.number, len(store.messages))
        if self._held_at[0] != key:
            held = 0
            for msg in store.messages.values():
                if msg.size >= self.segment_size // 2 and msg.committed and msg.kept:
                    held += sum(self._segment_bytes(n) for n in self._own_segments(msg))
            self._held_at = (key, held)
        return self._held_at[1]

    def _segment_bytes(self, number):
        seg = self.store.journal.segments[number]
        return seg.end - seg.header_size

    def compact_step(self, budget=STEP_BYTES):
        """Do one bounded step of compaction if it is due; return True if it did something.

        A step works on the oldest segment that is not a kept text's own (`_plan`): it
        copies the messages that use it forward (COPY, BODY..., COMMIT, appended like any
        other records) until budget bytes of text moved, or, once nothing uses it, syncs
        the copies and deletes it."""
        if not self.compact_due():
            return False
        target, _, parked = self._plan()
        return self._work_on(target, parked, budget)

    def _work_on(self, target, parked, budget):
        users = self._users(target, parked)
        if users:
            return self._copy_forward(target, sorted(users), budget)
        journal = self.store.journal
        if journal.unsynced():
            self.store.sync()
        if journal.remove(target) is None:
            return False
        self.compactions += 1
        return True

    def _plan(self):
        """Return (the segment compaction works on or None, the bytes of the segments
        before it, {id: message} of the kept messages those belong to).

        Oldest first, it passes over segments that hold nothing but text chunks of one kept
        message (a large text's own segments, docs/QUEUE.md): they are freed whole when
        that message goes, never copied. Deleting a segment after them resurrects nothing:
        no other message has a record before it."""
        store, journal = self.store, self.store.journal
        left, parked, own = 0, {}, {}
        for number in sorted(journal.segments):
            seg = journal.segments[number]
            if seg is journal.newest:
                return None, left, parked
            ids = store.pins.get(number)
            if ids and len(ids) == 1:
                msg = store.messages.get(next(iter(ids)))
                if msg is not None and msg.committed and msg.kept and msg.id not in parked:
                    parked[msg.id] = msg
                    own[msg.id] = self._own_segments(msg)
            if (ids and len(ids) > 1) or not any(number in segs for segs in own.values()):
                return number, left, parked
            left += seg.end - seg.header_size
        return None, left, parked

    def _users(self, target, parked):
        """Return the ids of the kept messages with a record that matters in segment target:
        those that start there, and those of `parked` with a chunk, their COMMIT or a
        RESULT in force there."""
        users = set(self.store.pins.get(target) or ())
        for msg in parked.values():
            if msg.id not in users and (
                    target in self._text_bytes(msg) or msg.commit_at[0] == target
                    or any(seg == target and length for seg, _, length, _ in msg.results())):
                users.add(msg.id)
        return users

    def _text_bytes(self, msg):
        """Return {segment: bytes of msg's text records in it} (cached while msg is unchanged)."""
        cached = self._bytes_of.get(msg.id)
        if cached is not None and cached[0] is msg.packed:
            return cached[1]
        per = {}
        for seg, _, length in entry.unpack_chunks(msg.raw_chunks()):
            per[seg] = per.get(seg, 0) + length + record.OVERHEAD
        if len(self._bytes_of) >= 64:
            self._bytes_of.clear()
        self._bytes_of[msg.id] = (msg.packed, per)
        return per

    def _own_segments(self, msg):
        """Return the segments (never the newest) that hold nothing but chunks of msg's text."""
        journal = self.store.journal
        own = set()
        for number, size in self._text_bytes(msg).items():
            seg = journal.segments.get(number)
            if seg is not None and seg is not journal.newest and \
                    seg.end - seg.header_size == size:
                own.add(number)
        return own

    def _copy_forward(self, oldest, ids, budget):
        moved = False
        idle = None
        for msgid in ids:
            msg = self.store.messages.get(msgid)
            if msg is None or msg.first_seg > oldest:
                continue                      # copied forward already
            if msg.pending:
                if msgid in self.writing:
                    continue                  # our own session is still writing it
                if idle is None:
                    idle = self._no_other_writers()
                    if idle:
                        self.catch_up()       # what they appended before they let go
                msg = self.store.messages.get(msgid)
                if msg is None or msg.first_seg > oldest:
                    continue
                if msg.pending:
                    if idle:                  # its writer died: quarantined if damage may
                        if not self._quarantine_lost_commit(msg):   # be its COMMIT, else
                            self.store.forget(msgid)                # its chunks are garbage
                        moved = True
                    continue
            self._copy(msg)
            moved = True
            budget -= msg.size
            if budget <= 0:
                break
        return moved

    def _copy(self, msg):
        """Append a copy of msg (COPY, its text, COMMIT with its current state); the chunks
        in segments of its own stay where they are."""
        self.store.copy(msg, keep=self._own_segments(msg))

    def _no_other_writers(self):
        """Return True if no one-shot appender (sendmail, -bs) holds writers.lock now."""
        path = os.path.join(self.dir, "writers.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def compact(self):
        """Compact completely now (tests, `masq queue --compact`): start a new segment, then
        step until only it is left or a step cannot proceed; return True if anything moved."""
        journal = self.store.journal
        if journal.newest.end > journal.newest.header_size:
            journal.lock()
            try:
                journal.catch_up_locked()
                journal.rotate_locked()
            finally:
                journal.unlock()
        stop = journal.newest.number          # copies land in it or later: never chase them
        did = False
        while True:
            target, _, parked = self._plan()
            if target is None or target >= stop or not self._work_on(target, parked, 1 << 62):
                return did
            did = True


class Writer:
    """Streams one message's text into the log; commit() makes it part of the queue.

    Text is held as written until a whole 64 KiB chunk has come, then appended as a BODY
    record at once, with one copy of the text on the way: the pieces are joined once.
    (The tests of damage rely on that moment: a text of n * 64 KiB is all in the log
    before its commit(), which then appends the COMMIT alone.)"""

    def __init__(self, queue, msgid, own=False):
        self.queue = queue
        self.own = own
        queue.writing.add(msgid)
        self.id = msgid
        self.parts = []             # text not yet appended, as written (memoryviews)
        self.held = 0               # its length
        self.size = 0
        self.written = self.committed = False

    def write(self, data):
        """Add message text; whole 64 KiB chunks go to the log at once."""
        if not data:
            return
        self.parts.append(memoryview(data if type(data) is bytes else bytes(data)))
        self.held += len(data)
        self.size += len(data)
        if self.held >= APPEND:
            self.queue.append(self._records(whole=True),
                              grow=self.id if self.size > GROW_AFTER else None)
            self.written = True

    def _records(self, whole):
        """Return BODY records of the held text (only whole chunks if `whole`).

        Each record's text is exactly CHUNK octets (but the last), joined from the pieces
        as written, so the allocations are all of one size however the text came (BDAT
        chunks end anywhere): mixed sizes around glibc's mmap threshold left the heap
        fragmented, 3 MB more RSS by the end of a 1 GB message."""
        parts, records = self.parts, []
        while self.held >= CHUNK or (not whole and self.held):
            take, size = [], 0
            while parts and size < CHUNK:
                part = parts[0]
                if len(part) <= CHUNK - size:
                    take.append(parts.pop(0))
                else:
                    take.append(part[:CHUNK - size])
                    parts[0] = part[CHUNK - size:]
                size += len(take[-1])
            records.append((record.BODY, self.id, take[0] if len(take) == 1
                            else b"".join(take)))
            self.held -= size
        return records

    def commit(self, envelope):
        """Append the rest of the text and the COMMIT record (not yet synced)."""
        envelope.size = self.size
        if self.own and not envelope.filtered:
            envelope.filtered = env_mod.EXEMPT     # the daemon's own: no filter sees it
        records = self._records(whole=False) if self.parts else []
        records.append((record.COMMIT, self.id, envelope.encode()))
        self.queue.append(records, track=not self.own)
        self.queue.writing.discard(self.id)
        self.written = self.committed = True

    def abort(self):
        """Forget the message; tell the log if part of it was written (best effort)."""
        self.parts, self.held = [], 0
        self.queue.writing.discard(self.id)
        if self.written and not self.committed:     # a failed sync already withdrew it
            try:
                self.queue.append([(record.ABORTED, self.id, b"")])
            except LogError:
                pass

