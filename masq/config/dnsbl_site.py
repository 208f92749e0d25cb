"""The text of one DNS list entry, as postscreen's `dnsbl_sites`: ZONE[=FILTER][*WEIGHT].

Owns the grammar and nothing else (what a hit means is masq/policy/dnsbl.py's):
  ZONE     a DNS name (`zen.example`)
  FILTER   the answers that count, four dot-separated octet patterns; each is a number or a
           bracketed list of numbers and ranges, `;`-separated: `127.0.0.[2..11]`,
           `127.0.[2;4;10..12].1`. No filter: any address in 127.0.0.0/8 counts, except
           127.255.255.0/24 (what lists answer a resolver they refuse, not a listing)
  WEIGHT   an integer, negative for an allow list (`*-2`); default 1
Parsed when the configuration is loaded (to check it: masq/config/kinds.py also checks the
zone as a host name) and again by the policy; a bad entry is a configuration error.
"""

class Site:
    """One parsed entry: zone, filter (four frozensets of octets, or None) and weight."""

    __slots__ = ("zone", "filter", "weight", "text")

    def __init__(self, zone, filter, weight, text):
        self.zone = zone
        self.filter = filter
        self.weight = weight
        self.text = text

    def counts(self, address):
        """Return True if an A record's address (text) is an answer this entry counts."""
        octets = address.split(".")
        if len(octets) != 4 or not all(o.isdigit() for o in octets):
            return False
        numbers = [int(o) for o in octets]
        if self.filter is None:
            return numbers[0] == 127 and numbers[1:3] != [255, 255]
        return all(n in allowed for n, allowed in zip(numbers, self.filter))


def parse(text):
    """Return the Site the text stands for; raise ValueError."""
    rest, star, weight = text.partition("*")
    zone, equals, pattern = rest.partition("=")
    zone = zone.strip().lower().rstrip(".")
    if "." not in zone or not zone.isascii() or any(c.isspace() for c in zone):
        raise ValueError(text)
    return Site(zone, _filter(pattern, text) if equals else None,
                _weight(weight, text) if star else 1, text)


def _weight(text, whole):
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 6:
        raise ValueError(whole)
    return int(text)


def _filter(pattern, whole):
    parts, octets, depth, start = [], [], 0, 0
    for at, char in enumerate(pattern):      # split on dots outside brackets (`..` inside)
        depth += char == "["
        depth -= char == "]"
        if char == "." and depth == 0:
            parts.append(pattern[start:at])
            start = at + 1
    parts.append(pattern[start:])
    if len(parts) != 4:
        raise ValueError(whole)
    for part in parts:
        if part.startswith("[") and part.endswith("]"):
            items = part[1:-1].split(";")
        else:
            items = [part]
        allowed = set()
        for item in items:
            low, dots, high = item.partition("..")
            low, high = _octet(low, whole), _octet(high, whole) if dots else None
            if high is not None and high < low:
                raise ValueError(whole)
            allowed.update(range(low, (low if high is None else high) + 1))
        octets.append(frozenset(allowed))
    return tuple(octets)


def _octet(text, whole):
    if not (text.isascii() and text.isdigit()) or len(text) > 3 or int(text) > 255:
        raise ValueError(whole)
    return int(text)
