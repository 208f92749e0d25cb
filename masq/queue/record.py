"""Queue records: framing, checksums and the scanner that finds them again after a crash.

Owns the byte layout of the log (documented as one table in docs/QUEUE.md):

    file header   8 bytes  b"MASQLOG1"
                  8 bytes  salt (random per log file; keys every record checksum)
    record        2 bytes  magic b"Mq"
                  1 byte   type (B body, C commit, R result, W warned, X removed,
                           A aborted, Q quarantined)
                  1 byte   version (1)
                  4 bytes  payload length, big-endian
                 14 bytes  message id (ASCII, [0-9a-v])
                  n bytes  payload
                  4 bytes  CRC-32 of type..payload, seeded with CRC-32(salt)

Hostile input: message bodies are attacker-controlled and may contain bytes that look like
records. The scanner never looks inside a valid record, and a record's checksum is keyed by
the file's secret salt, so a forged record inside a body cannot pass for a real one when the
scanner resynchronises after corruption.

Does not interpret payloads (see envelope.py) nor decide what a bad record means for the
queue (see store.py); `scan` only reports records and the damaged ranges between them.
"""

import struct
import zlib

FILE_MAGIC = b"MASQLOG1"
FILE_HEADER_SIZE = 16
MAGIC = b"Mq"
VERSION = 1
ID_SIZE = 14
HEAD = struct.Struct(">2sBBI14s")
HEAD_SIZE = HEAD.size           # 22
TRAILER_SIZE = 4
OVERHEAD = HEAD_SIZE + TRAILER_SIZE
MAX_PAYLOAD = 1 << 20           # bodies are written in chunks far below this

BODY, COMMIT, RESULT, WARNED, REMOVED, ABORTED, QUARANTINED = (
    ord(c) for c in "BCRWXAQ")
TYPES = frozenset((BODY, COMMIT, RESULT, WARNED, REMOVED, ABORTED, QUARANTINED))
ID_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuv")


def file_header(salt):
    """Return the 16-byte header that starts every log file."""
    return FILE_MAGIC + salt


def parse_file_header(data):
    """Return the salt of a log file header, or None if data is not one."""
    if len(data) < FILE_HEADER_SIZE or data[:8] != FILE_MAGIC:
        return None
    return bytes(data[8:16])


def seed(salt):
    """Return the CRC seed for a log file's salt."""
    return zlib.crc32(salt)


def encode(crc_seed, rtype, msgid, payload):
    """Return one framed record as bytes."""
    head = HEAD.pack(MAGIC, rtype, VERSION, len(payload), msgid)
    crc = zlib.crc32(payload, zlib.crc32(head[2:], crc_seed))
    return head + payload + struct.pack(">I", crc)


class Record:
    """A record found in the log: where it is and what it says."""

    __slots__ = ("offset", "type", "msgid", "payload_offset", "length", "payload")

    def __init__(self, offset, rtype, msgid, length, payload):
        self.offset = offset
        self.type = rtype
        self.msgid = msgid
        self.payload_offset = offset + HEAD_SIZE
        self.length = length
        self.payload = payload

    @property
    def end(self):
        """Return the offset just past this record."""
        return self.offset + OVERHEAD + self.length


class Damage:
    """A range of bytes between good records that is not a valid record."""

    __slots__ = ("offset", "end", "msgid")

    def __init__(self, offset, end, msgid):
        self.offset = offset
        self.end = end
        self.msgid = msgid


def _check(buf, pos, limit, crc_seed):
    """Return (type, msgid, length) if a valid record starts at pos, else None."""
    if limit - pos < OVERHEAD:
        return None
    magic, rtype, version, length, msgid = HEAD.unpack_from(buf, pos)
    if magic != MAGIC or version != VERSION or rtype not in TYPES:
        return None
    if length > MAX_PAYLOAD or pos + OVERHEAD + length > limit:
        return None
    if not ID_CHARS.issuperset(msgid):
        return None
    end = pos + HEAD_SIZE + length
    crc = zlib.crc32(buf[pos + HEAD_SIZE:end], zlib.crc32(buf[pos + 2:pos + HEAD_SIZE], crc_seed))
    if struct.unpack_from(">I", buf, end)[0] != crc:
        return None
    return rtype, bytes(msgid), length


def _claimed_id(buf, pos, limit):
    """Return the message id a damaged record header names, if it looks like one."""
    if limit - pos < HEAD_SIZE or buf[pos:pos + 2] != MAGIC:
        return None
    msgid = bytes(buf[pos + 8:pos + HEAD_SIZE])
    return msgid if ID_CHARS.issuperset(msgid) else None


def _resync(buf, pos, limit, crc_seed):
    """Return the offset of the next valid record after pos, or None."""
    find = buf.find
    at = find(MAGIC, pos + 1, limit)
    while at != -1:
        if _check(buf, at, limit, crc_seed):
            return at
        at = find(MAGIC, at + 1, limit)
    return None


def scan(buf, start, limit, crc_seed, with_bodies=False):
    """Yield Record and Damage objects for buf[start:limit], in order.

    A Damage at the very end (no valid record after it) is the torn tail. Body payloads are
    not copied unless with_bodies is true: a body is read back later by offset.
    """
    pos = start
    while pos < limit:
        found = _check(buf, pos, limit, crc_seed)
        if found is None:
            nxt = _resync(buf, pos, limit, crc_seed)
            end = limit if nxt is None else nxt
            yield Damage(pos, end, _claimed_id(buf, pos, limit))
            pos = end
            continue
        rtype, msgid, length = found
        payload = None
        if rtype != BODY or with_bodies:
            payload = bytes(buf[pos + HEAD_SIZE:pos + HEAD_SIZE + length])
        yield Record(pos, rtype, msgid, length, payload)
        pos += OVERHEAD + length
