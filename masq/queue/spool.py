"""The spool directory: where the log lives, who may use it how, and keeping it healthy.

Owns the checks made before a spool is trusted (a directory we may use, a log that is a
masq log, not RAM unless the configuration says so), the locks between processes
(`runner.lock`: one queue runner at a time; `writers.lock`: appenders share it, compaction
takes it alone), recovery on open, quarantine files and compaction.

How it fails: a spool that cannot be trusted raises SpoolError with status 78 (EX_CONFIG)
and one line naming the path and the reason; it never creates a fresh, empty queue that
would hide an old one. Running out of space or an I/O error raises LogError (temporary).
"""

import fcntl
import os

from masq import exits
from masq.queue import envelope as env_mod
from masq.queue import record
from masq.queue.log import LOG_NAME, Log, LogError, create, sync_dir
from masq.queue.store import CHUNK, Store, new_id

COMPACT_MIN = 256 * 1024
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
    path = os.path.join(spool_dir, LOG_NAME)
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        raise SpoolError("%s is not a regular file" % path)


class Queue:
    """A spool opened for one kind of use: 'append', 'read' or 'runner'."""

    def __init__(self, spool_dir, volatile_ok=False, report=None):
        self.dir = spool_dir
        self.volatile_ok = volatile_ok
        self.report = report or (lambda text: None)
        self.path = os.path.join(spool_dir, LOG_NAME)
        self.lock_fds = {}
        self.store = None
        self.foreign_commits = []

    def open(self, mode):
        """Open the spool for mode; SpoolError if it cannot be trusted."""
        check_dir(self.dir, self.volatile_ok)
        if mode == "runner":
            self._take_lock("runner.lock", fcntl.LOCK_EX | fcntl.LOCK_NB,
                            "another queue runner (the daemon?) holds %s")
            self._remove_stale()
        elif mode == "append":
            self._take_lock("writers.lock", fcntl.LOCK_SH, "cannot lock %s")
        log = Log(self.path, on_foreign=self._foreign)
        try:
            log.open()
        except LogError as exc:
            raise SpoolError(str(exc)) from None
        self.store = Store(log, indexed=mode != "append")
        if mode == "append":
            log.end = log.size()
        else:
            self.recover(repair=mode == "runner")
        return self

    def close(self):
        """Release the log and the locks."""
        if self.store:
            self.store.log.close()
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
            if name.startswith(LOG_NAME + ".new.") or name == LOG_NAME + ".compact":
                os.unlink(os.path.join(self.dir, name))

    def _foreign(self, items):
        for item in items:
            self.store.apply(item)
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

    def writer(self, msgid=None):
        """Return a Writer for a new message (a fresh id unless msgid is given)."""
        return Writer(self, msgid or new_id())

    def append(self, records):
        """Append [(type, msgid, payload)] as one write (Writer and the record helpers)."""
        return self.store.append(records)

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
        """fdatasync the log now (a one-shot writer); LogError on failure."""
        self.store.log.sync()

    def catch_up(self):
        """Read, under the append lock, what other processes appended."""
        log = self.store.log
        log.lock()
        try:
            log.catch_up()
        finally:
            log.unlock()

    def log_size(self):
        """Return the bytes the log uses."""
        return self.store.log.end

    # recovery

    def recover(self, repair):
        """Scan the whole log into the index; with repair, cut a torn tail, keep damage."""
        log = self.store.log
        log.lock()
        try:
            size = log.size()
            for item in log.scan(record.FILE_HEADER_SIZE, size):
                if isinstance(item, record.Damage) and item.end == size:
                    if repair:
                        self.report("queue: cut torn tail of %d bytes at offset %d"
                                    % (size - item.offset, item.offset))
                        log.truncate(item.offset)
                    size = item.offset
                    break
                self.store.apply(item)
            log.end = size
            if repair:
                for damage in self.store.damage:
                    self._quarantine(damage)
        finally:
            log.unlock()

    def _corrupt_file(self, name, replace):
        """Return (a new file in corrupt/ opened for writing, its path), or (None, path) if
        it exists and replace is false. Never through a symlink: the spool may belong to
        the daemon's user while root repairs it."""
        folder = os.path.join(self.dir, "corrupt")
        path = os.path.join(folder, name)
        if not os.path.isdir(folder) or os.path.islink(folder):
            if os.path.lexists(folder):
                os.unlink(folder)                   # a planted symlink or file
            os.mkdir(folder, 0o700)
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            try:
                fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                if not replace:
                    return None, path
                os.unlink(name, dir_fd=dir_fd)     # a hard link loses only this name
                fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        return os.fdopen(fd, "wb"), path

    def _quarantine(self, damage):
        out, path = self._corrupt_file("offset-%d.bin" % damage.offset, replace=False)
        if out is not None:
            with out:
                out.write(self.store.log.read(damage.offset, damage.end - damage.offset))
        self.report("queue: damaged bytes %d-%d (message %s) copied to %s"
                    % (damage.offset, damage.end, (damage.msgid or b"?").decode(), path))

    # compaction

    def compact_due(self):
        """Return True when dead bytes dominate the log."""
        dead = self.store.dead_bytes()
        return dead >= max(COMPACT_MIN, self.store.live_bytes())

    def compact(self):
        """Rewrite the log with only what must be kept; False if appenders are busy."""
        path = os.path.join(self.dir, "writers.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            self._rewrite()
        finally:
            os.close(fd)
        return True

    def _rewrite(self):
        log = self.store.log
        new_path = self.path + ".compact"
        log.lock()
        try:
            log.catch_up()
            new = _write_compacted(self.store, new_path, self._save_orphan)
            os.rename(new_path, self.path)
            sync_dir(self.dir)
        finally:
            log.unlock()
        log.close()
        new.close()
        self.store = Store(Log(self.path, on_foreign=self._foreign))
        self.store.log.open(create_missing=False)
        self.recover(repair=True)

    def _save_orphan(self, msg):
        out, _ = self._corrupt_file("%s.body" % msg.id, replace=True)
        with out:
            for data in self.store.body(msg.id):
                out.write(data)


def _write_compacted(store, path, save_orphan):
    """Write every kept message to a new log at path, fsync it, return the open Log."""
    create(path)
    new = Log(path)
    new.open(create_missing=False)
    for msg in list(store.messages.values()):
        if not msg.kept:
            continue
        if not msg.committed:
            save_orphan(msg)
            continue
        envelope = msg.envelope
        if msg.quarantined:
            envelope.quarantined = msg.quarantined
        msgid = msg.id.encode("ascii")
        out = [new.encode(record.BODY, msgid, b"".join(part))
               for part in _coalesce(store.body(msg.id))]
        out.append(new.encode(record.COMMIT, msgid, envelope.encode()))
        new.append(b"".join(out))
    new.sync()
    return new


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


class Writer:
    """Streams one message's text into the log; commit() makes it part of the queue."""

    def __init__(self, queue, msgid):
        self.queue = queue
        self.id = msgid
        self.buffer = bytearray()
        self.size = 0
        self.written = False

    def write(self, data):
        """Add message text; full 64 KiB chunks go to the log at once."""
        self.buffer += data
        self.size += len(data)
        while len(self.buffer) >= CHUNK:
            chunk = bytes(self.buffer[:CHUNK])
            del self.buffer[:CHUNK]
            self.queue.append([(record.BODY, self.id, chunk)])
            self.written = True

    def commit(self, envelope):
        """Append the rest of the text and the COMMIT record (not yet synced)."""
        envelope.size = self.size
        records = []
        if self.buffer:
            records.append((record.BODY, self.id, bytes(self.buffer)))
        records.append((record.COMMIT, self.id, envelope.encode()))
        self.queue.append(records)
        self.buffer = bytearray()
        self.written = True

    def abort(self):
        """Forget the message; tell the log if part of it was written (best effort)."""
        self.buffer = bytearray()
        if self.written:
            try:
                self.queue.append([(record.ABORTED, self.id, b"")])
            except LogError:
                pass

