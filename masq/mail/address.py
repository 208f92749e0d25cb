"""Parse and print mail addresses: RFC 5321 paths (MAIL FROM / RCPT TO) and RFC 5322 lists.

Owns the `Address` value (local part as given, lower-cased domain, a `routed` flag), SMTP
path syntax with the RFC 5321 length limits and the RFC 6531 (SMTPUTF8) rule, address lists
from To/Cc/Bcc header values (`sendmail -t`), and printing an address with a display name
for a `From:` header.

Does not resolve, qualify, rewrite or route addresses (a domainless address is returned as
is; the caller qualifies it), decide relay policy (it only flags relay tricks as `routed`:
source routes, `%` or `!` in the local part, a quoted local part hiding `@`), or decode
RFC 2047 display names (only addresses come out of a list).

Hostile input: all of it (SMTP clients, users' headers). NUL, CR, LF and other control
characters (C0, DEL, C1, lone surrogates, U+2028/9) are refused everywhere; nothing here is
worse than linear in its input. Shell metacharacters that RFC 5321 allows in a local part
(`` ` ``, `$`, `|`, `{}`) are accepted as inert data: consumers must never hand an address
to a shell.

Fails with `AddressError` (a ValueError) carrying an SMTP code, an enhanced status code and
a text that the server can reply with and the command line can print.

Decisions: a path must be in angle brackets (Postfix with strict_rfc821_envelopes = yes);
a path given as bytes is decoded here as strict UTF-8; a source route is dropped, never
followed; address literals are checked with `ipaddress` (imported only when one is seen)
and stored canonical and lower-cased (`[ipv6:2001:db8::1]`); only IPv4 and IPv6 literals
are accepted; label length (63) is counted in UTF-8 octets, U-labels are not IDNA-checked.
"""

# No regular expressions: `re` and the enum machinery it imports cost `sendmail` ~5 ms per
# run (issue 10). The scanners below are each one linear pass over the text.
# atext (RFC 5322, with RFC 6532's non-ASCII): everything except these.
_NOT_ATEXT = frozenset('"(),.:;<>@[]\\\x7f' + "".join(map(chr, range(0x21))))
_SPECIALS = frozenset("<>:;@,.")
_CONTROL_SET = frozenset("".join(map(chr, range(0x09))) + "".join(map(chr, range(0x0a, 0x20)))
                         + "".join(map(chr, range(0x7f, 0xa0))) + "\u2028\u2029")


def _atext_end(text, pos):
    """Return the end of the run of atext characters that starts at pos."""
    end = len(text)
    while pos < end and text[pos] not in _NOT_ATEXT:
        pos += 1
    return pos


def _dot_atom_end(text, pos=0):
    """Return the end of the dot-atom that starts at pos (pos itself if there is none)."""
    end = _atext_end(text, pos)
    if end == pos:
        return pos
    while end < len(text) and text[end] == ".":
        after = _atext_end(text, end + 1)
        if after == end + 1:
            break
        end = after
    return end


def _is_dot_atom(text):
    return bool(text) and _dot_atom_end(text) == len(text)


def _quoted_end(text, pos):
    """Return the index after the quoted string starting at text[pos] == '"', or -1."""
    i, end = pos + 1, len(text)
    while i < end:
        char = text[i]
        if char == '"':
            return i + 1
        if char == "\\":
            if i + 1 >= end or text[i + 1] == "\n":
                return -1
            i += 2
        else:
            i += 1
    return -1


def _unquote(text):
    """Return text with each backslash-escaped character replaced by itself."""
    if "\\" not in text:
        return text
    out, i, end = [], 0, len(text)
    while i < end:
        if text[i] == "\\" and i + 1 < end:
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def _is_control(char):
    return char in _CONTROL_SET or "\ud800" <= char <= "\udfff"


def _has_control(text):
    """Return True if text holds a control character (tab aside), U+2028/9 or a surrogate."""
    if text.isascii():
        return not text.replace("\t", " ").isprintable()
    return any(_is_control(c) for c in text)


