"""Handle a message's header block and normalise submitted input, streaming, as bytes.

Owns: turning `sendmail` stdin into CRLF text that ends at a lone `.` (`InputNormalizer`),
splitting the header block from the body (`HeaderReader`), the header fields themselves
(`Headers`, each field kept as its raw bytes so what we do not change is stored
byte-identical), and the header texts masq writes: `Date:`, `Message-ID:`, `Received:`;
plus the counts the loop check needs (Received: hops, Delivered-To:).

Does not decide which headers to add or remove (the acceptance stage does: masq.cli.submit
and masq.inbound), parse addresses (masq.mail.address), decode MIME or RFC 2047, or hold a body.

Hostile input: all message bytes. Lines may be 100 MB long and hold NUL, 8-bit data or
invalid UTF-8: bytes pass through opaque and are never split with `str.splitlines()`. State
kept between calls is bounded: a line-ending state for `InputNormalizer`, at most the header
cap for `HeaderReader`. Values we add are checked: CR, LF or NUL raise ValueError (no header
injection); values from peers for `Received:` are sanitised and bounded.

Fails with `HeaderTooLong` (552 5.3.4) when the header block exceeds its cap, ValueError on
a bad name or value passed in by our own code.

Decisions: a bare CR ends a line like a bare LF, and a run of CRs before an LF (`\\r\\r\\n`,
the trace of a double conversion) is one line end, so the stored copy has CRLF line ends
only and a CR can never hide a line; a line consisting of a single `.` ends
`sendmail` input unless `-i`/`-oi`, and nothing else is altered (no dot-unstuffing, unlike
masqmail); an unterminated last line gets a CRLF. Header values are decoded as UTF-8 with
surrogateescape, so `get_all()` never fails and re-encoding restores the bytes.
"""

import time

# What `sendmail` runs uses no regular expressions (importing `re` costs it ~5 ms); only
# the SMTP side's Received: clause imports `re`, when it needs to check a HELO name.
_FOLD_AT = 78
_PROBE = 1000  # a field name must show its colon within this many bytes
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
HEADER_LIMIT = 102400  # Postfix header_size_limit
# Names the queued original on the copy an smtp: content filter sends back (docs/FILTERS.md):
# masq writes it for the filter and strips it from everything its SMTP listeners store.
FILTER_ID = "X-Masq-Filter-Id"


class HeaderTooLong(ValueError):
    """The header block is over its cap; `code`, `enhanced` and `text` make the reply."""

    code, enhanced = 552, "5.3.4"

    def __init__(self, limit):
        self.text = "Message header too long (over %d bytes)" % limit
        super().__init__(self.text)


_NOT_CRLF = bytes(b for b in range(256) if b not in (10, 13))


def crlf_only(data):
    """Return True if every CR in data is followed by LF and every LF follows a CR.

    Two passes at C speed, no per-line work: the CRs and LFs number twice the CRLFs exactly
    when none is bare (each CRLF holds one of each; CRLFs cannot overlap)."""
    return 2 * data.count(b"\r\n") == len(data.translate(None, _NOT_CRLF))


