"""The log's files: bounded segments, the append protocol every process shares, syncing.

The log is a sequence of segment files `queue.NNNNNNNN.log` (a legacy `queue.log` is
segment 0). Appends go to the newest; a segment that reached `segment_size` is closed by the
next appender, which starts the next one. Every appender (`sendmail`, `-bs`, the daemon,
`masq rm`) takes `flock(queue.lock, LOCK_EX)`, then checks the tail it appends after: what
other processes appended since it last looked is read (`on_foreign`, for processes that keep
an index) or, for a one-shot writer, only checked against the tail mark that the last
appender left in `queue.lock`; a torn tail is saved under `corrupt/` and cut before anything
lands after it. A write that fails part-way is cut off again before the lock is released.

Durability is `sync()`: one fdatasync per segment written since the last sync (group
commit), and one fsync of the directory when one of them may not have a durable name yet.
A segment is made without syncing (a large text that starts segments while it arrives
syncs nothing before its commit), so a crash may leave one without its header: such a
segment held nothing acknowledged (any sync of a record in it covered its header too) and
is set aside when the log is opened (`Journal.open`). Which segments have durable names is
a mark in `queue.lock` that every process shares. An fdatasync error is never retried and trusted (fsyncgate): the segment is
reopened, the unsynced range read back and checked, a bad part saved and cut, and the error
raised so that the caller answers 4xx for what the sync was meant to cover.

Does not interpret records; see store.py. Deleting segments is compaction's (spool.py).
"""

import errno
import fcntl
import mmap
import os
import struct
import zlib

from masq.queue import record

LOG_NAME = "queue.log"              # legacy single-file log: read as segment 0
LOCK_NAME = "queue.lock"
SEGMENT_SIZE = 1 << 20
SCAN_WINDOW = 1 << 20      # a scan lets go of the mapped pages behind it this often
GROW = 16       # a large message's text fills segments of up to 16 times the size: a 1 GB
                # message starts 64 segments, not 1,024 (each costs an fdatasync of its own
                # at the commit)
_TAIL = struct.Struct(">IQ")        # newest segment, the end of its last whole append
_NAMED = struct.Struct(">II")       # after it: the newest segment whose name a directory
                                    # fsync made durable, and its CRC-32


class LogError(Exception):
    """The log cannot be used: names the file and the reason; `temporary` for ENOSPC/EIO."""

    def __init__(self, message, temporary=False):
        super().__init__(message)
        self.temporary = temporary


class BadHeader(LogError):
    """A segment whose header no salt check or record confirms. `missing`: shorter than a
    header, or only zeros there: what a crash leaves of a segment made since the last sync
    (the file's name was durable, its first page not)."""

    def __init__(self, message, missing=False):
        super().__init__(message)
        self.missing = missing


def segment_name(number):
    """Return the file name of segment number."""
    return LOG_NAME if number == 0 else "queue.%08d.log" % number


def segment_numbers(folder):
    """Return the numbers of the segment files in folder, oldest first."""
    out = []
    for name in os.listdir(folder):
        if name == LOG_NAME:
            out.append(0)
        elif name.startswith("queue.") and name.endswith(".log") and len(name) == 18:
            digits = name[6:14]
            if digits.isdigit():
                out.append(int(digits))
    return sorted(out)


