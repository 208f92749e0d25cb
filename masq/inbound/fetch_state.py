"""The UIDs a fetch source has taken from its mailbox, kept in one small crash-safe file.

Owns `SPOOL/fetch/NAME.uids`: a first line naming the mailbox (`masq-fetch 1 KEY`, the
protocol, server, user, folder and, for IMAP, UIDVALIDITY), then one UID per line. A UID
is appended (and fdatasync'ed) once its message is durably in the queue and before the
server is told to delete it, so neither `keep` nor a crash between queueing and deleting
fetches a message twice. When the server's listing is known, `prune` rewrites the file
with only the UIDs still on the server (a new file, fdatasync'ed, renamed over the old
one), and after the server confirmed deletions (QUIT, EXPUNGE) `forget` drops their
keys, so the file never holds more than the mailbox does plus one run's appends.

A file for another mailbox (its KEY differs: a new server, user or UIDVALIDITY) counts as
empty. A torn last line (a crash mid-append, never synced, so nothing was deleted for it)
is ignored. Fails with OSError; the caller then does not delete.
"""

import os

MAGIC = "masq-fetch 1"


class UidState:
    """The taken UIDs of one mailbox."""

    def __init__(self, directory, name, key):
        self.directory = directory
        self.path = os.path.join(directory, name + ".uids")
        self.key = " ".join(key.split())
        self.taken = set()
        self.fd = None

    def load(self):
        """Read the file (if any) for this mailbox; return the set of taken UIDs."""
        try:
            with open(self.path, "rb") as src:
                data = src.read()
        except FileNotFoundError:
            return self.taken
        lines = data.split(b"\n")
        if not lines or lines[0].decode("utf-8", "replace") != "%s %s" % (MAGIC, self.key):
            return self.taken
        self.taken = {line.decode("ascii", "replace") for line in lines[1:-1] if line}
        return self.taken

    def add(self, uid):
        """Record uid as taken, durably (appended and fdatasync'ed)."""
        if uid in self.taken:
            return
        if self.fd is None:
            if not self._current():
                self._rewrite(self.taken)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        os.write(self.fd, uid.encode("ascii") + b"\n")
        os.fdatasync(self.fd)
        self.taken.add(uid)

    def prune(self, present):
        """Forget the taken UIDs the server no longer lists (rewrites only if some go)."""
        keep = self.taken & set(present)
        if keep != self.taken or not self._current():
            self.close()
            self._rewrite(keep)
            self.taken = keep

    def forget(self, gone):
        """Forget keys of messages the server has just removed (QUIT, EXPUNGE)."""
        keep = self.taken - set(gone)
        if keep != self.taken:
            self.close()
            self._rewrite(keep)
            self.taken = keep

    def close(self):
        """Close the append descriptor."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _current(self):
        """Return True if the file on disk is this mailbox's."""
        try:
            with open(self.path, "rb") as src:
                first = src.readline()
        except FileNotFoundError:
            return False
        return first.rstrip(b"\n").decode("utf-8", "replace") == "%s %s" % (MAGIC, self.key)

    def _rewrite(self, uids):
        os.makedirs(self.directory, 0o700, exist_ok=True)
        text = "%s %s\n" % (MAGIC, self.key) + "".join(u + "\n" for u in sorted(uids))
        temp = self.path + ".new"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.rename(temp, self.path)
        folder = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
