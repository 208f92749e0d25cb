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

import re

# Character classes are written negated: a class spanning all of Unicode takes ~10 ms to
# compile, too slow for `sendmail`. Non-ASCII counts as atext / letter (RFC 6531/6532);
# controls, C1, U+2028/9 and surrogates are refused by _CONTROL before these ever run.
_ATEXT = r'[^\x00-\x20"(),.:;<>@\[\]\\\x7f]'
_DOT_ATOM = re.compile(_ATEXT + r"+(?:\." + _ATEXT + "+)*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_LD = r"[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]"
_LDH = r"[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]"
_LABEL = re.compile(_LD + "(?:" + _LDH + "*" + _LD + ")?")
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ROUTE = re.compile(r"@(?:\[[^\]]*\]|[^,:@\[\]]*)(?:,@(?:\[[^\]]*\]|[^,:@\[\]]*))*:")
_UNQUOTE = re.compile(r"\\(.)", re.S)
_PHRASE = re.compile(_ATEXT + "+(?: " + _ATEXT + "+)*")

SYNTAX_SENDER = (501, "5.1.7", "Bad sender address syntax")
SYNTAX_RECIPIENT = (501, "5.1.3", "Bad recipient address syntax")
NEED_SMTPUTF8 = (553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
BAD_UTF8 = (500, "5.5.2", "Error: bad UTF-8 syntax")


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
    if _DOT_ATOM.fullmatch(local):
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
        if not _LABEL.fullmatch(label):
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
    if _CONTROL.search(text) or "\t" in text:
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
    route = _ROUTE.match(inner)
    if route:
        for hop in route.group()[:-1].split(","):
            _domain(hop[1:])
        inner, routed = inner[route.end():], True
    if inner.startswith('"'):
        match = _QUOTED.match(inner)
        local = _UNQUOTE.sub(r"\1", match.group(1)) if match else ""
    else:
        match = _DOT_ATOM.match(inner)
        local = match.group() if match else ""
    if not local:
        raise _Syntax("empty local part")
    if _octets(match.group()) > 64:
        raise _too_long("local part", 64)
    rest = inner[match.end():]
    routed = routed or any(c in local for c in "@%!")
    if rest.startswith("@"):
        return Address(local, _domain(rest[1:]), routed)
    if rest or not (unqualified or (not sender and local.lower() == "postmaster")):
        raise _Syntax("missing domain")
    return Address(local, "", routed)


_TOKEN = re.compile(
    r'(?P<ws>[ \t]+)|(?P<atom>%s+)|(?P<qs>"(?:[^"\\]|\\.)*")'
    r"|(?P<dlit>\[(?:[^\[\]\\]|\\.)*\])|(?P<special>[<>:;@,.])" % _ATEXT, re.S)
_COMMENT_MARK = re.compile(r"[()\\]")
_FOLD = re.compile(r"\r\n(?=[ \t])")
_STOPS = frozenset("<:;@,")
_WHAT = {'"': "unbalanced '\"'", "[": "unterminated domain literal '['",
         "(": "unbalanced '('", ")": "unbalanced ')'"}


def _show(token):
    return repr(token if len(token) <= 40 else token[:37] + "...")


def _list_error(text):
    return AddressError(501, "5.1.3", "Bad address list: " + text)


def _skip_comment(value, pos):
    """Return the index after the (possibly nested) comment that starts at pos."""
    depth = 0
    while True:
        mark = _COMMENT_MARK.search(value, pos)
        if mark is None:
            raise _Syntax(_WHAT["("])
        char, pos = mark.group(), mark.end()
        if char == "\\":
            pos += 1
        elif char == "(":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return pos


def _tokens(value):
    """Return the tokens of an unfolded header value as (kind, text) pairs, comments dropped."""
    value = _FOLD.sub("", value)
    if _CONTROL.search(value):
        raise _Syntax("control character or line break in address")
    tokens, pos = [], 0
    while pos < len(value):
        match = _TOKEN.match(value, pos)
        if match is None:
            char = value[pos]
            if char != "(":
                raise _Syntax(_WHAT.get(char, "unexpected %s" % _show(char)))
            pos = _skip_comment(value, pos)
            continue
        kind, text = match.lastgroup, match.group()
        if kind == "qs":
            tokens.append(("qs", _UNQUOTE.sub(r"\1", text[1:-1])))
        elif kind == "special":
            tokens.append((text, text))
        elif kind != "ws":
            tokens.append((kind, text))
        pos = match.end()
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
    pair, i = _addr_spec(tokens, i)
    if _kind(tokens, i) != ">":
        raise _Syntax("unbalanced '<'")
    out.append(_join(pair))
    return i + 1


def _address(tokens, i, out, in_group):
    """Parse one mailbox or group starting at tokens[i]; return the next index."""
    j = i
    while j < len(tokens) and tokens[j][0] not in _STOPS:
        j += 1
    stop = _kind(tokens, j)
    if stop in (":", "<"):
        for kind, text in tokens[i:j]:
            if kind not in ("atom", "qs", "."):
                raise _Syntax("unexpected %s in display name" % _show(text))
        if stop == "<":
            return _angle(tokens, j + 1, out)
        if in_group:
            raise _Syntax("nested group")
        return _list(tokens, j + 1, out, True)
    pair, i = _addr_spec(tokens, i)
    out.append(_join(pair))
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


def parse_address_list(value):
    """Return the addr-specs of an RFC 5322 address-list header value (To, Cc, Bcc)."""
    out = []
    try:
        _list(_tokens(value), 0, out, False)
    except _Syntax as fault:
        raise _list_error(str(fault)) from None
    return out


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


def _encoded_words(text):
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
    name = " ".join(_CONTROL.sub(" ", display_name or "").split())
    if not name:
        return _join(checked)
    if not name.isascii():
        name = _encoded_words(name)
    elif not _PHRASE.fullmatch(name) or "=?" in name:
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "%s <%s>" % (name, _join(checked))
