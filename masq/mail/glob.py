"""Glob patterns on domains and addresses, as masqmail reads them (fnmatch(3)): check, match.

Owns the one pattern syntax masq takes wherever masqmail took globs (`local_domain`, the
route `allowed_*`/`denied_*` lists, `local_addresses`, `not_local_addresses`, the glob
aliases file): `*` any run of characters (dots and `@` included), `?` one character,
`[abc]`, `[a-z]`, `[!a-z]` (or `[^a-z]`) one character of (or not of) a set, `\\x` the
character x itself. Everything else stands for itself. Three ways to match:

  `match_domain(pattern, domain)`          a domain, always without regard to case;
  `match_address(pattern, addr, caseless)` `local@domain` split at the last `@`: the
      domain without regard to case, the local part as `caseless` says; a pattern without
      `@` matches the local part in any domain; `<>` matches the null sender only;
  `match_whole(pattern, text, caseless)`   the whole text (a glob alias without `@`).

Checks (`check_domain`, `check_address`, `check`) refuse what is not this syntax rather
than take it literally: an unterminated or empty `[...]`, a reversed range, a `[:class:]`,
a trailing `\\`, white space or control characters; in a domain (where an address literal
such as `[192.0.2.1]` stands for itself), any character a domain
cannot hold (`{a,b}`, `(x|y)`, `+`, `^`, `$`, `/` ...: regular expressions and brace
expansion are not globs) and a leading `.` (write `*.example.org` for the subdomains).
They raise GlobError with the reason, which the configuration reports with file and line.

No `re` (sendmail reads the patterns on every run): a pattern is parsed once into tokens
and matched by one pass with backtracking to the last `*`, at most O(len(pattern) *
len(text)). Parsed patterns are cached. Pure; no I/O.
"""

class _Wild:
    """A wildcard token (never equal to a literal character)."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


STAR, ONE, SET = _Wild("*"), _Wild("?"), "["
_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
_LITERAL_CHARS = frozenset("0123456789abcdef.:ipv6")
_CACHE = {}
_CACHE_LIMIT = 512


class GlobError(ValueError):
    """A pattern that is not glob syntax; str() is the reason."""


def _set(pattern, start):
    """Parse the set that starts after `[` at start; return (token, index after `]`)."""
    i, n = start, len(pattern)
    negate = i < n and pattern[i] in "!^"
    if negate:
        i += 1
    items, first = [], True
    while True:
        if i >= n:
            raise GlobError("'[' without a closing ']' (write \\[ for the character)")
        char = pattern[i]
        if char == "]" and not first:
            break
        if char == "[" and pattern[i + 1:i + 2] in (":", "=", "."):
            raise GlobError("character classes such as [:alpha:] are not supported: "
                            "write the set, e.g. [a-z]")
        if char == "\\":
            i += 1
            if i >= n:
                raise GlobError("'\\' at the end of the pattern")
            char = pattern[i]
        low = high = char
        if pattern[i + 1:i + 2] == "-" and pattern[i + 2:i + 3] not in ("]", ""):
            high = pattern[i + 2]
            if high == "\\":
                raise GlobError("'\\' as the end of a range")
            if not high or high < low:
                raise GlobError("range %s-%s is reversed or empty" % (low, high or "?"))
            i += 2
        items.append((low, high))
        first = False
        i += 1
    return (SET, negate, tuple(items)), i + 1


def parse(pattern):
    """Return the tokens of pattern: literal characters, STAR, ONE and SET tuples."""
    found = _CACHE.get(pattern)
    if found is not None:
        return found
    if not pattern:
        raise GlobError("an empty pattern")
    tokens, i, n = [], 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char <= " " or char == "\x7f":
            raise GlobError("white space or a control character")
        if char == "*":
            if not tokens or tokens[-1] is not STAR:
                tokens.append(STAR)
        elif char == "?":
            tokens.append(ONE)
        elif char == "[":
            token, i = _set(pattern, i + 1)
            tokens.append(token)
            continue
        elif char == "\\":
            if i + 1 >= n:
                raise GlobError("'\\' at the end of the pattern")
            i += 1
            tokens.append(pattern[i])
        else:
            tokens.append(char)
        i += 1
    tokens = tuple(tokens)
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[pattern] = tokens
    return tokens


def check(pattern):
    """Check a pattern's syntax; return it, or raise GlobError."""
    parse(pattern)
    return pattern


