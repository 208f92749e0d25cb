"""DNS messages: build queries and parse responses as bytes, nothing more (RFC 1035, 3596, 7505).

Owns the wire format: names (with compression pointers), the header, the question, resource
records of the types a mail system needs (A, AAAA, MX, CNAME, PTR, SOA; others kept as raw
bytes), the EDNS0 OPT record (RFC 6891) and TCP's two-byte length framing.
Does not do IO, keep time, retry, cache or pick servers: that is `masq/dns/resolver.py`.

Hostile input: every response byte. A response must echo our id and question (names compare
case-insensitively); compression pointers must point strictly backwards from the name being
read, so a loop cannot exist; every read is bounds-checked. Names from the wire come back as
lowercase text in presentation form: an octet outside letters, digits, '-' and '_' becomes
`\\DDD`, so a hostile name can never be mistaken for a valid host name (`build_query`
refuses it). Any malformed or foreign packet raises `errors.ProtocolError` (no reply: a DNS
peer is never answered); nothing else is raised.
Our own misuse (a bad name to query) raises `ValueError`.
"""

import ipaddress
import struct

from . import frozen
from .errors import ProtocolError

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, OPT = 1, 2, 5, 6, 12, 15, 16, 28, 41
IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
UDP_PAYLOAD = 1232

