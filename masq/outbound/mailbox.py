"""Write one message into a maildir or an mbox file, safely, streaming; or do so in a child.

Owns: the maildir protocol (write in `tmp/`, fsync, link into `new/` under a name never used
before, unlink, fsync `new/`), mbox appending (safe open, dot-lock plus fcntl lock, `From `
line, mboxrd `>From ` quoting, truncation back to the original length on any failure), the
CRLF to LF conversion both formats use, and, for a root caller, creating a missing mailbox
owned by its user before a child drops to that user (`prepare_mbox`, `prepare_maildir`).

Does not choose paths or owners (masq.outbound.local does), run commands or fork.

Hostile input: the message bytes (lines of any length, `From ` anywhere) and the file
system under a world-writable spool (symlinks, hard links, FIFOs, someone else's file put
where a mailbox should be). The last path component is never followed if it is a symlink
(O_NOFOLLOW; maildir subdirectories are opened relative to the maildir's own descriptor);
the directories above it are the administrator's. Memory stays flat in message size.

Fails with an Outcome, never an exception for file system trouble. The table: a mailbox that
is a symlink, a hard link, a directory, a FIFO or owned by someone else than its owner is
refused with 4.2.0 (deferred: the administrator can fix it and nothing is lost); a lock that
stays held past the lock timeout is 4.2.1; disk full is 4.3.1; quota or file size limit is
4.2.2; any other error is 4.3.0. An mbox is truncated back to its original length on every
failure, so a half-written message never stays behind.
"""

import errno
import fcntl
import itertools
import os
import re
import socket
import stat
import time

from masq.outbound.outcome import Outcome

LOCK_TIMEOUT = 30.0
STALE_LOCK = 300.0
TMP_MAX_AGE = 36 * 3600.0          # qmail's rule for leftovers in maildir tmp/
CHUNK = 65536
_GTS = re.compile(rb">*")
_NEXT_CANDIDATE = re.compile(rb"\n[>F]")
_FROM = b"From "
_MAX_GTS = 65536                    # a longer run of '>' is not worth quoting: it is no From_ line
_counter = itertools.count(1)


class _Refuse(Exception):
    """Internal: stop this delivery with outcome."""

    def __init__(self, outcome):
        super().__init__(outcome.text)
        self.outcome = outcome


def _os_outcome(exc, what):
    """Return the Outcome for an OSError during a mailbox write."""
    if exc.errno == errno.ENOSPC:
        return Outcome.temp("4.3.1", "%s: disk full" % what)
    if exc.errno in (errno.EDQUOT, errno.EFBIG):
        return Outcome.temp("4.2.2", "%s: mailbox full (%s)" % (what, exc.strerror))
    return Outcome.temp("4.3.0", "%s: %s" % (what, exc.strerror or exc))


# streaming conversions


def to_lf(chunks):
    """Yield chunks with CRLF line ends turned into LF (a CR split across chunks is held)."""
    held = b""
    for chunk in chunks:
        data = held + chunk if held else chunk
        held = b""
        if data.endswith(b"\r"):
            data, held = data[:-1], b"\r"
        if data:
            yield data.replace(b"\r\n", b"\n")
    if held:
        yield held


class FromQuoter:
    """mboxrd quoting, streaming: a line matching `>*From ` gets one more `>` in front."""

    def __init__(self):
        self.bol = True         # the next byte starts a line
        self.gts = 0            # '>' at the start of the current line, held back
        self.head = b""         # bytes after them that may still become "From "
        self.last = b"\n"       # the last byte given out (to end the message cleanly)

    def feed(self, data):
        """Return the quoted form of the next LF-terminated bytes."""
        out, pos, size = [], 0, len(data)
        while pos < size:
            if self.bol:
                pos = self._line_start(data, pos, out)
                continue
            found = _NEXT_CANDIDATE.search(data, pos)
            if found is None:
                out.append(data[pos:])
                self.bol = data.endswith(b"\n")
                break
            out.append(data[pos:found.start() + 1])
            pos, self.bol = found.start() + 1, True
        return self._out(out)

    def _line_start(self, data, pos, out):
        if not self.head:
            run = _GTS.match(data, pos).end()
            self.gts += run - pos
            pos = run
            if pos == len(data) and self.gts <= _MAX_GTS:
                return pos                                  # all '>' so far: wait
        take = data[pos:pos + len(_FROM) - len(self.head)]
        candidate = self.head + take
        if len(candidate) < len(_FROM) and _FROM.startswith(candidate) and \
                self.gts <= _MAX_GTS:
            self.head = candidate
            return len(data)                                # still undecided: wait
        if candidate == _FROM:
            out.append(b">" + b">" * self.gts + candidate)
            pos += len(take)
        else:
            out.append(b">" * self.gts + self.head)         # the new bytes are rescanned
        self.gts, self.head, self.bol = 0, b"", False
        return pos

    def finish(self):
        """Return what is still held back, plus a LF if the text did not end with one."""
        out = [b">" * self.gts + self.head]
        self.gts, self.head = 0, b""
        tail = self._out(out)
        return tail + (b"" if self.last == b"\n" else b"\n")

    def _out(self, out):
        data = b"".join(out)
        if data:
            self.last = data[-1:]
        return data


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _ensure_parent(path):
    parent = os.path.dirname(path.rstrip("/")) or "/"
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755, exist_ok=True)


