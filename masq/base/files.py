"""Files the daemon creates outside the spool (pid file, status file), safely even as root.

Owns three rules, for every file masq writes by a name the configuration gives:
- a file is replaced whole: written to a temporary name opened with
  O_CREAT|O_EXCL|O_NOFOLLOW (never an existing file, never through a symlink), then
  renamed over the name (rename replaces a planted symlink itself, never its target);
- a file written as root goes only into a directory that root (or the process's own
  user) owns and nobody else may write (`unsafe_dir` says why not);
- a directory is given away (to the `option user` account) only if masq has just made it
  itself; one that exists, which the administrator named, is never chowned. A file the
  daemon's user must reopen (the log) is given away only through an fd opened without
  following a symlink, and only if it has no other name (a hard link to someone's file).

Fails with OSError (the caller decides whether that is a warning or an error); never
follows a symlink in the last component.
"""

import os
import stat

TMP_SUFFIX = ".tmp"


def replace(path, data, mode=0o644):
    """Replace the file at path by data (bytes): temporary file, then rename."""
    tmp = path + TMP_SUFFIX
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY
    try:
        fd = os.open(tmp, flags, mode)
    except FileExistsError:                 # left by a crash (or planted): never reused
        os.unlink(tmp)
        fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def unsafe_dir(directory, uid=None):
    """Return why directory is no place for files written as uid (default: ours), or None.

    Safe: a real directory owned by root or uid, writable by nobody else."""
    uid = os.geteuid() if uid is None else uid
    try:
        info = os.stat(directory or ".")
    except OSError as exc:
        return "%s: %s" % (directory, exc.strerror)
    if not stat.S_ISDIR(info.st_mode):
        return "%s is not a directory" % directory
    if info.st_uid not in (0, uid):
        return "%s belongs to uid %d" % (directory, info.st_uid)
    if info.st_mode & 0o022:
        return "%s may be written by others (mode %04o)" % (directory,
                                                              stat.S_IMODE(info.st_mode))
    return None


def make_dir_for(directory, uid, gid, mode=0o755):
    """Create directory for the user uid:gid, if it is missing; return True if made.

    Made by us, it may be given away; an existing one is left exactly as it is. The
    parent must be safe for root (unsafe_dir), else OSError."""
    if os.path.lexists(directory):
        return False
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, 0o755, exist_ok=True)
    why = unsafe_dir(parent)
    if why:
        raise OSError("cannot create %s: %s" % (directory, why))
    os.mkdir(directory, mode)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return True


def give_file(path, uid, gid):
    """Give the file at path (created if missing) to uid:gid; never a symlink or hard link."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY,
                 0o640)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise OSError("%s: not a regular file with one name; left as it is" % path)
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