class InputNormalizer:
    """Turn submitted bytes into CRLF lines, stopping at a lone `.` unless dot_ends is False.

    `ended` becomes True only when a lone `.` stopped the input (not at end of input).
    `bare_cr` / `bare_lf` become True once the input held a CR not followed by LF / an LF
    not preceded by CR (so `\\r\\r\\n` counts as a bare CR), for callers that refuse them.
    """

    def __init__(self, dot_ends=True):
        self.dot_ends = dot_ends
        self.ended = False
        self.bare_cr = self.bare_lf = False
        self._cr_last = False  # the last piece ended in CR: its fate is in the next one
        self._crs = 0        # CRs seen at the end of the last piece, not yet resolved
        self._bol = True     # the output so far ends at a line boundary
        self._dot = False    # a "." at the start of a line is held back
        self._closed = False

    def feed(self, data):
        """Take the next piece of input; return the normalised bytes now available."""
        if self.ended or self._closed or not data:
            return b""
        data = bytes(data)
        if not (self.dot_ends or self._crs) and crlf_only(data):
            self._bol, self._cr_last = data.endswith(b"\n"), False   # CRLF only: as is
            return data
        self._watch(data)
        head = b""
        if self._dot:
            if data[:1] in (b"\r", b"\n"):
                return self._end(b"")
            self._dot, self._bol, head = False, False, b"."
        if self._crs:
            stripped = data.lstrip(b"\r")
            self._crs += len(data) - len(stripped)
            if not stripped:
                return head
            ends, data = (1, stripped[1:]) if stripped[:1] == b"\n" else (self._crs, stripped)
            head, self._crs = head + b"\n" * ends, 0
        body = data.rstrip(b"\r")
        self._crs = len(data) - len(body)
        return self._emit(head + body)

    def finish(self):
        """Signal end of input; return the last bytes (a final CRLF added if missing)."""
        if self.ended or self._closed:
            return b""
        self._closed = True
        if self._cr_last:
            self.bare_cr = True
        if self._dot:
            return self._end(b"")
        out = b"\r\n" * self._crs
        if not self._bol and not out:
            out = b"\r\n"
        self._crs, self._bol = 0, True
        return out

    def _watch(self, data):
        """Note bare CRs and LFs in data (a CR at its end is decided by the next piece)."""
        if not self._cr_last and b"\r" not in data:     # LF text, as local programs give
            self.bare_lf = self.bare_lf or b"\n" in data
            return
        if not (self.bare_cr and self.bare_lf) and (
                self._cr_last or b"\r" in data or b"\n" in data):
            text = b"\r" + data if self._cr_last else data
            crlf = text.count(b"\r\n")     # every other LF is bare, and every other CR
            self.bare_lf = self.bare_lf or text.count(b"\n") > crlf
            self.bare_cr = self.bare_cr or text[:-1].count(b"\r") > crlf
        self._cr_last = data.endswith(b"\r")

    def _emit(self, text):
        """Normalise LF-or-CR text (no trailing CR) to CRLF and apply the lone-dot rule."""
        if b"\r" in text:      # CR+ LF is one line end, and so is a lone CR
            lines = text.split(b"\n")
            text = b"\n".join([line.rstrip(b"\r") for line in lines[:-1]] + lines[-1:])
            text = text.replace(b"\r", b"\n")
        if not text:
            return b""
        if self.dot_ends:
            marked = (b"\n" if self._bol else b"x") + text
            stop = marked.find(b"\n.\n")
            if stop >= 0:
                return self._end(text[:stop])
            if marked.endswith(b"\n.") and self._crs:
                return self._end(text[:-1])
            if marked.endswith(b"\n."):
                self._dot, text = True, text[:-1]
        if text:
            self._bol = text.endswith(b"\n")
        return text.replace(b"\n", b"\r\n")

    def _end(self, text):
        self.ended, self._dot, self._crs = True, False, 0
        return text.replace(b"\n", b"\r\n")


def _value_bytes(value):
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "surrogateescape")
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError("CR, LF or NUL in a header value")
    return value.encode("utf-8", "surrogateescape")


def _fold(name, value):
    """Return `Name: value` CRLF-terminated, folded before spaces to keep lines short."""
    words = _value_bytes(value).split(b" ")
    lines, line, filled = [], name.encode("ascii") + b":", False
    for word in words:
        if filled and word and len(line) + 1 + len(word) > _FOLD_AT:
            lines.append(line)
            line = b""
        line += b" " + word
        filled = filled or bool(word)
    lines.append(line)
    return b"\r\n".join(lines) + b"\r\n"