def check_domain(pattern):
    """Check a domain pattern (`*.example.org`, `mail?.example.org`); raise GlobError."""
    if is_literal(pattern):
        return pattern
    for token in parse(pattern):
        if isinstance(token, str) and len(token) == 1 and token not in _DOMAIN_CHARS \
                and ord(token) < 0x80:
            raise GlobError("%r is not glob syntax and cannot be in a domain (globs take "
                            "*, ? and [...])" % token)
    if pattern.startswith("."):
        raise GlobError("a domain does not start with '.': write *%s for its subdomains"
                        % pattern)
    return pattern


def check_address(pattern, null_ok=False):
    """Check an address pattern: `local@domain`, a local part alone, or (null_ok) `<>`."""
    if pattern == "<>":
        if null_ok:
            return pattern
        raise GlobError("<> (the null sender) only makes sense for senders")
    local, at, domain = pattern.rpartition("@")
    if not at:
        return check(pattern)
    if not local:
        raise GlobError("nothing before '@' (write *@%s for any local part)" % domain)
    check(local)
    try:
        check_domain(domain)
    except GlobError as exc:
        raise GlobError("after '@': %s" % exc) from None
    return pattern


def _in_set(token, char, fold):
    _, negate, items = token
    chars = (char, char.lower(), char.upper()) if fold else (char,)
    hit = any(low <= c <= high for c in chars for low, high in items)
    return hit != negate


def _match(tokens, text, fold):
    """Return True if tokens match all of text (fold: without regard to case)."""
    if fold:
        text = text.lower()
    t = p = 0
    star_p = star_t = -1
    n, m = len(text), len(tokens)
    while t < n:
        token = tokens[p] if p < m else None
        if token is STAR:
            star_p, star_t = p, t
            p += 1
            continue
        if token is not None and (
                token is ONE or
                (isinstance(token, tuple) and _in_set(token, text[t], fold)) or
                (isinstance(token, str) and (token.lower() if fold else token) == text[t])):
            t += 1
            p += 1
            continue
        if star_p < 0:
            return False
        p, star_t = star_p + 1, star_t + 1
        t = star_t
    return all(token is STAR for token in tokens[p:])


def has_magic(pattern):
    """Return True if pattern holds a glob character (else it only matches itself)."""
    return any(c in pattern for c in "*?[\\")


def match_whole(pattern, text, caseless=True):
    """Return True if pattern matches all of text."""
    if not has_magic(pattern):
        return pattern.lower() == text.lower() if caseless else pattern == text
    return _match(parse(pattern), text, caseless)


def match_domain(pattern, domain):
    """Return True if the domain pattern matches domain, without regard to case."""
    if is_literal(pattern):
        return pattern.lower() == domain.lower()
    return match_whole(pattern, domain, True)


def is_literal(pattern):
    """Return True for an address literal such as [192.0.2.1] (itself, not a set)."""
    return (len(pattern) > 2 and pattern[0] == "[" and pattern[-1] == "]"
            and _LITERAL_CHARS.issuperset(pattern[1:-1].lower()))


def match_address(pattern, addr, caseless=False):
    """Return True if the address pattern matches the address text addr (see the module)."""
    if pattern == "<>":
        return addr == ""
    if addr == "":
        return False
    local, at, domain = addr.rpartition("@")
    if not at:
        local = addr
    plocal, at, pdomain = pattern.rpartition("@")
    if not at:
        return match_whole(pattern, local, caseless)
    return bool(domain) and match_whole(plocal, local, caseless) and \
        match_domain(pdomain, domain)