def _is_label(label):
    """Return True for a domain label: letters, digits (any non-ASCII) and inner hyphens."""
    if not label or label[0] == "-" or label[-1] == "-":
        return False
    if label.isascii():
        return label.replace("-", "a").isalnum()
    return all(c >= "\x80" or c.isalnum() or c == "-" for c in label)


def _route_end(inner):
    """Return the index after a source route `@a,@b:` that starts inner, or 0 if none does."""
    if not inner.startswith("@"):
        return 0
    i, end = 1, len(inner)
    while True:
        close = inner.find("]", i) if inner.startswith("[", i) else -1
        if close >= 0:
            i = close + 1
        else:
            while i < end and inner[i] not in ",:@[]":
                i += 1
        if inner.startswith(",@", i):
            i += 2
        elif inner.startswith(":", i):
            return i + 1
        else:
            return 0


def _is_phrase(text):
    return all(word and _atext_end(word, 0) == len(word) for word in text.split(" "))


SYNTAX_SENDER = (501, "5.1.7", "Sender address malformed")
SYNTAX_RECIPIENT = (501, "5.1.3", "Recipient address malformed")
NEED_SMTPUTF8 = (553, "5.6.7", "A non-ASCII address needs SMTPUTF8 on MAIL FROM")
BAD_UTF8 = (500, "5.5.2", "Invalid UTF-8 in a command")


class AddressError(ValueError):
    """A malformed or over-long address: `code`, `enhanced` and `text` make the SMTP reply."""

    def __init__(self, code, enhanced, text):
        super().__init__(text)
        self.code = code
        self.enhanced = enhanced
        self.text = text


class _Syntax(Exception):
    """Internal: a syntax fault, turned into the caller's AddressError at the boundary."""


def _too_long(what, limit):
    return AddressError(553, "5.1.0", "Address too long (%s over %d octets)" % (what, limit))


class Address:
    """An immutable mailbox: `.local` (unquoted, case kept), `.domain` (lower-cased), `.routed`."""

    __slots__ = ("local", "domain", "routed")

    def __init__(self, local, domain, routed=False):
        object.__setattr__(self, "local", local)
        object.__setattr__(self, "domain", domain.lower())
        object.__setattr__(self, "routed", bool(routed))

    def __setattr__(self, name, value):
        raise AttributeError("Address is immutable")

    def __delattr__(self, name):
        raise AttributeError("Address is immutable")

    @property
    def is_null(self):
        """Return True for the null reverse-path `<>`."""
        return not self.local and not self.domain

    def __str__(self):
        if self.is_null:
            return ""
        text = quote_local(self.local)
        return text + "@" + self.domain if self.domain else text

    def bracketed(self):
        """Return the address as an SMTP path, `<local@domain>` (`<>` for the null sender)."""
        return "<" + str(self) + ">"

    def __repr__(self):
        return "Address(%r, %r, routed=%r)" % (self.local, self.domain, self.routed)

    def __eq__(self, other):
        if not isinstance(other, Address):
            return NotImplemented
        return (self.local, self.domain) == (other.local, other.domain)

    def __hash__(self):
        return hash((self.local, self.domain))


NULL = Address("", "")