def _name_end(line):
    """Return the length of the field name (printable ASCII but colon) that starts line."""
    i, end = 0, len(line)
    while i < end and 0x21 <= line[i] <= 0x7e and line[i] != 0x3a:
        i += 1
    return i


def _check_name(name):
    if not (name and name.isascii() and name.isprintable() and " " not in name
            and ":" not in name):
        raise ValueError("bad header field name %r" % name)
    return name


class Headers:
    """An ordered list of header fields, each kept as raw bytes (name, colon, value, CRLFs)."""

    def __init__(self, fields=()):
        self._fields = [(_key(raw), raw) for raw in fields]

    @classmethod
    def from_bytes(cls, block):
        """Return the Headers of a CRLF header block (as written by to_bytes)."""
        reader = HeaderReader(limit=len(block) + 1)
        reader.feed(block)
        reader.finish()
        return reader.headers

    def _find(self, name):
        key = name.lower()
        return [i for i, (k, _) in enumerate(self._fields) if k == key]

    def get_all(self, name):
        """Return the unfolded values of every field called name, in order."""
        return [_value(self._fields[i][1]) for i in self._find(name)]

    def get(self, name, default=None):
        """Return the first value of the field called name, or default."""
        found = self._find(name)
        return _value(self._fields[found[0]][1]) if found else default

    def has(self, name):
        """Return True if a field called name is present."""
        return bool(self._find(name))

    def count(self, name):
        """Return how many fields are called name."""
        return len(self._find(name))

    def remove(self, name):
        """Remove every field called name; return how many were removed."""
        key = name.lower()
        kept = [field for field in self._fields if field[0] != key]
        removed = len(self._fields) - len(kept)
        self._fields = kept
        return removed

    def rename(self, name, new_name):
        """Rename every field called name, keeping its value bytes; return how many."""
        new = _check_name(new_name).encode("ascii")
        found = self._find(name)
        for i in found:
            raw = self._fields[i][1]
            self._fields[i] = (new_name.lower(), new + raw[raw.index(b":"):])
        return len(found)

    def replace(self, name, value):
        """Set the first field called name to value in place, dropping the others of that name."""
        found = self._find(name)
        if not found:
            self.append(name, value)
            return
        self._fields[found[0]] = (_check_name(name).lower(), _fold(name, value))
        for i in reversed(found[1:]):
            del self._fields[i]

    def rewrite(self, name, change):
        """Rewrite every field called name in its raw form: change(text) gets the text after
        the colon as stored (folds included, the final CRLF not) and returns the new text,
        or None to keep the field's bytes; return how many fields changed."""
        changed = 0
        for i in self._find(name):
            key, raw = self._fields[i]
            colon = raw.index(b":") + 1
            new = change(raw[colon:-2].decode("utf-8", "surrogateescape"))
            if new is not None:
                self._fields[i] = (key, raw[:colon] + new.encode("utf-8", "surrogateescape")
                                   + b"\r\n")
                changed += 1
        return changed

    def prepend(self, name, value):
        """Add a field at the top (a CR, LF or NUL in value raises ValueError)."""
        self._fields.insert(0, (_check_name(name).lower(), _fold(name, value)))

    def append(self, name, value):
        """Add a field at the end (a CR, LF or NUL in value raises ValueError)."""
        self._fields.append((_check_name(name).lower(), _fold(name, value)))

    def items(self):
        """Return (name, unfolded value) for every field, in order."""
        return [(raw[:raw.index(b":")].decode("ascii").rstrip(" \t"), _value(raw))
                for _, raw in self._fields]

    def __len__(self):
        return len(self._fields)

    def to_bytes(self):
        """Return the header block as stored: every field's raw bytes, without the blank line."""
        return b"".join(raw for _, raw in self._fields)


def _key(raw):
    return raw[:raw.index(b":")].rstrip(b" \t").decode("ascii").lower()


def _value(raw):
    value = raw[raw.index(b":") + 1:].replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
    if value.endswith(b"\r\n"):
        value = value[:-2]
    return value.strip(b" \t").decode("utf-8", "surrogateescape")


