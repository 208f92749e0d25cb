"""Write one message into a mailbox: what maildir and mbox delivery share.

Owns the parts both formats use: the CRLF to LF conversion (`to_lf`, streaming), writing
a whole buffer, creating a mailbox's parent directory, and the failure table below (an
Outcome for an OSError, `Refuse` to stop a delivery with an Outcome). The formats are
`masq.outbound.mailbox.maildir` and `masq.outbound.mailbox.mbox`, which import this module.

Does not choose paths or owners (masq.outbound.local does), run commands or fork.

Hostile input: the message bytes (lines of any length, `From ` anywhere) and the file
system under a world-writable spool (symlinks, hard links, FIFOs, someone else's file put
where a mailbox should be). The last path component is never followed if it is a symlink;
the directories above it are the administrator's. Memory stays flat in message size.

Fails with an Outcome, never an exception for file system trouble. The table: a mailbox that
is a symlink, a hard link, a directory, a FIFO or owned by someone else than its owner is
refused with 4.2.0 (deferred: the administrator can fix it and nothing is lost); a lock that
stays held past the lock timeout is 4.2.1; disk full is 4.3.1; quota or file size limit is
4.2.2; any other error is 4.3.0. An mbox is truncated back to its original length on every
failure, so a half-written message never stays behind.
"""

import errno
import os

from masq.outbound.outcome import Outcome


class Refuse(Exception):
    """Stop a maildir or mbox delivery with `outcome` (its deliver_* returns it)."""

    def __init__(self, outcome):
        super().__init__(outcome.text)
        self.outcome = outcome


def os_outcome(exc, what):
    """Return the Outcome for an OSError during a mailbox write."""
    if exc.errno == errno.ENOSPC:
        return Outcome.temp("4.3.1", "%s: disk full" % what)
    if exc.errno in (errno.EDQUOT, errno.EFBIG):
        return Outcome.temp("4.2.2", "%s: mailbox full (%s)" % (what, exc.strerror))
    return Outcome.temp("4.3.0", "%s: %s" % (what, exc.strerror or exc))


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


def write_all(fd, data):
    """Write all of data to fd, however many writes it takes."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def ensure_parent(path):
    """Create the directory that holds path (0755) if it is missing."""
    parent = os.path.dirname(path.rstrip("/")) or "/"
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755, exist_ok=True)


def unlink_quietly(name, dir_fd):
    """Remove name (relative to dir_fd, None: the cwd), ignoring any error."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass

