"""The append-only log file: opening it safely, appending records under flock, syncing.

Owns the file descriptor of `queue.log` and the append protocol shared by every process
(`sendmail`, the daemon, `masq rm`): take `flock(LOCK_EX)`, read what others appended since
we last looked (`on_foreign` callback), write our records at the end in one write, release.
A write that fails part-way is cut off again (ftruncate to the old end) before the lock is
released, so a failed append leaves no torn record for the next writer to build on.

Durability is `sync()`: one fdatasync covering everything appended so far (group commit).
An fdatasync error is never retried and trusted (fsyncgate): it is raised, and the caller
answers 4xx for what the sync was meant to cover.

Does not interpret records; see store.py.
"""

import errno
import fcntl
import mmap
import os

from masq.queue import record

LOG_NAME = "queue.log"


class LogError(Exception):
    """The log cannot be used: names the file and the reason; `temporary` for ENOSPC/EIO."""

    def __init__(self, message, temporary=False):
        super().__init__(message)
        self.temporary = temporary


def _salt():
    return os.urandom(8)


def create(path, salt=None):
    """Create an empty log at path unless one exists (atomic: temp file + link)."""
    tmp = "%s.new.%d" % (path, os.getpid())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW   # never a planted name
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileExistsError:                 # left by a crash with our pid (or planted)
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o600)
    try:
        os.write(fd, record.file_header(salt or _salt()))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    sync_dir(os.path.dirname(path) or ".")


def sync_dir(path):
    """fsync a directory so that a new or renamed entry in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Log:
    """An open queue log."""

    def __init__(self, path, on_foreign=None):
        self.path = path
        self.on_foreign = on_foreign
        self.fd = -1
        self.salt = None
        self.seed = 0
        self.end = 0          # everything before `end` has been seen by this process
        self.unsynced = False

    def open(self, create_missing=True):
        """Open (and if allowed, create) the log; LogError if it is not a usable log."""
        if create_missing and not os.path.lexists(self.path):
            try:
                create(self.path)
            except OSError as exc:
                raise LogError("cannot create %s: %s" % (self.path, exc.strerror)) from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW)
        except OSError as exc:
            raise LogError("cannot open %s: %s" % (self.path, exc.strerror)) from None
        header = os.pread(fd, record.FILE_HEADER_SIZE, 0)
        salt = record.parse_file_header(header)
        if salt is None:
            os.close(fd)
            raise LogError("%s is not a masq queue log (bad header)" % self.path)
        self.close()
        self.fd, self.salt, self.seed = fd, salt, record.seed(salt)
        self.end = record.FILE_HEADER_SIZE

    def close(self):
        """Close the file descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def size(self):
        """Return the current size of the file."""
        return os.fstat(self.fd).st_size

    def lock(self):
        """Take the append lock (blocking; it is held only for one write)."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def unlock(self):
        """Release the append lock."""
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def encode(self, rtype, msgid, payload):
        """Return one framed record for this log."""
        return record.encode(self.seed, rtype, msgid, payload)

    def append(self, data):
        """Append framed records (bytes); return the offset they start at."""
        self.lock()
        try:
            self.catch_up()
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
        finally:
            self.unlock()

    def _cut(self, offset):
        try:
            os.ftruncate(self.fd, offset)
        except OSError:
            pass

    def catch_up(self):
        """Hand records that other processes appended to on_foreign(list of items)."""
        size = self.size()
        if size <= self.end:
            return
        if self.on_foreign is None:
            self.end = size
            return
        items = list(self.scan(self.end, size))
        self.end = size
        if self.on_foreign:
            self.on_foreign(items)

    def scan(self, start, limit=None, with_bodies=False):
        """Yield Record and Damage items between start and limit (default: end of file)."""
        if limit is None:
            limit = self.size()
        if limit <= start:
            return
        with mmap.mmap(self.fd, limit, prot=mmap.PROT_READ) as buf:
            for item in record.scan(buf, start, limit, self.seed, with_bodies):
                yield item
            del buf

    def read(self, offset, length):
        """Return length bytes at offset."""
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise LogError("%s: short read at offset %d" % (self.path, offset))
        return data

    def sync(self):
        """fdatasync the log; LogError (temporary) if the kernel reports an error."""
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            raise LogError("cannot sync %s: %s" % (self.path, exc.strerror),
                           temporary=True) from None
        self.unsynced = False

    def truncate(self, offset):
        """Cut the file at offset (recovery of a torn tail) and sync it."""
        os.ftruncate(self.fd, offset)
        os.fsync(self.fd)
        self.end = min(self.end, offset)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