# maildir


def _hostname(name=None):
    name = name or socket.gethostname() or "localhost"
    return "".join(c if c.isalnum() or c in ".-_" else "\\%03o" % (ord(c) & 0o377)
                   for c in name)


def unique_name(hostname, now=None):
    """Return a new maildir file name: `time.M<usec>P<pid>Q<counter>.<hostname>`."""
    now = time.time() if now is None else now
    seconds = int(now)
    return "%d.M%06dP%dQ%d.%s" % (seconds, int((now - seconds) * 1e6), os.getpid(),
                                  next(_counter), hostname)


def _directory(name, parent_fd=None, shown=None):
    """Create (0700) and open a directory, refusing a symlink or a non-directory."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _Refuse(Outcome.temp("4.2.0", "maildir %s is not a directory (or is a "
                                       "symbolic link)" % (shown or name))) from None
        raise


def clean_tmp(tmp_fd, now, max_age=TMP_MAX_AGE):
    """Remove files left in a maildir's tmp/ (by crashed deliveries) older than max_age."""
    try:
        names = os.listdir(tmp_fd)
    except OSError:
        return
    for name in names:
        try:
            st = os.stat(name, dir_fd=tmp_fd, follow_symlinks=False)
            if now - st.st_mtime > max_age:
                os.unlink(name, dir_fd=tmp_fd)
        except OSError:
            pass


def _write_tmp(tmp_fd, hostname, now, chunks):
    """Write chunks to a new file in tmp/, fsynced; return its name."""
    for _ in range(100):
        name = unique_name(hostname, now)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                         os.O_NOCTTY, 0o600, dir_fd=tmp_fd)
            break
        except FileExistsError:
            continue
    else:
        raise OSError(errno.EEXIST, "cannot find a unique name in tmp/")
    try:
        for chunk in chunks:
            _write_all(fd, chunk)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(name, tmp_fd)
        raise
    os.close(fd)
    return name


def _link_new(tmp_fd, new_fd, name, hostname, now):
    """Link tmp/name into new/ under a fresh name (never over an existing one)."""
    target = name
    for _ in range(100):
        try:
            os.link(name, target, src_dir_fd=tmp_fd, dst_dir_fd=new_fd, follow_symlinks=False)
            return target
        except FileExistsError:
            target = unique_name(hostname, now)
    raise OSError(errno.EEXIST, "cannot find a unique name in new/")


def deliver_maildir(path, data_iter, prefix_headers, hostname=None, now=None):
    """Deliver the message (wire-form chunks) into the maildir at path; return an Outcome."""
    hostname, now = _hostname(hostname), time.time() if now is None else now
    fds, name = [], None
    try:
        _ensure_parent(path)
        fds.append(_directory(path))
        for sub in ("tmp", "new", "cur"):
            fds.append(_directory(sub, fds[0], os.path.join(path, sub)))
        tmp_fd, new_fd = fds[1], fds[2]
        clean_tmp(tmp_fd, now)
        name = _write_tmp(tmp_fd, hostname, now,
                          to_lf(itertools.chain((prefix_headers,), data_iter)))
        final = _link_new(tmp_fd, new_fd, name, hostname, now)
        os.unlink(name, dir_fd=tmp_fd)
        name = None
        os.fsync(new_fd)
        return Outcome.ok("delivered to maildir %s (%s)" % (path, final))
    except _Refuse as refuse:
        return refuse.outcome
    except OSError as exc:
        return _os_outcome(exc, "maildir %s" % path)
    finally:
        if name is not None and len(fds) > 1:
            _unlink_quietly(name, fds[1])
        for fd in fds:
            os.close(fd)


def _unlink_quietly(name, dir_fd):
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


# mbox


def _open_mbox(path):
    flags = (os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY |
             os.O_NONBLOCK | os.O_CLOEXEC)
    _ensure_parent(path)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        why = {errno.ELOOP: "is a symbolic link", errno.EISDIR: "is a directory",
               errno.ENXIO: "is not a regular file"}.get(exc.errno)
        if why:
            raise _Refuse(Outcome.temp("4.2.0", "mailbox %s %s" % (path, why))) from None
        raise
    os.set_blocking(fd, True)
    return fd