_QR, _TC, _RD, _RA = 0x8000, 0x0200, 0x0100, 0x0080
_HEADER = struct.Struct("!HHHHHH")
_NAME_OCTETS = frozenset(b"abcdefghijklmnopqrstuvwxyz"
                         b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@frozen
class ResourceRecord:
    """One resource record; `data` is text for A/AAAA, (pref, host) for MX, a name for
    CNAME/PTR/NS, a 7-tuple for SOA, raw bytes for other types."""

    name: str
    type: int
    ttl: int
    data: object


@frozen
class Response:
    """A parsed response: rcode (extended by EDNS0), truncation flag, answers, authority."""

    rcode: int
    tc: bool
    answers: tuple = ()
    authority: tuple = ()


# names

def encode_name(name):
    """Return `name` (str or bytes, trailing dot optional) as wire labels; ValueError if bad."""
    if isinstance(name, str):
        try:
            name = name.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("DNS name is not ASCII: %r" % name) from None
    if name.endswith(b"."):
        name = name[:-1]
    out = bytearray()
    for label in name.split(b".") if name else ():
        if not label or len(label) > 63:
            raise ValueError("bad DNS label length in %r" % name)
        if not _NAME_OCTETS.issuperset(label):
            raise ValueError("bad character in DNS name %r" % name)
        out += bytes((len(label),)) + label
    out += b"\x00"
    if len(out) > 255:
        raise ValueError("DNS name longer than 255 octets")
    return bytes(out)


def normalize(name):
    """Return a name as compared and cached: lowercase text without the trailing dot."""
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.rstrip(".").lower() or "."


def _label_text(label):
    return "".join(chr(c).lower() if c in _NAME_OCTETS else "\\%03d" % c for c in label)


class _Reader:
    """Bounds-checked reads over one message; every overrun is a ProtocolError."""

    def __init__(self, data, pos=0, end=None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, n):
        end = self.pos + n
        if end > self.end:
            raise ProtocolError("message truncated at offset %d" % self.pos)
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def u16(self):
        return int.from_bytes(self.take(2), "big")

    def u32(self):
        return int.from_bytes(self.take(4), "big")

    def name(self):
        """Read a possibly compressed name; return it in presentation form."""
        data, pos, floor, labels, size = self.data, self.pos, self.pos, [], 1
        jumped = False
        while True:
            if pos >= len(data):
                raise ProtocolError("name runs past the end")
            length = data[pos]
            if length >= 0xC0:
                if pos + 1 >= len(data):
                    raise ProtocolError("compression pointer truncated")
                target = ((length & 0x3F) << 8) | data[pos + 1]
                if target >= floor:
                    raise ProtocolError("compression pointer does not point backwards")
                if not jumped:
                    self.pos, jumped = pos + 2, True
                pos = floor = target
                continue
            if length > 63:
                raise ProtocolError("reserved label type")
            if length == 0:
                break
            size += length + 1
            if size > 255 or pos + 1 + length > len(data):
                raise ProtocolError("name too long or truncated")
            labels.append(_label_text(data[pos + 1:pos + 1 + length]))
            pos += 1 + length
        if not jumped:
            self.pos = pos + 1
        if self.pos > self.end:
            raise ProtocolError("name runs past its record")
        return ".".join(labels) or "."


# building

def build_query(qid, name, qtype, payload=UDP_PAYLOAD):
    """Return a recursive query for (name, qtype) with an EDNS0 OPT record."""
    question = encode_name(name) + struct.pack("!HH", qtype, IN)
    opt = b"\x00" + struct.pack("!HHIH", OPT, payload, 0, 0)
    return _HEADER.pack(qid & 0xFFFF, _RD, 1, 0, 0, 1) + question + opt


def build_response(qid, name, qtype, rcode=NOERROR, answers=(), authority=(), tc=False):
    """Return a response message (for test servers): records are `ResourceRecord`s, uncompressed."""
    flags = _QR | _RD | _RA | (_TC if tc else 0) | (rcode & 0xF)
    head = _HEADER.pack(qid & 0xFFFF, flags, 1, len(answers), len(authority), 0)
    body = encode_name(name) + struct.pack("!HH", qtype, IN)
    for record in tuple(answers) + tuple(authority):
        rdata = _encode_rdata(record)
        body += encode_name(record.name) + struct.pack(
            "!HHIH", record.type, IN, record.ttl, len(rdata)) + rdata
    return head + body


def _encode_rdata(record):
    kind, data = record.type, record.data
    if kind in (A, AAAA):
        return ipaddress.ip_address(data).packed
    if kind == MX:
        return struct.pack("!H", data[0]) + encode_name(data[1])
    if kind in (CNAME, PTR, NS):
        return encode_name(data)
    if kind == SOA:
        return encode_name(data[0]) + encode_name(data[1]) + struct.pack("!5I", *data[2:])
    return bytes(data)


# parsing

def parse_query(data):
    """Return (qid, name, qtype) of a query (for test servers); ProtocolError if malformed."""
    reader = _Reader(bytes(data))
    qid, flags, qdcount = struct.unpack("!HHH", reader.take(6))
    reader.take(6)
    if flags & _QR or qdcount != 1:
        raise ProtocolError("not a query with one question")
    name = reader.name()
    return qid, name, reader.u16()


def parse_response(data, qid, name, qtype):
    """Return the Response to our query (qid, name, qtype); ProtocolError for anything else."""
    reader = _Reader(bytes(data))
    rid, flags, qd, an, ns, ar = _HEADER.unpack(reader.take(12))
    if rid != qid & 0xFFFF or not flags & _QR or qd != 1 or flags >> 11 & 0xF:
        raise ProtocolError("not a response to our query")
    if normalize(reader.name()) != normalize(name) or reader.u16() != qtype \
            or reader.u16() != IN:
        raise ProtocolError("response question does not echo ours")
    rcode, tc = flags & 0xF, bool(flags & _TC)
    if tc:
        return Response(rcode, True)
    answers = tuple(_records(reader, an))
    authority = tuple(_records(reader, ns))
    for record in _records(reader, ar, keep_opt=True):
        if record.type == OPT:
            rcode |= (record.ttl >> 24) << 4
    return Response(rcode, False, answers, authority)


def _records(reader, count, keep_opt=False):
    """Yield `count` records of class IN (and OPT if asked); other classes are skipped."""
    for _ in range(count):
        name = reader.name()
        kind, klass, ttl, length = reader.u16(), reader.u16(), reader.u32(), reader.u16()
        start = reader.pos
        reader.take(length)
        if kind == OPT and keep_opt:
            yield ResourceRecord(name, OPT, ttl, b"")
        elif klass == IN and kind != OPT:
            yield ResourceRecord(name, kind, ttl if ttl < 1 << 31 else 0,
                                 _rdata(reader, kind, start, length))


def _rdata(reader, kind, start, length):
    """Decode one record's data, which must fill exactly `length` octets at `start`."""
    sub = _Reader(reader.data, start, start + length)
    if kind == A and length == 4:
        return str(ipaddress.IPv4Address(sub.take(4)))
    if kind == AAAA and length == 16:
        return str(ipaddress.IPv6Address(sub.take(16)))
    if kind in (A, AAAA):
        raise ProtocolError("address record of wrong length")
    if kind == MX:
        value = (sub.u16(), sub.name())
    elif kind in (CNAME, PTR, NS):
        value = sub.name()
    elif kind == SOA:
        value = (sub.name(), sub.name()) + struct.unpack("!5I", sub.take(20))
    else:
        return sub.take(length)
    if sub.pos != start + length:
        raise ProtocolError("record data length does not match its contents")
    return value


# meaning

def chase(response, name, qtype, limit=8):
    """Return (records of qtype, canonical name, lowest TTL) following CNAMEs in the answers."""
    current, ttl = normalize(name), 0x7FFFFFFF
    for _ in range(limit):
        records = tuple(r for r in response.answers if r.type == qtype and r.name == current)
        if records:
            return records, current, min([ttl] + [r.ttl for r in records])
        alias = next((r for r in response.answers if r.type == CNAME and r.name == current),
                     None)
        if alias is None:
            return (), current, ttl
        current, ttl = alias.data, min(ttl, alias.ttl)
    raise ProtocolError("CNAME chain longer than %d at %s" % (limit, name))


def negative_ttl(response):
    """Return how long a negative answer may be cached: its SOA's TTL and minimum (RFC 2308)."""
    for record in response.authority:
        if record.type == SOA:
            return min(record.ttl, record.data[6])
    return 0


# TCP framing (RFC 1035 section 4.2.2)

def frame(message):
    """Return a message with TCP's two-byte length prefix."""
    if len(message) > 0xFFFF:
        raise ValueError("DNS message too long for TCP")
    return struct.pack("!H", len(message)) + message


def unframe(buffer):
    """Return (message, rest) from a TCP buffer, or (None, buffer) while incomplete."""
    if len(buffer) < 2:
        return None, buffer
    length = int.from_bytes(buffer[:2], "big")
    if len(buffer) < 2 + length:
        return None, buffer
    return bytes(buffer[2:2 + length]), buffer[2 + length:]
