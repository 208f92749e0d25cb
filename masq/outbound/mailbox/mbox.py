"""Append one message to an mbox file, safely and streaming.

Owns mbox appending: the safe open (O_NOFOLLOW, no FIFO, a plain file of its owner's with
one link, not swapped while opened), the dot-lock plus fcntl lock within LOCK_TIMEOUT
(a dot-lock older than STALE_LOCK is removed), the `From ` line, mboxrd `>From ` quoting
(`FromQuoter`, streaming), truncation back to the original length on any failure; and,
for a root caller, creating a missing mbox owned by its user before a child drops to that
user (`prepare_mbox`). Lines end in LF.

Does not choose paths or owners (masq.outbound.local does), run commands or fork.

Hostile input: the message bytes (lines of any length, `From ` anywhere, runs of `>`) and a
mailbox path under a world-writable spool (symlinks, hard links, FIFOs, someone else's
file put where the mailbox should be). Memory stays flat in message size.

Fails with an Outcome (the table is in `masq.outbound.mailbox.write`): a refused mailbox is
4.2.0, a lock held past the timeout 4.2.1, file system errors 4.3.1, 4.2.2 or 4.3.0. The
mailbox is truncated back to its original length on every failure.
"""

import errno
import fcntl
import itertools
import os
import re
import stat
import time

from masq.base.clock import Clock
from masq.outbound.mailbox.write import (Refuse, ensure_parent, os_outcome, to_lf, unlink_quietly,
                                         write_all)
from masq.outbound.outcome import Outcome

LOCK_TIMEOUT = 30.0
STALE_LOCK = 300.0
CHUNK = 65536
_GTS = re.compile(rb">*")
_NEXT_CANDIDATE = re.compile(rb"\n[>F]")
_FROM = b"From "
_MAX_GTS = 65536                    # a longer run of '>' is not worth quoting: it is no From_ line


class FromQuoter:
    """mboxrd quoting, streaming: a line matching `>*From ` gets one more `>` in front.

    With rd False, masqmail's `fromhack` (mboxo): only a line starting `From ` is quoted."""

    def __init__(self, rd=True):
        self.rd = rd
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
        if not self.head and self.rd:
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


def _open_mbox(path):
    flags = (os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY |
             os.O_NONBLOCK | os.O_CLOEXEC)
    ensure_parent(path)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        why = {errno.ELOOP: "is a symbolic link", errno.EISDIR: "is a directory",
               errno.ENXIO: "is not a regular file"}.get(exc.errno)
        if why:
            raise Refuse(Outcome.temp("4.2.0", "mailbox %s %s" % (path, why))) from None
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
        raise Refuse(Outcome.temp("4.2.0", "mailbox %s %s" % (path, why)))


def _dotlock(lock_path, stale_after, wall):
    """Return True (made it), False (someone holds it) or None (cannot make one here)."""
    try:
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        try:
            if wall() - os.lstat(lock_path).st_mtime > stale_after:
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


def _try_lock(fd, lock_path, stale_after, wall):
    """Take the dot-lock and the fcntl lock; return (got both, made a dot-lock)."""
    dot = _dotlock(lock_path, stale_after, wall)
    if dot is False:
        return False, False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if dot:
            unlink_quietly(lock_path, None)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False, False
        raise
    return True, bool(dot)


def _lock(fd, path, timeout, stale_after, clock, sleep):
    """Lock the mailbox within timeout; return whether a dot-lock was made."""
    deadline, delay = clock.monotonic() + timeout, 0.02
    while True:
        got, dot = _try_lock(fd, path + ".lock", stale_after, clock.time)
        if got:
            return dot
        left = deadline - clock.monotonic()
        if left <= 0:
            raise Refuse(Outcome.temp("4.2.1", "mailbox %s locked for %gs" % (path, timeout)))
        sleep(min(delay, left))
        delay = min(delay * 2, 0.5)


def from_line(sender, now):
    """Return the mbox `From ` line for sender at time now (MAILER-DAEMON for `<>`)."""
    who = re.sub(r"[\x00-\x20\x7f]", "_", sender) if sender else "MAILER-DAEMON"
    return ("From %s  %s\n" % (who, time.asctime(time.localtime(now)))).encode(
        "utf-8", "surrogateescape")


def with_from_line(chunks, sender, now, line=True, quote=True):
    """Yield LF text chunks for a pipe or MDA: the `From ` line first if line, and body
    lines starting `From ` quoted as `>From ` if quote (masqmail's fromline and fromhack)."""
    if line:
        yield from_line(sender, now)
    if not quote:
        yield from chunks
        return
    quoter = FromQuoter(rd=False)
    for chunk in chunks:
        out = quoter.feed(chunk)
        if out:
            yield out
    tail = quoter.finish()
    if tail:
        yield tail


def _append(fd, sender, data_iter, prefix_headers, now):
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        write_all(fd, b"\n")                       # an earlier writer left no line end
    quoter = FromQuoter()
    pending = [from_line(sender, now)]
    for chunk in to_lf(itertools.chain((prefix_headers,), data_iter)):
        pending.append(quoter.feed(chunk))
        if sum(map(len, pending)) >= CHUNK:
            write_all(fd, b"".join(pending))
            pending = []
    pending.append(quoter.finish() + b"\n")
    write_all(fd, b"".join(pending))
    os.fsync(fd)


def deliver_mbox(path, sender, data_iter, prefix_headers, now, owner_uid=None,
                 lock_timeout=LOCK_TIMEOUT, stale_after=STALE_LOCK, clock=None, sleep=time.sleep):
    """Append the message to the mbox at path (owner_uid None: any owner); return an Outcome.

    `clock` (masq.base.clock: the loop's) times the wait for the lock and tells a stale dot-lock;
    `sleep` waits between tries (only where blocking is allowed: a child, or no wait)."""
    clock = clock or Clock()        # a caller without a loop (tools, tests): the real one
    try:
        fd = _open_mbox(path)
    except Refuse as refuse:
        return refuse.outcome
    except OSError as exc:
        return os_outcome(exc, "mailbox %s" % path)
    try:
        _check_mbox(fd, path, owner_uid)
        dot = _lock(fd, path, lock_timeout, stale_after, clock, sleep)
        try:
            return _write_locked(fd, path, sender, data_iter, prefix_headers, now)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
            if dot:
                unlink_quietly(path + ".lock", None)
    except Refuse as refuse:
        return refuse.outcome
    except OSError as exc:
        return os_outcome(exc, "mailbox %s" % path)
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
            return os_outcome(exc, "mailbox %s" % path)
        raise
    return Outcome.ok("delivered to mailbox %s" % path)


def prepare_mbox(path, uid, gid):
    """As root: create a missing mbox (and its parent) owned by uid:gid, mode 0600."""
    ensure_parent(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY,
                     0o600)
    except OSError:
        return                     # exists (checked when delivering) or cannot: reported then
    try:
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
