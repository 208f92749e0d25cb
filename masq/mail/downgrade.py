"""MIME downgrade for a next hop without 8BITMIME (RFC 6152 §3) or BINARYMIME (RFC 3030).

Owns: walking a message's MIME structure line by line (header blocks, multipart
boundaries, message/rfc822 inside), `scan` (which parts hold 8-bit octets, or why they
cannot be converted) and `convert` (the text with those parts re-encoded: text/* and
untyped parts to quoted-printable, anything else to base64; an `8bit` or `binary` label on
a part that needs no conversion becomes `7bit`). Everything else passes byte-identical.
Does not: decide when to downgrade (the SMTP session does, when the server does not offer
8BITMIME), decode anything, or touch header text beyond Content-Transfer-Encoding (and a
MIME-Version the converted top level needs).

Conversion is impossible (`Impossible`, 5.6.3) for 8-bit octets in a header block (that
would be SMTPUTF8's business, or RFC 2047's), inside a signed or encrypted part
(multipart/signed, multipart/encrypted, application/pkcs7-mime: re-encoding breaks the
signature, so those parts are never touched), or in a multipart's preamble or epilogue;
and for a header block over HEADER_LIMIT octets.

A BINARYMIME text (`Plan(binary=True)`) may hold binary content: NUL, a bare CR or LF, a
line over 998 octets. A part whose body holds any goes to base64, whatever its type, and
decodes to exactly its octets; a part labelled `binary` without any is relabelled `8bit`
(or converted as above when the target is 7-bit). Impossible (5.6.3) besides: binary
content in a body without MIME (no MIME-Version and no Content-Type), in a signed or
encrypted part, in a preamble or epilogue, or in a header block.

Input: chunks of wire-form text (CRLF line ends, or a BINARYMIME text as received).
Memory: one line (a longer line is handled in pieces of LINE octets) and one header
block, whatever the message's size.
"""

import binascii
import re

LINE = 65536
HEADER_LIMIT = 102400
_PROTECTED = frozenset((b"multipart/signed", b"multipart/encrypted",
                        b"application/pkcs7-mime", b"application/x-pkcs7-mime"))
_BOUNDARY = re.compile(rb';\s*boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;"]{1,200}))', re.I)
_8BIT = (b"8bit", b"binary")


class Impossible(ValueError):
    """The message cannot be made 7-bit; the text says why."""


def _lines(chunks):
    """Yield (piece, at line start): the text's lines with their line end, longer lines in
    pieces of at most LINE octets."""
    rest, start = b"", True
    for chunk in chunks:
        data = rest + chunk if rest else chunk
        pos = 0
        while True:
            end = data.find(b"\n", pos)
            if end < 0:
                break
            yield data[pos:end + 1], start
            start, pos = True, end + 1
        rest = data[pos:]
        if len(rest) > LINE:            # a long line: this piece now, the rest continues it
            yield rest, start
            rest, start = b"", False
    if rest:
        yield rest, start


class _Entity:
    """One MIME entity as its header block describes it."""

    __slots__ = ("number", "ctype", "cte", "boundary", "protected", "top",
                 "has_content_type", "mime")

    def __init__(self, number, lines, top, default):
        self.number, self.top = number, top
        fields = _fields(lines)
        value = fields.get(b"content-type", b"")
        self.ctype = value.split(b";", 1)[0].strip().lower() or default
        self.cte = fields.get(b"content-transfer-encoding", b"7bit").strip().lower()
        match = _BOUNDARY.search(value) if self.ctype.startswith(b"multipart/") else None
        self.boundary = (match.group(1) or match.group(2)) if match else None
        self.protected = self.ctype in _PROTECTED
        self.has_content_type = b"content-type" in fields
        self.mime = b"mime-version" in fields

    @property
    def leaf(self):
        return self.boundary is None and self.ctype != b"message/rfc822"


def _fields(lines):
    """Return {lower-case name: unfolded value} of a header block's lines."""
    fields, name = {}, None
    for line in lines:
        if line[:1] in (b" ", b"\t") and name is not None:
            fields[name] += b" " + line.strip()
            continue
        head, colon, value = line.partition(b":")
        name = head.strip().lower() if colon else None
        if name is not None:
            fields[name] = value.strip()
    return fields