def create(path, salt=None):
    """Create an empty segment at path unless one exists (atomic: temp file + link).

    Nothing is synced here: the header is covered by the fdatasync that covers the first
    record written after it, the name by the directory fsync of that same sync (Journal.sync).
    A live process never sees a segment without its whole header (it is written before the
    link); only a crash can leave one (Journal.open sets it aside). The salt is random per
    segment unless given (tests): a segment made again under the same number after a crash
    never has the salt of the one set aside."""
    tmp = "%s.new.%d" % (path, os.getpid())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW   # never a planted name
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileExistsError:                 # left by a crash with our pid (or planted)
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o600)
    try:
        try:
            _write_all(fd, record.file_header(salt if salt is not None else os.urandom(8)))
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def sync_dir(path):
    """fsync a directory so that a new, renamed or removed entry in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _corrupt_folder(spool):
    """Return the path of corrupt/ in spool, made (0700) if missing; never a symlink."""
    folder = os.path.join(spool, "corrupt")
    if not os.path.isdir(folder) or os.path.islink(folder):
        if os.path.lexists(folder):
            os.unlink(folder)                   # a planted symlink or file
        os.mkdir(folder, 0o700)
    return folder


def corrupt_file(spool, name, replace):
    """Return (a new file in corrupt/ opened for writing, its path), or (None, path) if it
    exists and replace is false. Never through a symlink: the spool may belong to the
    daemon's user while root repairs it."""
    folder = _corrupt_folder(spool)
    path = os.path.join(folder, name)
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


def save_damage(spool, seg, start, data):
    """Copy damaged bytes to corrupt/seg-N-offset-M.bin (once, synced); return the path."""
    out, path = corrupt_file(spool, "seg-%d-offset-%d.bin" % (seg, start), replace=False)
    if out is not None:
        with out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    return path


