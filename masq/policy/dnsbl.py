"""DNS block and allow lists for the client address: the questions, the score, the reply.

Owns what postscreen's `dnsbl_sites` means (the syntax is masq/config/dnsbl_site.py's):
the name to ask for a client (IPv4 octets reversed, IPv6 nibbles reversed, before the
zone), the score (the sum of the weights of the `dnsbl` entries whose filter an answer
matches; a negative weight lowers it), the verdict (blocked at `dnsbl_threshold` or more;
a `dnswl` hit allows the client whatever the score), the 554 5.7.1 reply with the list's
TXT text, and the verdicts kept by TTL (`Verdicts`: at most CACHE_SIZE clients).

Pure: the caller (masq/inbound/checks.py) asks the resolver and hands the answers in.
A zone whose lookup failed (timeout, SERVFAIL) adds nothing: a failure never rejects, and
a verdict with a failed lookup is not kept.
Hostile input: the answers and the TXT text (a list's words go into our reply: only
printable ASCII, at most TXT_MAX characters, are kept).
"""

import ipaddress

from masq.config import dnsbl_site
from masq.proto.reply import Reply

MIN_TTL = 60            # postscreen_dnsbl_min_ttl: a verdict is kept at least this long
MAX_TTL = 3600          # postscreen_dnsbl_max_ttl: and at most this long
CACHE_SIZE = 1024
TXT_MAX = 200


def query_name(ip, zone):
    """Return the name to ask zone about the client address ip (text)."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.reverse_pointer.rsplit(".", 2)[0] + "." + zone


def txt_text(rdata):
    """Return the text of TXT record data (length-prefixed strings), made safe for a reply."""
    parts, at = [], 0
    while at < len(rdata):
        length = rdata[at]
        parts.append(rdata[at + 1:at + 1 + length])
        at += 1 + length
    text = b"".join(parts).decode("ascii", "replace")
    text = "".join(c if " " <= c <= "~" else " " for c in text)
    return " ".join(text.split())[:TXT_MAX]


class Verdict:
    """What the lists say of one client: allowed by a dnswl zone, the score, blocked."""

    __slots__ = ("allowed_by", "score", "listed_by", "blocked", "complete", "ttl")

    def __init__(self, allowed_by, score, listed_by, blocked, complete, ttl):
        self.allowed_by = allowed_by    # the dnswl zone that listed it, or None
        self.score = score
        self.listed_by = listed_by      # dnsbl zones with a positive weight that listed it
        self.blocked = blocked
        self.complete = complete        # every lookup answered (may be kept)
        self.ttl = ttl


class Lists:
    """The configured dnsbl and dnswl entries and the threshold."""

    def __init__(self, dnsbl, dnswl, threshold):
        self.block = [dnsbl_site.parse(text) for text in dnsbl]
        self.allow = [dnsbl_site.parse(text) for text in dnswl]
        self.threshold = threshold

    def zones(self):
        """Return the zones to ask, each once: allow lists first."""
        found = []
        for site in self.allow + self.block:
            if site.zone not in found:
                found.append(site.zone)
        return found

    def verdict(self, answers):
        """Return the Verdict for answers: {zone: (addresses, ttl)}, or (None, 0) if failed."""
        complete = all(answers.get(zone, (None, 0))[0] is not None for zone in self.zones())
        ttls = [ttl for addresses, ttl in answers.values() if addresses is not None]
        ttl = min(MAX_TTL, max(MIN_TTL, min(ttls) if ttls else MIN_TTL))
        for site in self.allow:
            if any(site.counts(a) for a in answers.get(site.zone, (None, 0))[0] or ()):
                return Verdict(site.zone, 0, [], False, complete, ttl)
        score, listed = 0, []
        for site in self.block:
            if any(site.counts(a) for a in answers.get(site.zone, (None, 0))[0] or ()):
                score += site.weight
                if site.weight > 0:
                    listed.append((site.weight, site.zone))
        listed = [zone for _, zone in sorted(listed, key=lambda hit: -hit[0])]
        return Verdict(None, score, listed, score >= self.threshold, complete, ttl)


def refusal(ip, zone, txt):
    """Return the reply to a blocked client: its address, the list and the list's words."""
    return Reply(554, "5.7.1", "Service unavailable; client [%s] blocked using %s%s"
                 % (ip, zone, "; " + txt if txt else ""))


class Verdicts:
    """Verdicts kept by client address until their TTL runs out; at most `size`."""

    def __init__(self, size=CACHE_SIZE):
        self.size = size
        self.kept = {}          # ip -> (expiry, Verdict, txt)

    def get(self, ip, now):
        """Return (Verdict, txt) kept for ip, or None."""
        entry = self.kept.get(ip)
        if entry is None:
            return None
        if entry[0] <= now:
            del self.kept[ip]
            return None
        return entry[1], entry[2]

    def put(self, ip, verdict, txt, now):
        """Keep a complete verdict (and the TXT text of a blocked one) for its TTL."""
        if not verdict.complete:
            return
        self.kept.pop(ip, None)
        if len(self.kept) >= self.size:
            self.kept = {k: e for k, e in self.kept.items() if e[0] > now}
        while len(self.kept) >= self.size:
            del self.kept[next(iter(self.kept))]
        self.kept[ip] = (now + verdict.ttl, verdict, txt)