class HeaderReader:
    """Split CRLF message bytes into Headers and body; feed() returns body bytes."""

    def __init__(self, limit=HEADER_LIMIT):
        self.limit = limit
        self.headers = Headers()
        self.done = False
        self._buf = bytearray()
        self._scanned = 0    # no CRLF in _buf before this offset
        self._size = 0       # bytes taken into the header block so far
        self._field = []     # lines of the field being collected
        self._first = True
        self._pending = None  # what the partial line in _buf was found to be

    def feed(self, data):
        """Take the next CRLF-normalised bytes; return the body bytes now available."""
        if self.done:
            return bytes(data)
        buf = self._buf
        buf += data
        pos = 0
        while not self.done:
            end = buf.find(b"\r\n", max(pos, self._scanned))
            if end < 0:
                break
            if not self._line(bytes(buf[pos:end + 2])):
                return self._to_body(pos)
            pos, self._pending = end + 2, None
        del buf[:pos]
        self._scanned = max(len(buf) - 1, 0)
        if self.done:
            return self._to_body(0)
        if buf and self._pending is None:
            self._pending = self._start_kind(bytes(buf[:_PROBE]))
            if self._pending == "body":
                return self._to_body(0)
        if self._size + len(buf) > self.limit:
            raise HeaderTooLong(self.limit)
        return b""

    def finish(self):
        """Signal end of input; return any body bytes still held."""
        if self.done:
            return b""
        rest, self._buf = bytes(self._buf), bytearray()
        if rest and self._start_kind(rest) in ("header", "fold", "from"):
            self._line(rest + b"\r\n")
            rest = b""
        return self._to_body(0) + rest

    def _to_body(self, pos):
        self._close_field()
        self.done = True
        body = bytes(self._buf[pos:])
        self._buf = bytearray()
        return body

    def _start_kind(self, line):
        """Say what a (maybe partial) line is: "header", "fold", "from", "body" or None."""
        if self._first and line.startswith(b"From "):
            return "from"
        if line[:1] in (b" ", b"\t"):
            return "fold" if self._field else "body"
        probe = line[:_PROBE]
        name = _name_end(probe)
        rest = probe[name:]
        if name and rest.lstrip(b" \t").startswith(b":"):
            return "header"
        if len(line) < _PROBE and rest.strip(b" \t") in (b"", b"\r"):
            return None    # a field name may still be coming: wait for more
        return "body"

    def _line(self, line):
        """Take one complete line; return False when it does not belong to the header."""
        kind = "end" if line == b"\r\n" else self._start_kind(line)
        if kind not in ("end", "from", "fold", "header"):
            return False
        self._size += len(line)
        if self._size > self.limit:
            raise HeaderTooLong(self.limit)
        self._first = False
        if kind in ("end", "header"):
            self._close_field()
        if kind == "end":
            self.done = True
        elif kind != "from":
            self._field.append(line)
        return True

    def _close_field(self):
        if self._field:
            raw = b"".join(self._field)
            self.headers._fields.append((_key(raw), raw))
            self._field = []


ENVELOPE_FIELDS = ("Return-Path", "Envelope-To")


def strip_envelope_fields(headers, save_envelope_to=False):
    """Drop the fields delivery writes (Return-Path:, Envelope-To:) from received headers.

    A mailbox would otherwise show two Return-Path lines, the sender's and ours. With
    save_envelope_to, Envelope-To: is kept as X-Orig-Envelope-To: (masqmail's
    do_save_envelope_to, for mail fetched from a multi-drop box)."""
    headers.remove("Return-Path")
    if save_envelope_to:
        headers.rename("Envelope-To", "X-Orig-Envelope-To")
    else:
        headers.remove("Envelope-To")