class Segment:
    """One open segment file."""

    def __init__(self, folder, number):
        self.number = number
        self.path = os.path.join(folder, segment_name(number))
        self.fd = -1
        self.seed = 0
        self.header_size = record.FILE_HEADER_SIZE
        self.end = 0          # everything before `end` has been seen by this process
        self.synced = 0       # everything before `synced` was covered by our fdatasync
        self.unsynced = False

    def open(self):
        """Open the file; LogError if it is not a usable segment."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW)
        except OSError as exc:
            raise LogError("cannot open %s: %s" % (self.path, exc.strerror)) from None
        header = os.pread(fd, record.FILE_HEADER_SIZE, 0)
        found = record.parse_file_header(header) or self._resync_salt(fd, header)
        if found is None:
            os.close(fd)
            if len(header) < record.FILE_HEADER_SIZE or not header.strip(b"\0"):
                raise BadHeader("%s has no header (it was being started when the system "
                                "stopped)" % self.path, missing=True)
            raise BadHeader("%s is not a masq queue log (bad header)" % self.path)
        self.fd = fd
        self.seed, self.header_size = record.seed(found[0]), found[1]
        self.end = self.synced = self.header_size
        return self

    @staticmethod
    def _resync_salt(fd, header):
        """Both salt checks failed: believe a candidate salt under which some record of the
        segment is valid (the salt itself is fine, its checks were hit). Not only the first
        record: it may be damaged too, and is then one Damage among whole records."""
        size = os.fstat(fd).st_size
        if size <= record.FILE_HEADER_SIZE:
            return None
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as buf:
            for salt in record.header_candidates(header):
                for found in record.scan(buf, record.FILE_HEADER_SIZE, size, record.seed(salt)):
                    if isinstance(found, record.Record):
                        return salt, record.FILE_HEADER_SIZE
        return None

    def close(self):
        """Close the file descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def size(self):
        """Return the current size of the file."""
        return os.fstat(self.fd).st_size

    def encode(self, rtype, msgid, payload):
        """Return one framed record for this segment."""
        return record.encode(self.seed, rtype, msgid, payload)

    def write(self, data):
        """Append data at the end (the caller holds the lock); return its offset."""
        start = self.end
        try:
            _write_all(self.fd, data)
        except OSError as exc:
            self._cut(start)
            raise LogError("cannot write %s: %s" % (self.path, exc.strerror),
                           temporary=True) from None
        self.end = start + len(data)
        self.unsynced = True
        return start

    def _cut(self, offset):
        try:
            os.ftruncate(self.fd, offset)
        except OSError:
            pass

    def scan(self, start, limit=None, with_bodies=False):
        """Yield Record and Damage items between start and limit (default: end of file)."""
        if limit is None:
            limit = self.size()
        if limit <= start:
            return
        with mmap.mmap(self.fd, limit, prot=mmap.PROT_READ) as buf:
            done = start - start % mmap.PAGESIZE
            for item in record.scan(buf, start, limit, self.seed, with_bodies, self.number):
                yield item
                passed = item.offset - item.offset % mmap.PAGESIZE
                if passed - done >= SCAN_WINDOW:      # pages read stay out of our RSS
                    buf.madvise(mmap.MADV_DONTNEED, done, passed - done)
                    done = passed
            del buf

    def read(self, offset, length):
        """Return length bytes at offset."""
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise LogError("%s: short read at offset %d" % (self.path, offset))
        return data

    def sync(self):
        """fdatasync; on error reopen, verify the unsynced range, raise LogError (temporary)."""
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            error = LogError("cannot sync %s: %s" % (self.path, exc.strerror), temporary=True)
            self._reopen_and_verify()
            raise error from None
        self.unsynced = False
        self.synced = self.end

    def _reopen_and_verify(self):
        """After a failed fdatasync: trust no cached state; read the range back from a new fd.

        Returns the offset of the first bad byte in the unsynced range (cut), or None."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW)
        except OSError:
            return None
        os.close(self.fd)
        self.fd = fd
        size = self.size()
        bad = size if size < self.end else None
        for item in self.scan(self.synced, min(size, self.end)):
            if isinstance(item, record.Damage):
                bad = item.offset
                break
        if bad is not None:
            self._cut(bad)
            self.end = bad
        return bad

    def truncate(self, offset):
        """Cut the file at offset (a torn tail) and sync it."""
        os.ftruncate(self.fd, offset)
        os.fsync(self.fd)
        self.end = min(self.end, offset)
        self.synced = min(self.synced, offset)


class Journal:
    """The segments of one spool and the lock every appender takes."""

    def __init__(self, folder, segment_size=SEGMENT_SIZE, on_foreign=None, report=None):
        self.dir = folder
        self.segment_size = segment_size
        self.on_foreign = on_foreign      # None: a one-shot writer that keeps no index
        self.report = report or (lambda text: None)
        self.segments = {}                # number -> open Segment
        self.lock_fd = -1
        self.newest = None
        self.named = 0                    # segments up to this one have durable names
        self.owner = (None, None)         # (segment, id of the large text it is for; "":
                                          # several), while that segment is the newest

    # opening

    def open(self, create_missing=True, all_segments=True):
        """Open the lock file and the segments (all, or only the newest); LogError if unusable."""
        path = os.path.join(self.dir, LOCK_NAME)
        try:
            self.lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise LogError("cannot open %s: %s" % (path, exc.strerror)) from None
        self.lock()
        try:
            numbers = self._set_aside_unfinished(segment_numbers(self.dir), all_segments)
            if not numbers:
                if not create_missing:
                    raise LogError("%s: no queue log" % self.dir)
                numbers = [1]
                self._create(1)
                self._open(1).unsynced = True     # its header and name: the first sync
            if self._read_named() > numbers[-1]:
                self._write_named(0)              # segments went away behind our back
        except BaseException:
            self.close()
            raise
        finally:
            if self.lock_fd >= 0:
                self.unlock()
        return self

    def _set_aside_unfinished(self, numbers, all_segments):
        """Open the segments (all, or only the newest whole one) and set aside those a
        crash left unfinished; return the numbers left, oldest first. BadHeader for a bad
        header that is damage.

        Unfinished: a header missing or all zeros, anywhere (a sendmail's large text may
        start a segment that the daemon's next commit rotates past; no sync covered it),
        or a bad header in the newest segments, each followed only by such segments
        (never a legacy queue.log: no masq makes one, so it is someone else's file). What
        they hold was never covered by a sync, so never acknowledged; it is kept in
        corrupt/ all the same."""
        bad = {}
        for number in reversed(numbers):
            try:
                if number not in self.segments:
                    self._open(number)
            except BadHeader as exc:
                bad[number] = exc
                continue
            if not all_segments:
                break
        trailing = True
        for number in reversed(numbers):
            exc = bad.get(number)
            if exc is None:
                trailing = False
            elif number and (exc.missing or trailing):      # never made by us: queue.log
                self._set_aside(number, exc)
            else:
                raise exc
        return [n for n in numbers if n not in bad]

    def _set_aside(self, number, why):
        path = os.path.join(self.dir, segment_name(number))
        try:
            size = os.lstat(path).st_size
            if size == 0:
                os.unlink(path)
                where = "removed it"
            else:
                folder = _corrupt_folder(self.dir)
                name = "seg-%d-unfinished-%d.log" % (number, os.lstat(path).st_ino)
                os.rename(path, os.path.join(folder, name))
                sync_dir(folder)
                where = "moved it to corrupt/%s" % name
            sync_dir(self.dir)
        except OSError as exc:
            raise LogError("cannot set aside %s: %s" % (path, exc.strerror)) from None
        self.report("queue: %s (%d bytes); %s: a crash stopped it before any sync, nothing "
                    "acknowledged was in it" % (why, size, where))

    def _create(self, number):
        path = os.path.join(self.dir, segment_name(number))
        try:
            create(path)
        except OSError as exc:
            raise LogError("cannot create %s: %s" % (path, exc.strerror),
                           temporary=exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT)) from None

    def _open(self, number):
        seg = Segment(self.dir, number).open()
        self.segments[number] = seg
        if self.newest is None or number > self.newest.number:
            self.newest = seg
        return seg

    def close(self):
        """Close every segment and the lock file."""
        for seg in self.segments.values():
            seg.close()
        self.segments.clear()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def ordered(self):
        """Return the open segments, oldest first."""
        return [self.segments[n] for n in sorted(self.segments)]

    def size(self):
        """Return the bytes all open segments use."""
        return sum(seg.end for seg in self.segments.values())

    # the lock and the tail mark

    def lock(self):
        """Take the append lock (blocking; held only for one append or one step)."""
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)

    def unlock(self):
        """Release the append lock."""
        fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def _read_mark(self):
        data = os.pread(self.lock_fd, _TAIL.size, 0)
        return _TAIL.unpack(data) if len(data) == _TAIL.size else (None, None)

    def _write_mark(self):
        try:
            os.pwrite(self.lock_fd, _TAIL.pack(self.newest.number, self.newest.end), 0)
        except OSError:
            pass                          # only a hint: the next appender then checks more

    def _read_named(self):
        """Return the newest segment whose name a directory fsync made durable (0: unknown)."""
        try:
            data = os.pread(self.lock_fd, _NAMED.size, _TAIL.size)
        except OSError:
            return 0
        if len(data) != _NAMED.size:
            return 0
        number, check = _NAMED.unpack(data)
        return number if check == zlib.crc32(data[:4]) else 0

    def _write_named(self, number):
        try:
            os.pwrite(self.lock_fd, _NAMED.pack(number, zlib.crc32(struct.pack(">I", number))),
                      _TAIL.size)
        except OSError:
            pass                          # then the next sync fsyncs the directory again

    # appending

    def append(self, data, grow=None):
        """Append framed records (bytes built by encode) as one write; return (segment, offset).

        `data` is a callable seg -> bytes, so records are framed with the salt of the
        segment they land in. `grow`: the id of a large message whose text this is: it may
        fill a segment up to GROW times the segment size, and it gets segments of its own
        (it starts one rather than follow other records, and other records start one rather
        than follow it), so that compaction can leave them where they are (docs/QUEUE.md).
        Two large texts arriving at once share theirs."""
        self.lock()
        try:
            self.catch_up_locked()
            seg = self.newest
            owner = self.owner[1] if self.owner[0] == seg.number else None
            if seg.end > seg.header_size and (owner is None if grow else owner is not None):
                seg, owner = self.rotate_locked(), None
            payload = data(seg)
            limit = self.segment_size * (GROW if grow else 1)
            if seg.end > seg.header_size and seg.end + len(payload) > limit:
                payload = None                    # one framed copy of the text at a time
                seg, owner = self.rotate_locked(), None
                payload = data(seg)
            if grow:
                self.owner = (seg.number, grow if owner in (None, grow) else "")
            start = seg.write(payload)
            self._write_mark()
            return seg.number, start
        finally:
            self.unlock()

    def rotate_locked(self):
        """Start the next segment (the caller holds the lock); return it. Nothing is synced
        now: the next sync covers its header and its name."""
        number = self.newest.number + 1
        self._create(number)
        seg = self._open(number)
        seg.unsynced = True
        self._write_mark()
        return seg

    def catch_up_locked(self):
        """Read (or, without an index, check) what others appended; cut a torn tail first."""
        first = self.newest.number
        number = first + 1
        while os.path.exists(os.path.join(self.dir, segment_name(number))):
            self._open(number)
            number += 1
        for number in range(first if self.on_foreign is not None else number - 1, number):
            seg = self.segments[number]
            size = seg.size()
            if self.on_foreign is None:
                mark_seg, mark_end = self._read_mark()
                if mark_seg == seg.number and seg.end <= mark_end <= size:
                    seg.end = mark_end        # the last appender checked up to its mark
            if size == seg.end:
                continue
            items = list(seg.scan(seg.end, size))
            if items and isinstance(items[-1], record.Damage) and not items[-1].complete:
                self.cut_torn_tail(seg, items.pop().offset, size)
            seg.end = seg.size()
            if self.on_foreign is not None and items:
                self.on_foreign(items)

    def cut_torn_tail(self, seg, start, size):
        """Save a torn tail's bytes under corrupt/, then cut the segment at start."""
        try:
            saved = save_damage(self.dir, seg.number, start, seg.read(start, size - start))
        except (OSError, LogError) as exc:
            saved = "nowhere (%s)" % exc
        seg.truncate(start)
        self.report("queue: cut torn tail of %d bytes at %s offset %d, saved to %s"
                    % (size - start, os.path.basename(seg.path), start, saved))

    # syncing and removing

    def sync(self):
        """fdatasync every segment this process wrote (or made) since its last sync, then
        fsync the directory once if one of them may not have a durable name yet (it was made
        since the last directory fsync of any process); LogError on error."""
        error, top = None, 0
        for seg in self.ordered():
            if seg.unsynced:
                top = seg.number
                try:
                    seg.sync()
                except LogError as exc:
                    error = error or exc
        if top > self.named and top > self._read_named():
            try:
                sync_dir(self.dir)
            except OSError as exc:
                error = error or LogError("cannot sync %s: %s" % (self.dir, exc.strerror),
                                          temporary=True)
            else:
                self._write_named(max(top, self._read_named()))
        if top > self.named and error is None:
            self.named = top
        if error is not None:
            raise error

    def unsynced(self):
        """Return True while something this process wrote is not yet synced."""
        return any(seg.unsynced for seg in self.segments.values())

    def remove_oldest(self):
        """Delete the oldest segment (never the newest) and make the removal durable."""
        return self.remove(min(self.segments))

    def remove(self, number):
        """Delete segment number (never the newest) and make the removal durable; return
        number, or None if it is the newest."""
        seg = self.segments[number]
        if seg is self.newest:
            return None
        self.lock()
        try:
            try:
                os.unlink(seg.path)
            except FileNotFoundError:
                pass
            seg.close()
            del self.segments[seg.number]
            sync_dir(self.dir)
        finally:
            self.unlock()
        return seg.number


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
