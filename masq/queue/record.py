"""Queue records: framing, checksums and the scanner that finds them again after a crash.

Owns the byte layout of the log segments (documented as one table in docs/QUEUE.md):

    file header   8 bytes  b"MASQSEG1"
                  8 bytes  salt (random per segment; keys every record checksum)
                  4 bytes  CRC-32 of the salt
                 12 bytes  the salt and its CRC again (one flipped bit costs one copy)
    (a legacy `queue.log` starts with b"MASQLOG1" and one bare salt: 16 bytes)
    record        2 bytes  magic b"Mq"
                  1 byte   type (B body, C commit, R result, W warned, X removed,
                           A aborted, Q quarantined, K copy)
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

FILE_MAGIC = b"MASQSEG1"
LEGACY_MAGIC = b"MASQLOG1"
FILE_HEADER_SIZE = 32
LEGACY_HEADER_SIZE = 16
MAGIC = b"Mq"
VERSION = 1
ID_SIZE = 14
HEAD = struct.Struct(">2sBBI14s")
HEAD_SIZE = HEAD.size           # 22
TRAILER_SIZE = 4
OVERHEAD = HEAD_SIZE + TRAILER_SIZE
_CRC = struct.Struct(">I")
MAX_PAYLOAD = 1 << 20           # bodies are written in chunks far below this

BODY, COMMIT, RESULT, WARNED, REMOVED, ABORTED, QUARANTINED, COPY = (
    ord(c) for c in "BCRWXAQK")
TYPES = frozenset((BODY, COMMIT, RESULT, WARNED, REMOVED, ABORTED, QUARANTINED, COPY))
ID_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuv")


def file_header(salt):
    """Return the 32-byte header that starts every segment: magic, salt twice, each checked."""
    copy = salt + struct.pack(">I", zlib.crc32(salt))
    return FILE_MAGIC + copy + copy


def parse_file_header(data):
    """Return (salt, header size) of a segment or legacy log header, or None if it is not one.

    A segment header is believed when either salt copy matches its CRC (the magic may be
    damaged then); a legacy header needs its magic."""
    data = bytes(data)
    if len(data) >= FILE_HEADER_SIZE:
        for salt in _salt_candidates(data[8:16], data[20:28]):
            if zlib.crc32(salt) in (struct.unpack_from(">I", data, 16)[0],
                                    struct.unpack_from(">I", data, 28)[0]):
                return salt, FILE_HEADER_SIZE
    if len(data) >= LEGACY_HEADER_SIZE and data[:8] == LEGACY_MAGIC:
        return data[8:16], LEGACY_HEADER_SIZE
    return None


def _salt_candidates(first, second):
    """Yield the salts the two copies could be: each differing byte from either copy (a
    flipped bit in each copy still leaves one right combination), then each of those with
    one bit flipped back."""
    differ = [i for i in range(8) if first[i] != second[i]]
    combos = []
    for mask in range(1 << len(differ)):
        salt = bytearray(first)
        for bit, i in enumerate(differ):
            if mask >> bit & 1:
                salt[i] = second[i]
        combos.append(bytes(salt))
    yield from combos
    for salt in combos:             # both copies hit at the same bit: one flip back
        for bit in range(64):
            flipped = bytearray(salt)
            flipped[bit // 8] ^= 1 << (bit % 8)
            yield bytes(flipped)


def header_candidates(data):
    """Return the salts a segment header whose checks both fail could have had."""
    data = bytes(data)
    if len(data) < FILE_HEADER_SIZE:
        return []
    return list(_salt_candidates(data[8:16], data[20:28]))


def seed(salt):
    """Return the CRC seed for a log file's salt."""
    return zlib.crc32(salt)


def encode(crc_seed, rtype, msgid, payload):
    """Return one framed record as bytes."""
    return b"".join(frame(crc_seed, rtype, msgid, payload))


def frame(crc_seed, rtype, msgid, payload):
    """Return one record as its three parts (head, payload, checksum), for one join of
    many records: the payload (any bytes-like object) is not copied here."""
    head = HEAD.pack(MAGIC, rtype, VERSION, len(payload), msgid)
    crc = zlib.crc32(payload, zlib.crc32(head[2:], crc_seed))
    return head, payload, _CRC.pack(crc)


def intact(head, payload, trailer, crc_seed):
    """Return True if head, payload and trailer, read back apart, are one valid record: a
    text chunk is checked on every read, so that bit rot after the spool was opened is
    never delivered."""
    if len(head) != HEAD_SIZE or len(trailer) != TRAILER_SIZE:
        return False
    magic, _, version, length, _ = HEAD.unpack(head)
    if magic != MAGIC or version != VERSION or length != len(payload):
        return False
    return _CRC.unpack(trailer)[0] == zlib.crc32(payload, zlib.crc32(head[2:], crc_seed))


class Record:
    """A record found in the log: where it is and what it says."""

    __slots__ = ("seg", "offset", "type", "msgid", "payload_offset", "length", "payload")

    def __init__(self, offset, rtype, msgid, length, payload, seg=0):
        self.seg = seg
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

    __slots__ = ("seg", "offset", "end", "msgid", "complete")

    def __init__(self, offset, end, msgid, seg=0, complete=False):
        self.seg = seg
        self.complete = complete      # a whole record with a bad checksum, not a torn write
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
    if limit - pos < HEAD_SIZE:
        return None
    if buf[pos:pos + 2] != MAGIC and (buf[pos + 2] not in TYPES or buf[pos + 3] != VERSION):
        return None
    msgid = bytes(buf[pos + 8:pos + HEAD_SIZE])
    return msgid if ID_CHARS.issuperset(msgid) else None


def complete_but_damaged(buf, pos, limit, crc_seed):
    """Return True if the bytes at pos look like one whole record ending exactly at limit.

    Tells bit rot in a record (its length still fits, or only its length field rotted: the
    checksum matches with the length the bytes have) from a torn write (the record runs past
    the end, or its header is cut)."""
    if limit - pos < OVERHEAD:
        return False
    _, rtype, version, length, _ = HEAD.unpack_from(buf, pos)
    if pos + OVERHEAD + length == limit:
        return rtype in TYPES or version == VERSION
    fitting = limit - pos - OVERHEAD
    if fitting > MAX_PAYLOAD:
        return False
    head = bytearray(buf[pos + 2:pos + HEAD_SIZE])
    struct.pack_into(">I", head, 2, fitting)
    end = pos + HEAD_SIZE + fitting
    crc = zlib.crc32(buf[pos + HEAD_SIZE:end], zlib.crc32(head, crc_seed))
    return struct.unpack_from(">I", buf, end)[0] == crc


def _resync(buf, pos, limit, crc_seed):
    """Return the offset of the next valid record after pos, or None."""
    find = buf.find
    at = find(MAGIC, pos + 1, limit)
    while at != -1:
        if _check(buf, at, limit, crc_seed):
            return at
        at = find(MAGIC, at + 1, limit)
    return None


def scan(buf, start, limit, crc_seed, with_bodies=False, seg=0):
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
            yield Damage(pos, end, _claimed_id(buf, pos, limit), seg,
                         complete_but_damaged(buf, pos, end, crc_seed))
            pos = end
            continue
        rtype, msgid, length = found
        payload = None
        if rtype != BODY or with_bodies:
            payload = bytes(buf[pos + HEAD_SIZE:pos + HEAD_SIZE + length])
        yield Record(pos, rtype, msgid, length, payload, seg)
        pos += OVERHEAD + length