def _check_mbox(fd, path, owner_uid):
    """Refuse a mailbox that is not a plain file of its owner's, or was swapped."""
    st = os.fstat(fd)
    why = None
    if not stat.S_ISREG(st.st_mode):
        why = "is not a regular file"
    elif st.st_nlink != 1:
        why = "has %d hard links" % st.st_nlink
    elif owner_uid is not None and st.st_uid != owner_uid:
        why = "is owned by uid %d, not by its user (uid %d)" % (st.st_uid, owner_uid)
    else:
        try:
            now = os.lstat(path)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            why = "was replaced while being opened"
    if why:
        raise _Refuse(Outcome.temp("4.2.0", "mailbox %s %s" % (path, why)))


def _dotlock(lock_path, stale_after):
    """Return True (made it), False (someone holds it) or None (cannot make one here)."""
    try:
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        try:
            if time.time() - os.lstat(lock_path).st_mtime > stale_after:
                os.unlink(lock_path)
        except OSError:
            pass
        return False
    except OSError:
        return None               # e.g. a spool directory the user may not write to
    try:
        os.write(fd, b"%d\n" % os.getpid())
    finally:
        os.close(fd)
    return True


def _try_lock(fd, lock_path, stale_after):
    """Take the dot-lock and the fcntl lock; return (got both, made a dot-lock)."""
    dot = _dotlock(lock_path, stale_after)
    if dot is False:
        return False, False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if dot:
            _unlink_quietly(lock_path, None)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False, False
        raise
    return True, bool(dot)


def _lock(fd, path, timeout, stale_after, clock, sleep):
    """Lock the mailbox within timeout; return whether a dot-lock was made."""
    deadline, delay = clock() + timeout, 0.02
    while True:
        got, dot = _try_lock(fd, path + ".lock", stale_after)
        if got:
            return dot
        left = deadline - clock()
        if left <= 0:
            raise _Refuse(Outcome.temp("4.2.1", "mailbox %s locked for %gs" % (path, timeout)))
        sleep(min(delay, left))
        delay = min(delay * 2, 0.5)


def from_line(sender, now):
    """Return the mbox `From ` line for sender at time now (MAILER-DAEMON for `<>`)."""
    who = re.sub(r"[\x00-\x20\x7f]", "_", sender) if sender else "MAILER-DAEMON"
    return ("From %s  %s\n" % (who, time.asctime(time.localtime(now)))).encode(
        "utf-8", "surrogateescape")


def _append(fd, sender, data_iter, prefix_headers, now):
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        _write_all(fd, b"\n")                       # an earlier writer left no line end
    quoter = FromQuoter()
    pending = [from_line(sender, now)]
    for chunk in to_lf(itertools.chain((prefix_headers,), data_iter)):
        pending.append(quoter.feed(chunk))
        if sum(map(len, pending)) >= CHUNK:
            _write_all(fd, b"".join(pending))
            pending = []
    pending.append(quoter.finish() + b"\n")
    _write_all(fd, b"".join(pending))
    os.fsync(fd)


def deliver_mbox(path, sender, data_iter, prefix_headers, now, owner_uid=None,
                 lock_timeout=LOCK_TIMEOUT, stale_after=STALE_LOCK, clock=time.monotonic,
                 sleep=time.sleep):
    """Append the message to the mbox at path (owner_uid None: any owner); return an Outcome."""
    try:
        fd = _open_mbox(path)
    except _Refuse as refuse:
        return refuse.outcome
    except OSError as exc:
        return _os_outcome(exc, "mailbox %s" % path)
    try:
        _check_mbox(fd, path, owner_uid)
        dot = _lock(fd, path, lock_timeout, stale_after, clock, sleep)
        try:
            return _write_locked(fd, path, sender, data_iter, prefix_headers, now)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
            if dot:
                _unlink_quietly(path + ".lock", None)
    except _Refuse as refuse:
        return refuse.outcome
    except OSError as exc:
        return _os_outcome(exc, "mailbox %s" % path)
    finally:
        os.close(fd)


def _write_locked(fd, path, sender, data_iter, prefix_headers, now):
    original = os.fstat(fd).st_size
    try:
        _append(fd, sender, data_iter, prefix_headers, now)
    except BaseException as exc:
        try:
            os.ftruncate(fd, original)
        except OSError:
            pass
        if isinstance(exc, OSError):
            return _os_outcome(exc, "mailbox %s" % path)
        raise
    return Outcome.ok("delivered to mailbox %s" % path)


# preparing as root


def prepare_mbox(path, uid, gid):
    """As root: create a missing mbox (and its parent) owned by uid:gid, mode 0600."""
    _ensure_parent(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY,
                     0o600)
    except OSError:
        return                     # exists (checked when delivering) or cannot: reported then
    try:
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def prepare_maildir(path, uid, gid):
    """As root: create a missing maildir directory (and its parent) owned by uid:gid."""
    _ensure_parent(path)
    try:
        os.mkdir(path, 0o700)
    except OSError:
        return
    os.chown(path, uid, gid, follow_symlinks=False)
