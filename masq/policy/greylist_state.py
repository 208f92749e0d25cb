"""The greylist's memory: triplets and client networks, kept in one small file in the spool.

Owns `SPOOL/greylist.db` and the tables behind it. A triplet (client network, sender,
recipient) is stored as a 64-bit key (the first 8 bytes of its BLAKE2b digest: no address
is written to the flash, and every record has one size) with the time it was first seen,
the time it was last seen and whether it has passed. A client network is stored the same
way with how many triplets of its have passed and when it last sent. Keys are salted per
file: a sender cannot aim at another triplet's key.

The file: `MQGREY1\\n`, 8 bytes of salt, then 17-byte records (kind `G` waiting, `P`
passed, `N` network; key; two 32-bit times or count and time), then the CRC-32 of all
that. It is written whole, to `greylist.db.PID.tmp`, fdatasync'ed once and renamed over
the old one (a crash leaves at most a temporary file, removed at the next load), by
`save`, which the caller runs some minutes after a change and at stop, never per RCPT. So a power cut loses at most the changes since the last save: a client is
greylisted once more, or a passed triplet or network must pass again. Nothing is lost
that matters (mail is retried), and that is the price of a few flash writes an hour. A
file that is short, torn or fails its CRC (flash damage, a foreign file) is set aside as
`greylist.db.bad`, the daemon logs it and starts with an empty greylist: it never stops.

Bounded: at most `limit` triplets and `limit` client networks; when more arrive, the least
recently seen eighth is dropped (dict order is recency: a touched entry is moved to the
end). A save that fails (a full disk) removes its temporary file. Stale entries
(waiting past the window, passed and unseen past the whitelist time) go at each save.
"""

import os
import struct
import zlib

MAGIC = b"MQGREY1\n"
RECORD = struct.Struct(">cQII")
WAITING, PASSED, NETWORK = b"G", b"P", b"N"
NAME = "greylist.db"


class Damaged(ValueError):
    """The state file cannot be read; the caller starts empty."""


class State:
    """Triplets and networks in memory, with the file they are saved to."""

    def __init__(self, path, limit):
        self.path = path
        self.limit = limit
        self.triplets = {}          # key -> (first << 33) | (last << 1) | passed
        self.networks = {}          # key -> (count << 32) | last
        self.salt = os.urandom(8)
        self.dirty = False          # a change a lost save would cost a client a retry
        self.touched = False        # only a passed triplet's last-seen time moved

    # keys

    def key(self, *parts):
        """Return the 64-bit key of parts (texts) under this file's salt."""
        import hashlib                  # lazily: only when greylisting is configured
        digest = hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogateescape"),
                                 digest_size=8, key=self.salt).digest()
        return int.from_bytes(digest, "big")

    # triplets

    def triplet(self, key):
        """Return (first seen, last seen, passed) of a triplet, or None."""
        value = self.triplets.get(key)
        if value is None:
            return None
        return value >> 33, (value >> 1) & 0xFFFFFFFF, bool(value & 1)

    def put_triplet(self, key, first, last, passed, changed=True):
        """Store a triplet as the most recently seen; changed=False: only last moved."""
        self.triplets.pop(key, None)
        self.triplets[key] = (int(first) << 33) | (int(last) << 1) | int(passed)
        if changed:
            self.dirty = True
        else:
            self.touched = True
        while len(self.triplets) > self.limit:
            self._drop_oldest()

    def _drop_oldest(self, table=None):
        table = self.triplets if table is None else table
        count = max(1, self.limit // 8)
        for key in [k for _, k in zip(range(count), table)]:
            del table[key]
        self.dirty = True

    # networks

    def network(self, key):
        """Return (passed count, last seen) of a client network, or (0, 0)."""
        value = self.networks.get(key, 0)
        return value >> 32, value & 0xFFFFFFFF

    def put_network(self, key, count, last):
        """Store a network's pass count and last time, as the most recently seen."""
        self.networks.pop(key, None)
        self.networks[key] = (int(count) << 32) | int(last)
        self.dirty = True
        while len(self.networks) > self.limit:
            self._drop_oldest(self.networks)

    # the file

    def load(self):
        """Read the file if there is one (removing temporary files a crash left); raise
        Damaged (after setting it aside) if it is unreadable, OSError if it cannot be
        opened."""
        folder, name = os.path.split(self.path)
        try:
            for left in os.listdir(folder or "."):
                if left.startswith(name + ".") and left.endswith(".tmp"):
                    os.unlink(os.path.join(folder, left))
        except OSError:
            pass
        try:
            with open(self.path, "rb") as src:
                data = src.read()
        except FileNotFoundError:
            return
        try:
            self._parse(data)
        except Damaged:
            self.triplets, self.networks = {}, {}
            try:
                os.replace(self.path, self.path + ".bad")
            except OSError:
                pass
            raise

    def _parse(self, data):
        body, crc = data[:-4], data[-4:]
        if len(data) < len(MAGIC) + 12 or not body.startswith(MAGIC) or \
                (len(body) - len(MAGIC) - 8) % RECORD.size or \
                zlib.crc32(body).to_bytes(4, "big") != crc:
            raise Damaged("%s: torn or damaged (%d bytes); starting empty"
                          % (self.path, len(data)))
        self.salt = body[len(MAGIC):len(MAGIC) + 8]
        triplets, networks = {}, {}
        for kind, key, a, b in RECORD.iter_unpack(body[len(MAGIC) + 8:]):  # recency order
            if kind == NETWORK:
                networks[key] = (a << 32) | b
            elif kind in (WAITING, PASSED):
                triplets[key] = (a << 33) | (b << 1) | (kind == PASSED)
            else:
                raise Damaged("%s: unknown record; starting empty" % self.path)
        self.triplets, self.networks = triplets, networks

    def expire(self, now, window, keep_passed):
        """Forget triplets waiting longer than window and passed ones (and networks)
        unseen for keep_passed seconds."""
        for key, value in list(self.triplets.items()):
            first, last, passed = value >> 33, (value >> 1) & 0xFFFFFFFF, value & 1
            if (now - last > keep_passed) if passed else (now - first > window):
                del self.triplets[key]
                self.dirty = True
        for key, value in list(self.networks.items()):
            if now - (value & 0xFFFFFFFF) > keep_passed:
                del self.networks[key]
                self.dirty = True

    def encode(self):
        """Return the file's bytes (triplets in recency order, as the table holds them)."""
        out = bytearray(MAGIC)
        out += self.salt
        pack = RECORD.pack
        for key, value in self.triplets.items():
            out += pack(PASSED if value & 1 else WAITING, key, value >> 33,
                        (value >> 1) & 0xFFFFFFFF)
        for key, value in self.networks.items():
            out += pack(NETWORK, key, value >> 32, value & 0xFFFFFFFF)
        out += zlib.crc32(out).to_bytes(4, "big")
        return bytes(out)

    def save(self):
        """Write the file whole (temporary file, one fdatasync, rename); OSError if not."""
        data = self.encode()
        tmp = "%s.%d.tmp" % (self.path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path)
        except BaseException:
            try:                        # a full disk keeps no half-written copy
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.dirty = self.touched = False
