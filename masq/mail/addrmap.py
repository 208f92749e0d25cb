"""Address map rules (`PATTERN: REPLACEMENT`) and rewriting the addresses of a header value.

Owns masqmail's map tables (map_return_path_addresses, map_h_from_addresses ...; masq's
`map_sender`, `map_from`, `map_reply_to`, `map_followup_to`, `map_outgoing`): a rule is a
glob (`*`, `?`) on the local part, a colon, and a replacement: an address or `Name
<address>`, where a local part `*` keeps the original one (`*@domain` changes the domain
only). `alice:x` and `alice: x` are the
same rule, as in masqmail. The pattern is masq.mail.glob's syntax (checked at load),
matched case-sensitively, as masqmail's fnmatch.

Rewriting a header value changes only addr-specs, found by a real address-list parser
(masq.mail.address): display names, comments, groups and folding stay as they were. A
rule's display name is used only for a bare address; an existing one is kept (masqmail).

Does not decide which addresses may be rewritten (local ones only: masq.route does) nor
which header a table applies to (masq.outbound.rewrite).

Hostile input: the header values (users' text); rules are the administrator's, checked at
load by `parse_rule` (ValueError with the reason), so a rule that could never apply or
would write a broken address is refused there, never skipped in silence.
"""

from masq.mail import address
from masq.mail import glob

_CACHE_SIZE = 256
_rules = {}                 # (text, display_name) -> Rule


def _cached(cache, key, make):
    found = cache.get(key)
    if found is None:
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        found = cache[key] = make()
    return found


class Rule:
    """One parsed rule: `.pattern`, and `.name`, `.local` (None: keep) and `.domain`."""

    __slots__ = ("pattern", "name", "local", "domain")

    def __init__(self, pattern, name, local, domain):
        self.pattern, self.name, self.local, self.domain = pattern, name, local, domain

    def matches(self, local):
        """Return True if the rule's pattern matches the (unquoted) local part."""
        return glob.match_whole(self.pattern, local, caseless=False)

    def apply(self, local):
        """Return (display name, new address text) for an address with this local part."""
        return self.name, "%s@%s" % (address.quote_local(
            local if self.local is None else self.local), self.domain)


def parse_rule(text, display_name=True):
    """Return the Rule of `PATTERN: REPLACEMENT`; raise ValueError saying what is wrong.

    display_name False (the envelope sender) refuses `Name <address>`."""
    return _cached(_rules, (text, display_name), lambda: _parse_rule(text, display_name))


def _parse_rule(text, display_name):
    pattern, colon, replacement = text.partition(":")
    pattern, replacement = pattern.strip(), replacement.strip()
    if not colon:
        raise ValueError("no ':' (write PATTERN: REPLACEMENT, e.g. 'alice: alice@isp.example')")
    if not pattern or any(c in pattern for c in " \t<>"):
        raise ValueError("%r is not a pattern for a local part" % pattern)
    if "@" in pattern:
        raise ValueError("the pattern %r holds '@', but it is matched against the local part "
                         "only" % pattern)
    try:
        glob.check(pattern)
    except glob.GlobError as exc:
        raise ValueError("bad pattern %r: %s" % (pattern, exc)) from None
    if not replacement:
        raise ValueError("no replacement after ':'")
    try:
        name, text = address.parse_mailbox(replacement)
        local, domain = address.split(text)
    except address.AddressError as exc:
        raise ValueError("bad replacement %r: %s" % (replacement, exc.text)) from None
    if not domain:
        raise ValueError("the replacement %r has no domain" % replacement)
    if name and not display_name:
        raise ValueError("the envelope sender takes no display name: %r" % replacement)
    return Rule(pattern, name, None if local == "*" else local, domain)


def first_match(rules, local):
    """Return the first Rule of the rule texts that matches local, or None."""
    for text in rules:
        rule = parse_rule(text)
        if rule.matches(local):
            return rule
    return None


def rewrite_value(value, rewrite):
    """Return value with each address that rewrite(Found) maps replaced, or None if none is
    (or the list does not parse: then it leaves unchanged). rewrite returns None or
    (display name, new address text)."""
    try:
        found = address.find_addresses(value)
    except address.AddressError:
        return None
    changed = False
    for item in reversed(found):
        new = rewrite(item)
        if new is None:
            continue
        name, text = new
        if name and not item.bracketed:
            text = address.format_address(name, text)
        if text != value[item.start:item.end]:
            value = value[:item.start] + text + value[item.end:]
            changed = True
    return value if changed else None