def quote_local(local):
    """Return a local part as written in an address: itself, or quoted if not a dot-atom."""
    if _is_dot_atom(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _octets(text):
    return len(text.encode("utf-8", "surrogatepass"))


def _literal(text):
    """Return the canonical form of an address literal `[...]`, or raise _Syntax."""
    import ipaddress  # only when a literal is seen: sendmail imports stay cheap

    body = text[1:-1]
    try:
        if body[:5].lower() == "ipv6:":
            if "%" in body:
                raise ValueError("zone index")
            return "[ipv6:%s]" % ipaddress.IPv6Address(body[5:]).compressed
        return "[%s]" % ipaddress.IPv4Address(body)
    except ValueError:
        raise _Syntax("bad address literal %s" % _show(text)) from None


def _domain(text):
    """Return the lower-cased domain or literal; _Syntax or AddressError if it is bad."""
    if text.startswith("[") and text.endswith("]"):
        return _literal(text)
    if _octets(text) > 255:
        raise _too_long("domain", 255)
    for label in text.split("."):
        if not _is_label(label):
            raise _Syntax("bad domain %s" % _show(text))
        if _octets(label) > 63:
            raise _too_long("domain label", 63)
    return text.lower()


def _decode(text, syntax, smtputf8):
    """Return the path as str: bytes are strict UTF-8; refuse controls and unannounced 8-bit."""
    if isinstance(text, (bytes, bytearray)):
        if not smtputf8 and not text.isascii():
            raise AddressError(*NEED_SMTPUTF8)
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise AddressError(*BAD_UTF8) from None
    text = text.strip(" ")
    if _has_control(text) or "\t" in text:
        raise AddressError(*syntax)
    if not smtputf8 and not text.isascii():
        raise AddressError(*NEED_SMTPUTF8)
    if _octets(text) > 256:
        raise _too_long("path", 256)
    return text


def parse_path(text, *, sender, smtputf8=False, unqualified=False):
    """Parse an SMTP path such as `<a@b.example>` (as given after MAIL FROM: / RCPT TO:)."""
    syntax = SYNTAX_SENDER if sender else SYNTAX_RECIPIENT
    text = _decode(text, syntax, smtputf8)
    if text == "<>":
        if sender:
            return NULL
        raise AddressError(*syntax)
    if len(text) < 3 or text[0] != "<" or text[-1] != ">":
        raise AddressError(*syntax)
    try:
        return _mailbox(text[1:-1], sender, unqualified)
    except _Syntax:
        raise AddressError(*syntax) from None


def _mailbox(inner, sender, unqualified):
    """Parse `[route:]local[@domain]` from inside the brackets of a path."""
    routed = False
    route = _route_end(inner)
    if route:
        for hop in inner[:route - 1].split(","):
            _domain(hop[1:])
        inner, routed = inner[route:], True
    if inner.startswith('"'):
        end = _quoted_end(inner, 0)
        local = _unquote(inner[1:end - 1]) if end > 0 else ""
    else:
        end = _dot_atom_end(inner)
        local = inner[:end]
    if not local:
        raise _Syntax("empty local part")
    if _octets(inner[:end]) > 64:
        raise _too_long("local part", 64)
    rest = inner[end:]
    routed = routed or any(c in local for c in "@%!")
    if rest.startswith("@"):
        return Address(local, _domain(rest[1:]), routed)
    if rest or not (unqualified or (not sender and local.lower() == "postmaster")):
        raise _Syntax("missing domain")
    return Address(local, "", routed)


_STOPS = frozenset("<:;@,")
_WHAT = {'"': "unbalanced '\"'", "[": "unterminated domain literal '['",
         "(": "unbalanced '('", ")": "unbalanced ')'"}


def _show(token):
    return repr(token if len(token) <= 40 else token[:37] + "...")


def _list_error(text):
    return AddressError(501, "5.1.3", "Malformed address list: " + text)


def _skip_comment(value, pos):
    """Return the index after the (possibly nested) comment that starts at pos."""
    depth, end = 0, len(value)
    while pos < end:
        char = value[pos]
        pos += 1
        if char == "\\":
            pos += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos
    raise _Syntax(_WHAT["("])


def _bracket_end(value, pos):
    """Return the index after the domain literal starting at value[pos] == '[', or -1."""
    i, end = pos + 1, len(value)
    while i < end:
        char = value[i]
        if char == "]":
            return i + 1
        if char == "[":
            return -1
        i += 2 if char == "\\" and i + 1 < end else 1
    return -1


def _tokens(value):
    """Return the tokens of a header value as (kind, text, start, end), comments dropped.

    Folding (CRLF then a space or tab) counts as white space; start and end index value."""
    plain = value.replace("\r\n ", "   ").replace("\r\n\t", "  \t")
    if _has_control(plain):
        raise _Syntax("control character or line break in address")
    tokens, pos, size = [], 0, len(plain)
    while pos < size:
        char = plain[pos]
        if char == " " or char == "\t":
            pos += 1
            continue
        if char in _SPECIALS:
            tokens.append((char, char, pos, pos + 1))
            pos += 1
            continue
        if char == '"':
            end = _quoted_end(plain, pos)
            if end < 0:
                raise _Syntax(_WHAT[char])
            inner = value[pos + 1:end - 1].replace("\r\n ", " ").replace("\r\n\t", "\t")
            tokens.append(("qs", _unquote(inner), pos, end))
        elif char == "[":
            end = _bracket_end(plain, pos)
            if end < 0:
                raise _Syntax(_WHAT[char])
            tokens.append(("dlit", plain[pos:end], pos, end))
        elif char == "(":
            end = _skip_comment(plain, pos)
        else:
            end = _atext_end(plain, pos)
            if end == pos:
                raise _Syntax(_WHAT.get(char, "unexpected %s" % _show(char)))
            tokens.append(("atom", plain[pos:end], pos, end))
        pos = end
    return tokens


def _kind(tokens, i):
    return tokens[i][0] if i < len(tokens) else ""


def _local_part(tokens, i):
    """Parse word *("." word) from tokens[i]; return (local, next index)."""
    words = []
    while True:
        if _kind(tokens, i) not in ("atom", "qs"):
            found = tokens[i][1] if i < len(tokens) else "end of list"
            raise _Syntax("expected a local part, found %s" % _show(found))
        words.append(tokens[i][1])
        i += 1
        if _kind(tokens, i) != ".":
            return ".".join(words), i
        i += 1


def _domain_part(tokens, i):
    """Parse a domain (dot-atom or literal) from tokens[i]; return (domain, next index)."""
    if _kind(tokens, i) == "dlit":
        return _literal(tokens[i][1]), i + 1
    if _kind(tokens, i) != "atom":
        raise _Syntax("missing domain after '@'")
    parts, i = [tokens[i][1]], i + 1
    while _kind(tokens, i) == "." and _kind(tokens, i + 1) == "atom":
        parts.append(tokens[i + 1][1])
        i += 2
    return _domain(".".join(parts)), i


def _addr_spec(tokens, i):
    """Parse local-part ["@" domain]; return ((local, domain), next index)."""
    local, i = _local_part(tokens, i)
    if not local:
        raise _Syntax("empty local part")
    if _octets(quote_local(local)) > 64:
        raise _too_long("local part", 64)
    if _kind(tokens, i) != "@":
        return (local, ""), i
    domain, i = _domain_part(tokens, i + 1)
    return (local, domain), i


def _join(pair):
    local, domain = pair
    return quote_local(local) + ("@" + domain if domain else "")


def _angle(tokens, i, out):
    """Parse what follows `<`: [obs-route ":"] addr-spec ">"; return the next index."""
    if _kind(tokens, i) == "@":
        while _kind(tokens, i) not in (":", ">", ""):
            i += 1
        if _kind(tokens, i) != ":":
            raise _Syntax("bad route in angle address")
        i += 1
    if _kind(tokens, i) == ">":
        raise _Syntax("empty address '<>'")
    first = i
    pair, i = _addr_spec(tokens, i)
    if _kind(tokens, i) != ">":
        raise _Syntax("unbalanced '<'")
    out.append(Found(pair, tokens[first][2], tokens[i - 1][3], True))
    return i + 1


def _address(tokens, i, out, in_group):
    """Parse one mailbox or group starting at tokens[i]; return the next index."""
    j = i
    while j < len(tokens) and tokens[j][0] not in _STOPS:
        j += 1
    stop = _kind(tokens, j)
    if stop in (":", "<"):
        for token in tokens[i:j]:
            if token[0] not in ("atom", "qs", "."):
                raise _Syntax("unexpected %s in display name" % _show(token[1]))
        if stop == "<":
            return _angle(tokens, j + 1, out)
        if in_group:
            raise _Syntax("nested group")
        return _list(tokens, j + 1, out, True)
    first = i
    pair, i = _addr_spec(tokens, i)
    out.append(Found(pair, tokens[first][2], tokens[i - 1][3], False))
    return i


def _list(tokens, i, out, in_group):
    """Parse addresses up to the end (or a group's `;`); return the next index."""
    ends = (",", ";", "") if in_group else (",", "")
    while i < len(tokens):
        kind = tokens[i][0]
        if kind == ";" and in_group:
            return i + 1
        if kind == ",":
            i += 1
            continue
        i = _address(tokens, i, out, in_group)
        if _kind(tokens, i) not in ends:
            raise _Syntax("unexpected %s after address" % _show(tokens[i][1]))
    return i


class Found:
    """One addr-spec of an address list: `.text` (as masq writes it), `.local`, `.domain`,
    where it stands in the value (`.start`, `.end`) and whether it was in angle brackets."""

    __slots__ = ("local", "domain", "start", "end", "bracketed")

    def __init__(self, pair, start, end, bracketed):
        self.local, self.domain = pair
        self.start, self.end, self.bracketed = start, end, bracketed

    @property
    def text(self):
        return _join((self.local, self.domain))


def find_addresses(value):
    """Return the addr-specs of an RFC 5322 address-list value as Found, in order.

    value may be the raw, folded text of a field (CRLF plus white space inside): start and
    end index it, so a caller can change an address and keep everything around it (display
    names, comments, groups, folding). Raise AddressError if the list does not parse."""
    out = []
    try:
        _list(_tokens(value), 0, out, False)
    except _Syntax as fault:
        raise _list_error(str(fault)) from None
    return out


def parse_mailbox(value):
    """Return (display name, addr-spec text) of one mailbox, `Name <a@b>` or `a@b`.

    The display name is unquoted ('' when there is none); a group, a list of several
    addresses or a malformed one raise AddressError."""
    found = find_addresses(value)
    tokens = _tokens(value)
    if len(found) != 1 or any(t[0] in (":", ";", ",") for t in tokens):
        raise _list_error("expected one address, as a@b or Name <a@b>")
    words = []
    for token in tokens:
        if token[0] == "<":
            break
        words.append(token[1] if token[0] != "." else ".")
    name = " ".join(words).replace(" . ", ". ") if found[0].bracketed else ""
    return name, found[0].text


def parse_address_list(value):
    """Return the addr-specs of an RFC 5322 address-list header value (To, Cc, Bcc)."""
    return [found.text for found in find_addresses(value)]


def split(text):
    """Split a plain addr-spec into (local part unquoted, lower-cased domain or '')."""
    try:
        tokens = _tokens(text)
        pair, i = _addr_spec(tokens, 0)
        if i != len(tokens):
            raise _Syntax("unexpected %s after address" % _show(tokens[i][1]))
    except _Syntax as fault:
        raise _list_error(str(fault)) from None
    return pair


def encoded_words(text):
    """Return text as RFC 2047 `=?utf-8?b?...?=` words, each at most 75 characters."""
    import base64

    words, chunk = [], b""
    for char in text:
        octets = char.encode("utf-8")
        if len(chunk) + len(octets) > 45:
            words.append(chunk)
            chunk = b""
        chunk += octets
    words.append(chunk)
    return " ".join("=?utf-8?b?%s?=" % base64.b64encode(w).decode("ascii") for w in words)


def format_address(display_name, addr):
    """Return `Display Name <addr>` for a From: header, quoting or encoding the name."""
    checked = split(addr)
    name = display_name or ""
    if _has_control(name):
        name = "".join(" " if _is_control(c) else c for c in name)
    name = " ".join(name.split())
    if not name:
        return _join(checked)
    if not name.isascii():
        name = encoded_words(name)
    elif not _is_phrase(name) or "=?" in name:
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "%s <%s>" % (name, _join(checked))