def walk(chunks):
    """Yield the events of a message's MIME structure:
    ("head", entity, [lines]), ("blank", piece) ending it, ("body", entity, piece,
    at_start), ("delimiter", piece),
    ("junk", piece) for a preamble or epilogue line, ("protected", piece) inside a signed or
    encrypted part; then ("end",)."""
    stack = []              # open multiparts: (boundary, entity)
    head, number = [], 0
    size = 0
    mode, entity, guard = "head", None, None      # guard: the protected multipart's depth
    default = b"text/plain"
    for piece, start in _lines(chunks):
        if start and stack and piece[:2] == b"--":
            depth, close = _delimiter(piece, stack)
            if depth is not None:
                if guard is not None and depth < guard - 1:
                    guard = None
                if guard is not None and depth == guard - 1 and not close:
                    yield ("protected", piece)
                    continue
                if guard is not None and depth == guard - 1 and close:
                    guard = None
                del stack[depth + 1:]
                yield ("delimiter", piece)
                if close:
                    stack.pop()
                    mode, entity = "junk", None
                else:
                    parent = stack[-1][1]
                    default = b"message/rfc822" if parent.ctype == b"multipart/digest" \
                        else b"text/plain"
                    mode, head, size = "head", [], 0
                continue
        if guard is not None:
            yield ("protected", piece)
        elif mode == "head":
            if piece in (b"\r\n", b"\n"):
                number += 1
                entity = _Entity(number, head, number == 1, default)
                yield ("head", entity, head)
                yield ("blank", piece)
                default = b"text/plain"
                if entity.boundary is not None:
                    stack.append((entity.boundary, entity))
                    mode = "junk"
                    if entity.protected:
                        guard = len(stack)
                elif entity.ctype == b"message/rfc822":
                    mode, head, size = "head", [], 0
                else:
                    mode = "body"
                continue
            size += len(piece)
            if size > HEADER_LIMIT:
                raise Impossible("a header block is longer than %d octets" % HEADER_LIMIT)
            head.append(piece)
        elif mode == "body":
            yield ("body", entity, piece, start)
        else:
            yield ("junk", piece)
    if mode == "head" and head:
        number += 1
        entity = _Entity(number, head, number == 1, default)
        yield ("head", entity, head)
    yield ("end",)


def _delimiter(piece, stack):
    """Return (depth in stack, is close-delimiter) if piece delimits an open multipart."""
    line = piece.rstrip(b"\r\n")
    for depth in range(len(stack) - 1, -1, -1):
        boundary = stack[depth][0]
        if line[2:2 + len(boundary)] == boundary:
            rest = line[2 + len(boundary):].rstrip(b" \t")
            if rest == b"":
                return depth, False
            if rest == b"--":
                return depth, True
    return None, False


def is_binary(piece, start):
    """Return True if a body piece is binary content (not 8BITMIME text): a NUL, a bare CR
    or LF, or part of a line over 998 octets before its CRLF."""
    if not start or len(piece) > 1000 or b"\0" in piece:
        return True
    crlf = piece.endswith(b"\r\n")
    if piece.endswith(b"\n") and not crlf:
        return True
    return piece.count(b"\r") > crlf


class Plan:
    """What `scan` found: the entities to convert; `needed` is False for a text that goes
    as it is. `seven_bit`: the target takes 7-bit text only (else 8BITMIME text);
    `binary`: the text is a BINARYMIME one (it may hold binary content)."""

    def __init__(self, seven_bit=True, binary=False):
        self.convert = set()        # entity numbers holding 8-bit octets (7-bit target)
        self.binary = set()         # entity numbers holding binary content (to base64)
        self.needed = False
        self.seven_bit, self.binary_text = seven_bit, binary


def scan(chunks):
    """Return the Plan for a message's text, or raise Impossible."""
    plan = Plan()
    for _ in scan_steps(chunks, plan):
        pass
    return plan


def scan_steps(chunks, plan, every=2000, reopen=None):
    """Scan as `scan` does, filling plan; yield after every `every` lines, so that a caller
    can spread a long message over many turns of its loop. With `reopen` (a function that
    returns the text's chunks again), a quick first pass looks for 8-bit octets at all:
    a 7-bit text (the common case) needs no line-by-line walk."""
    if reopen is not None and not plan.binary_text:
        for number, chunk in enumerate(chunks):
            if not chunk.isascii():
                break
            if number % 16 == 15:
                yield
        else:
            return
        chunks = reopen()
    count = 0
    for event in walk(chunks):
        count += 1
        if count % every == 0:
            yield
        _judge(event, plan)