class HeadSplitter:
    """Split a BINARYMIME text (RFC 3030) at the end of its header block.

    The header block (through the first empty line, CRLF CRLF) is text like any message's
    and gets the usual line-end rule; what follows is the body, stored as received: bare CR
    and LF, NUL and lines of any length are its content."""

    def __init__(self):
        self._tail = b"\r\n"    # the text so far ends a line: an empty first line ends it
        self.done = False

    def split(self, data):
        """Return (header bytes, body bytes) of the next piece of text."""
        if self.done:
            return b"", data
        probe = self._tail + data
        end = probe.find(b"\r\n\r\n")
        if end < 0:
            self._tail = probe[-3:]
            return data, b""
        self.done = True
        cut = end + 4 - len(self._tail)
        return data[:cut], data[cut:]


class ReceivedHeaders:
    """A HeaderReader for text being stored: it holds the header block back until it ends,
    then gives it out without the envelope fields (strip_envelope_fields)."""

    def __init__(self, save_envelope_to=False, limit=HEADER_LIMIT, strip=()):
        self.reader = HeaderReader(limit)
        self.save_envelope_to = save_envelope_to
        self.strip = strip          # more field names dropped from what is stored
        self._raw = bytearray()     # the text held back, given out as is by abandon()

    @property
    def headers(self):
        """Return the Headers read so far (with the envelope fields, as received)."""
        return self.reader.headers

    @property
    def done(self):
        """Return True once the header block has been given out."""
        return self.reader.done

    def feed(self, data):
        """Take CRLF-normalised text; return what may be stored now (HeaderTooLong past the cap)."""
        if self.reader.done:
            return bytes(data)
        self._raw += data
        body = self.reader.feed(data)
        return self._release(body) if self.reader.done else b""

    def finish(self):
        """Signal end of input; return the rest of what is to be stored."""
        if self.reader.done:
            return b""
        return self._release(self.reader.finish())

    def abandon(self):
        """Give up on the header block (too long); return the text held back, unaltered."""
        raw, self._raw = bytes(self._raw), bytearray()
        self.reader.done = True
        return raw

    def _release(self, body):
        self._raw = bytearray()
        fields = Headers()
        fields._fields = list(self.reader.headers._fields)
        strip_envelope_fields(fields, self.save_envelope_to)
        for name in self.strip:
            fields.remove(name)
        return fields.to_bytes() + b"\r\n" + body


def split_message(chunks, limit=1 << 20):
    """Return (Headers, the body bytes read so far, the iterator of the rest) of a text.

    A header block over limit is cut there (for reading only: nothing is stored).
    """
    reader = HeaderReader(limit=limit)
    source = iter(chunks)
    body = b""
    try:
        for chunk in source:
            body += reader.feed(chunk)
            if reader.done:
                break
        body += reader.finish()
    except HeaderTooLong:
        pass
    return reader.headers, body, source


def format_date(timestamp, localtime=True):
    """Return an RFC 5322 date such as `Thu, 26 Nov 2026 09:41:15 +0100`."""
    tm = time.localtime(timestamp) if localtime else time.gmtime(timestamp)
    offset = (tm.tm_gmtoff or 0) // 60 if localtime else 0
    sign = "-" if offset < 0 else "+"
    return "%s, %02d %s %04d %02d:%02d:%02d %s%02d%02d" % (
        _DAYS[tm.tm_wday], tm.tm_mday, _MONTHS[tm.tm_mon - 1], tm.tm_year,
        tm.tm_hour, tm.tm_min, tm.tm_sec, sign, abs(offset) // 60, abs(offset) % 60)


_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                      "!#$%&'*+/=?^_`{|}~.-")
_LITERAL_CHARS = frozenset(map(chr, range(0x21, 0x7f))) - frozenset("[\\]")


def _id_part(text):
    """Return True for dot-atom text or a `[...]` literal (what a Message-ID part may be)."""
    if text.startswith("[") and text.endswith("]") and len(text) > 1:
        return _LITERAL_CHARS.issuperset(text[1:-1])
    return bool(text) and _ID_CHARS.issuperset(text)


