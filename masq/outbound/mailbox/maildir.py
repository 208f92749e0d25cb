"""Deliver one message into a maildir, safely and streaming.

Owns the maildir protocol: create `tmp/`, `new/` and `cur/` if missing, write the message
in `tmp/` under a name never used before, fsync, link it into `new/` (never over an
existing name), unlink the `tmp/` name, fsync `new/`; remove leftovers in `tmp/` older
than TMP_MAX_AGE; and, for a root caller, create a missing maildir owned by its user
before a child drops to that user (`prepare_maildir`). Lines end in LF.

Does not choose paths or owners (masq.outbound.local does), run commands or fork.

Hostile input: the message bytes and a maildir path under a spool others may write to. The
maildir itself is never followed if it is a symlink (O_NOFOLLOW), and its subdirectories
and files are opened relative to its own descriptor.

Fails with an Outcome (the table is in `masq.outbound.mailbox.write`): a maildir or subdirectory
that is a symlink or not a directory is 4.2.0; file system errors are 4.3.1, 4.2.2 or
4.3.0. A crash leaves at most a file in `tmp/`, never a partial message in `new/`.
"""

import errno
import itertools
import os
import socket

from masq.outbound.mailbox.write import (Refuse, ensure_parent, os_outcome, to_lf, unlink_quietly,
                                         write_all)
from masq.outbound.outcome import Outcome

TMP_MAX_AGE = 36 * 3600.0          # qmail's rule for leftovers in maildir tmp/
_counter = itertools.count(1)


def _hostname(name=None):
    name = name or socket.gethostname() or "localhost"
    return "".join(c if c.isalnum() or c in ".-_" else "\\%03o" % (ord(c) & 0o377)
                   for c in name)


def unique_name(hostname, now):
    """Return a new maildir file name for time now: `time.M<usec>P<pid>Q<counter>.<hostname>`."""
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
            raise Refuse(Outcome.temp("4.2.0", "maildir %s is not a directory (or is a "
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
            write_all(fd, chunk)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(name, tmp_fd)
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


def deliver_maildir(path, data_iter, prefix_headers, now, hostname=None):
    """Deliver the message (wire-form chunks) into the maildir at path at time now; return
    an Outcome."""
    hostname = _hostname(hostname)
    fds, name = [], None
    try:
        ensure_parent(path)
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
    except Refuse as refuse:
        return refuse.outcome
    except OSError as exc:
        return os_outcome(exc, "maildir %s" % path)
    finally:
        if name is not None and len(fds) > 1:
            unlink_quietly(name, fds[1])
        for fd in fds:
            os.close(fd)


def prepare_maildir(path, uid, gid):
    """As root: create a missing maildir directory (and its parent) owned by uid:gid."""
    ensure_parent(path)
    try:
        os.mkdir(path, 0o700)
    except OSError:
        return
    os.chown(path, uid, gid, follow_symlinks=False)
