"""Route selection: which way out each recipient of a message may take. Pure; delivers nothing.

Owns masqmail's route criteria (docs/CONFIG.md, route sections): glob patterns (`*`, `?`,
`[...]`, matched by masq/mail/glob.py) on the
envelope sender (`allowed_sender`/`denied_sender`), each recipient
(`allowed_recipient`/`denied_recipient`) and the address in the From: header
(`allowed_from`/`denied_from`). A pattern without `@` matches the local part in any domain;
the domain matches case-insensitively, the local part case-sensitively; `<>` matches the
null sender; an empty allow list allows everything; a deny match beats an allow match.
A route's `max_message_size` (masqmail's `max_size`; 0: no limit) keeps larger messages
off it. Routes are considered in file order: each recipient leaves by the first usable route
whose criteria accept it and that the message fits, so one message can leave by several
routes; when no route at all (online or not) that accepts a recipient fits the message,
`too_small` names the route whose limit the bounce states.

Also owns which address the per-route rewrites of the outgoing copy give: `map_sender`
(the envelope sender), `map_from` (From: and Sender:), `map_reply_to`, `map_followup_to`,
then `map_outgoing` (all of them, after the specific table), then `from_domain`
(masqmail's map_return_path_addresses, map_h_from_addresses, map_h_reply_to_addresses,
map_h_mail_followup_to_addresses, map_outgoing_addresses), applied only to local
addresses (unqualified, or in a local domain). The rules are masq.mail.addrmap's.
"""

from masq.mail import addrmap
from masq.mail import address
from masq.mail import glob

HEADER_FIELDS = ("From", "Sender", "Reply-To", "Mail-Followup-To")     # the rewritten ones


def _header_table(route, field):
    """Return the specific table of a header field (map_outgoing comes after it)."""
    field = field.lower()
    if field == "reply-to":
        return route.map_reply_to
    if field == "mail-followup-to":
        return route.map_followup_to
    return route.map_from                   # From: and Sender:


def matches(pattern, addr):
    """Return True if the address text addr matches the route pattern (masq/mail/glob.py;
    the local part with regard to case, as masqmail)."""
    return glob.match_address(pattern, addr, caseless=False)


def _allowed(allow, deny, addr):
    if any(matches(p, addr) for p in deny):
        return False
    return not allow or any(matches(p, addr) for p in allow)


def accepts_message(route, sender, from_addrs):
    """Return True if route's sender and From: criteria let the message through."""
    if not _allowed(route.allowed_sender, route.denied_sender, sender):
        return False
    if not (route.allowed_from or route.denied_from):
        return True
    if from_addrs is None:          # a From: header that does not parse skips the route
        return False
    return all(_allowed(route.allowed_from, route.denied_from, a) for a in from_addrs)


def accepts_recipient(route, rcpt):
    """Return True if route's recipient criteria accept rcpt."""
    return _allowed(route.allowed_recipient, route.denied_recipient, rcpt)


def fits(route, size):
    """Return True if a message of size octets is within route's max_message_size."""
    return not route.max_message_size or size <= route.max_message_size


def too_small(routes, sender, rcpt, size, from_addrs):
    """Return the route with the largest limit among those whose criteria take rcpt, when
    the message fits none of them (online or not); None when one fits or none takes it."""
    takers = [r for r in routes
              if accepts_message(r, sender, from_addrs) and accepts_recipient(r, rcpt)]
    if not takers or any(fits(r, size) for r in takers):
        return None
    return max(takers, key=lambda r: r.max_message_size)


def choose(routes, usable, sender, recipients, from_addrs, after=None, size=0):
    """Return {route name: [recipient index]} and the indices no usable route takes.

    routes: config sections in file order; usable(route) says whether it may be used now;
    recipients: [(index, address)]; after: for each index, names of routes already tried;
    size: the message's octets (routes it does not fit are skipped).
    """
    chosen, left = {}, []
    candidates = [r for r in routes if usable(r) and fits(r, size)
                  and accepts_message(r, sender, from_addrs)]
    for index, rcpt in recipients:
        tried = (after or {}).get(index, ())
        for route in candidates:
            if route.name not in tried and accepts_recipient(route, rcpt):
                chosen.setdefault(route.name, []).append(index)
                break
        else:
            left.append(index)
    return chosen, left


def _rewrite(tables, route, addr, is_local):
    """Return (display name, new address) for a local addr by the first table with a
    matching rule, else by from_domain; None when addr stays as it is."""
    if not addr or not is_local(addr):
        return None
    try:
        local, _ = address.split(addr)
    except address.AddressError:
        return None
    for rules in tables:
        rule = addrmap.first_match(rules, local)
        if rule is not None:
            return rule.apply(local)
    if route.from_domain:
        return "", "%s@%s" % (address.quote_local(local), route.from_domain)
    return None


def rewrite_sender(route, sender, is_local):
    """Return the envelope sender as it leaves by route."""
    found = _rewrite((route.map_sender, route.map_outgoing), route, sender, is_local)
    return sender if found is None else found[1]          # a display name is not for it


def rewrite_header_address(route, field, addr, is_local):
    """Return None, or (display name, address) for an address of header field (one of
    HEADER_FIELDS) as it leaves by route."""
    return _rewrite((_header_table(route, field), route.map_outgoing), route, addr, is_local)


def has_rewrites(route):
    """Return True if route changes anything in the outgoing copy."""
    return bool(route.from_domain or route.map_sender or route.map_outgoing or
                any(_header_table(route, field) for field in HEADER_FIELDS))