def make_message_id(unique, hostname):
    """Return a Message-ID `<unique@hostname>`; ValueError if a part is not dot-atom text."""
    if not _id_part(unique) or not _id_part(hostname):
        raise ValueError("bad Message-ID part %r@%r" % (unique, hostname))
    return "<%s@%s>" % (unique, hostname)


# Strings, not compiled: re is imported (and compiles them) only when a HELO is checked.
_DOMAIN = (r"(?=.{1,255}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
           r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_LITERAL = r"(?i)\[(?:[0-9.]{7,15}|IPv6:[0-9A-Fa-f:.]{2,45})\]"
_SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                        ".:_@+=[]/-")
_IP_CHARS = frozenset("0123456789ABCDEFabcdef:.")
_NOT_IN_RCPT = frozenset("".join(map(chr, range(0x20))) + "".join(map(chr, range(0x7f, 0xa0)))
                         + "\u2028\u2029<>()\\")


def _token(text, limit=64):
    """Return text reduced to a safe token for a Received: comment: bounded, no specials."""
    text = "".join(c if c in _SAFE_CHARS else "?" for c in str(text))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _ip_literal(ip):
    if not ip or not 2 <= len(ip) <= 45 or not _IP_CHARS.issuperset(ip):
        return None
    return "[IPv6:%s]" % ip if ":" in ip else "[%s]" % ip


def _from_clause(from_host, from_rdns, from_ip):
    """Return `from HELO (rdns [ip])`, with an odd HELO shown sanitised in the comment."""
    import re
    literal = _ip_literal(from_ip)
    helo = str(from_host or "")[:255]
    valid = bool(re.fullmatch(_DOMAIN, helo) or re.fullmatch(_LITERAL, helo))
    name = helo if valid else (literal or "unknown")
    detail = []
    if literal:
        rdns = from_rdns if from_rdns and re.fullmatch(_DOMAIN, from_rdns) else "unknown"
        detail.append("%s %s" % (rdns, literal))
    if helo and not valid:
        detail.append("helo=" + _token(helo))
    return "from %s (%s)" % (name, " ".join(detail)) if detail else "from " + name


def received_line(*, by_host, id, protocol="ESMTP", from_host=None, from_rdns=None,
                  from_ip=None, from_uid=None, for_rcpt=None, tls=None, auth=None,
                  cert=None, timestamp):
    """Return the value of a Received: field (one line; prepend() folds it), dated
    `timestamp`."""
    parts = []
    if from_host or from_ip:
        parts.append(_from_clause(from_host, from_rdns, from_ip))
    if tls:
        parts.append("(using %s with cipher %s)" % (_token(tls[0]), _token(tls[1])))
    if auth:
        parts.append("(authenticated user %s)" % _token(auth))
    if cert:
        parts.append("(client certificate sha256:%s)" % _token(cert))
    comment = "masq" if from_uid is None else "masq, from userid %d" % int(from_uid)
    parts.append("by %s (%s)" % (_token(by_host, 255), comment))
    if protocol == "ESMTP":
        protocol += ("S" if tls else "") + ("A" if auth else "")
    if from_host or from_ip:
        parts.append("with " + _token(protocol, 16))
    parts.append("id " + _token(id))
    if for_rcpt:
        rcpt = "".join("?" if c in _NOT_IN_RCPT else c for c in str(for_rcpt))
        parts.append("for <%s>" % rcpt[:256])
    return " ".join(parts) + "; " + format_date(timestamp)


def count_hops(headers):
    """Return how many Received: fields the message carries (the hop count)."""
    return headers.count("Received")


def delivered_to(headers):
    """Return the Delivered-To: addresses, lower-cased, for the local loop check."""
    return [value.strip().lower() for value in headers.get_all("Delivered-To")]
