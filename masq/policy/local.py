"""Who is local: which addresses are delivered here, and which local parts name a recipient.

Owns the one answer to "is this address local?" (`Locality`, built from the configuration:
`local_domain` patterns, `local_addresses`, `not_local_addresses`, `caseless_matching`),
asked by the SMTP and QMTP sessions (relay control), the scheduler and its listings (local
agent or a route), sendmail (deliver now?), alias expansion (expand again or forward) and
the outgoing rewrites (only addresses in a local domain are rewritten). masqmail's rule
(docs/CONFIG.md, "Patterns"): an unqualified address is local; one whose domain matches a
`local_domain` pattern is local unless it matches `not_local_addresses`; any other is local
only if it matches `local_addresses`. Entries without `@` are qualified with the hostname,
as masqmail does.

Also owns `is_local_user`: a local part is known when it is an alias, a system user (pwd),
one of `local_users`, or one of the names every MTA must accept (`postmaster`, RFC 5321
section 4.5.1; `root` and `MAILER-DAEMON`). With `caseless_matching` (masq's default, as
Postfix's local delivery) names are compared without regard to case; without it, only
`postmaster` (RFC 5321 requires it) and `MAILER-DAEMON` are.

Pure apart from the pwd lookup; the aliases are passed in. Patterns were checked when the
configuration was read (masq/mail/glob.py), so matching never fails.
"""

import pwd

from masq.mail import glob

ALWAYS = frozenset(("postmaster", "mailer-daemon"))     # known in any case (they reach root)


class Locality:
    """Which addresses are local, for one configuration."""

    __slots__ = ("hostname", "exact", "patterns", "local_addresses", "not_local_addresses",
                 "caseless")

    def __init__(self, domains, hostname="localhost", local_addresses=(),
                 not_local_addresses=(), caseless=True):
        self.hostname = hostname
        self.exact = frozenset(d.lower() for d in domains if not glob.has_magic(d)
                               or glob.is_literal(d))   # also our own names (HELO checks)
        self.patterns = tuple(d for d in domains if d.lower() not in self.exact)
        self.local_addresses = tuple(self._qualify(a) for a in local_addresses)
        self.not_local_addresses = tuple(self._qualify(a) for a in not_local_addresses)
        self.caseless = caseless

    @classmethod
    def from_config(cls, main):
        """Return the Locality of a configuration's masq section."""
        return cls(main.local_domain, main.hostname, main.local_addresses,
                   main.not_local_addresses, main.caseless_matching)

    def _qualify(self, pattern):
        return pattern if "@" in pattern else "%s@%s" % (pattern, self.hostname)

    def in_local_domain(self, domain):
        """Return True if domain matches a local_domain pattern (any case)."""
        domain = domain.lower()
        return domain in self.exact or any(glob.match_domain(p, domain) for p in self.patterns)

    def is_local(self, addr):
        """Return True if the address text addr (local@domain, or unqualified) is
        delivered here."""
        _, at, domain = addr.rpartition("@")
        if not at or not domain:
            return True
        if self.in_local_domain(domain):
            return not self._listed(self.not_local_addresses, addr)
        return self._listed(self.local_addresses, addr)

    def in_local_domain_of(self, addr):
        """Return True if addr is unqualified or its domain is local (what masqmail's
        rewrites touch: local_addresses are never rewritten)."""
        _, at, domain = addr.rpartition("@")
        return not at or not domain or self.in_local_domain(domain)

    def _listed(self, patterns, addr):
        return any(glob.match_address(p, addr, self.caseless) for p in patterns)

    def same_name(self, a, b):
        """Return True if local parts a and b name the same recipient."""
        if self.caseless or a.lower() == "postmaster":
            return a.lower() == b.lower()
        return a == b


def fold(name, caseless):
    """Return the form of a local part that names are compared in."""
    return name.lower() if caseless or name.lower() in ALWAYS else name


def is_local_user(local, local_users=(), aliases=(), caseless=True):
    """Return True if local names a recipient this host delivers to.

    aliases: alias names, lower-cased when caseless, else as written."""
    name = fold(local, caseless)
    if local.lower() in ALWAYS or name == "root":
        return True
    if name in aliases or name in (fold(u, caseless) for u in local_users):
        return True
    if "/" in local or "\0" in local:
        return False
    for candidate in dict.fromkeys((local, local.lower()) if caseless else (local,)):
        try:
            pwd.getpwnam(candidate)
            return True
        except KeyError:
            pass
    return False