def _judge(event, plan):
    """Note in plan what one walk event needs, or raise Impossible."""
    kind, binary, seven = event[0], plan.binary_text, plan.seven_bit
    if kind == "body":
        entity, piece = event[1], event[2]
        if binary and entity.number not in plan.binary and is_binary(piece, event[3]):
            if entity.protected:
                raise Impossible("binary content in a signed or encrypted part")
            if entity.top and not (entity.mime or entity.has_content_type):
                raise Impossible("binary content in a message that is not MIME")
            plan.binary.add(entity.number)
            plan.needed = True
        elif seven and not piece.isascii():
            if entity.protected:
                raise Impossible("8-bit octets in a signed or encrypted part")
            plan.convert.add(entity.number)
            plan.needed = True
    elif kind == "head":
        entity, lines = event[1], event[2]
        if binary and any(b"\0" in line or not line.endswith(b"\r\n")
                          or line.count(b"\r") > 1 for line in lines):
            raise Impossible("binary octets in a header block")
        if seven and not all(line.isascii() for line in lines):
            raise Impossible("8-bit octets in a header (the next hop offers neither "
                             "8BITMIME nor SMTPUTF8)")
        if entity.cte == b"binary" or (seven and entity.cte in _8BIT):
            plan.needed = True
    elif kind in ("protected", "junk"):
        where = ("a signed or encrypted part" if kind == "protected"
                 else "a multipart preamble or epilogue")
        if binary and is_binary(event[1], True):
            raise Impossible("binary content in " + where)
        if seven and not event[1].isascii():
            raise Impossible("8-bit octets in " + where)


def convert(chunks, plan):
    """Yield the text with the plan's entities re-encoded (see the module's docstring)."""
    encoder = None
    for event in walk(chunks):
        kind = event[0]
        if kind == "body":
            if encoder is None:
                yield event[2]
            else:
                out = encoder.feed(event[2], event[3])
                if out:
                    yield out
            continue
        if encoder is not None and kind != "blank":
            yield encoder.finish(kind == "end")
            encoder = None
        if kind == "head":
            entity, lines = event[1], event[2]
            if entity.number in plan.binary:
                encoder = _Base64(exact=True)
                yield _relabel(lines, b"base64", entity.top and not entity.mime)
            elif entity.number in plan.convert:
                qp = entity.ctype.startswith(b"text/") or not entity.has_content_type
                encoding = b"quoted-printable" if qp else b"base64"
                encoder = _QuotedPrintable() if qp else _Base64()
                yield _relabel(lines, encoding, entity.top and not entity.mime)
            elif entity.cte in _8BIT and plan.seven_bit:
                yield _relabel(lines, b"7bit", False)
            elif entity.cte == b"binary":
                yield _relabel(lines, b"8bit", False)
            else:
                yield b"".join(lines)
        elif kind != "end":
            yield event[1]


def _relabel(lines, encoding, add_mime_version):
    """Return the header block with its Content-Transfer-Encoding field replaced."""
    kept, skipping = [], False
    for line in lines:
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = line.split(b":", 1)[0].strip().lower() == b"content-transfer-encoding"
        if not skipping:
            kept.append(line)
    if add_mime_version:
        kept.append(b"MIME-Version: 1.0\r\n")
    kept.append(b"Content-Transfer-Encoding: " + encoding + b"\r\n")
    return b"".join(kept)


def quoted_printable(line):
    """Return one line (no line end) as quoted-printable lines, CRLF between them."""
    out = binascii.b2a_qp(line, quotetabs=False, istext=False, header=False)
    return out.replace(b"=\n", b"=\r\n")


class _QuotedPrintable:
    """A body's lines to quoted-printable (RFC 2045 §6.7): line ends stay line ends."""

    def feed(self, piece, start):
        text = piece.rstrip(b"\r\n")
        ended = len(text) != len(piece)
        return quoted_printable(text) + (b"\r\n" if ended else b"=\r\n")

    def finish(self, at_end=False):
        return b""


class _Base64:
    """A body's octets to base64 in 76-character lines; the line end before the next
    delimiter belongs to the delimiter (RFC 2046 §5.1.1), so it is held back.

    `exact` (binary content): only that one CRLF (or LF) is the delimiter's; a CR before
    it is content, and so is the line end at the end of the message (no delimiter)."""

    def __init__(self, exact=False):
        self.data, self.held, self.exact = b"", b"", exact

    def feed(self, piece, start):
        if self.exact:
            cut = 2 if piece.endswith(b"\r\n") else 1 if piece.endswith(b"\n") else 0
            text = piece[:len(piece) - cut]
        else:
            text = piece.rstrip(b"\r\n")
        self.data += self.held + text
        self.held = piece[len(text):]
        cut = len(self.data) - len(self.data) % 57
        if not cut:
            return b""
        out = binascii.b2a_base64(self.data[:cut], newline=False)
        self.data = self.data[cut:]
        return b"".join(out[i:i + 76] + b"\r\n" for i in range(0, len(out), 76))

    def finish(self, at_end=False):
        if at_end and self.exact:
            self.data, self.held = self.data + self.held, b""
        out = b""
        if self.data:
            out = binascii.b2a_base64(self.data, newline=False) + b"\r\n"
        return out
