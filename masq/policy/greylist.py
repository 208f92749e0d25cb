"""Greylisting: may this client's message to this recipient come in now? A reply, or None.

Owns the decision (sans IO: the caller passes the time and the state, masq/policy/
greylist_state.py): a triplet (client network: the /24 of an IPv4 address, the /64 of an
IPv6 one; sender; recipient) seen for the first time is answered `450 4.7.1`; a retry
after `greylist_delay` and before `greylist_window` has passed since then passes, and so
does the triplet from then on (for `greylist_whitelist_time` after it was last seen). A
client network whose triplets passed `greylist_whitelist_after` times is not greylisted
any more (an auto-whitelist, as postgrey's), for `greylist_whitelist_time` after it last
sent. A retry too early is answered 450 again and does not restart its delay.

Never greylisted: trusted clients (relay_net, AUTH, a listed certificate: relay.Peer's
`trusted`), a recipient in `greylist_exempt` (an address, `@domain`, or a bare local part
such as `postmaster` in any domain), and mail with the null sender at RCPT: address
verification probes (`MAIL FROM:<>`, RCPT, QUIT) must get their answer, so such mail is
checked at DATA instead, for all its recipients at once (postgrey's advice for Postfix).
"""

from masq.base.ip import is_ipv4
from masq.proto.reply import Reply

GREYLISTED = Reply(450, "4.7.1", "Greylisted: please try again later")


class Settings:
    """The greylist options of one configuration."""

    __slots__ = ("delay", "window", "passes", "keep", "exempt", "limit")

    def __init__(self, main):
        self.delay = main.greylist_delay
        self.window = main.greylist_window
        self.passes = main.greylist_whitelist_after
        self.keep = main.greylist_whitelist_time
        self.exempt = frozenset(e.lower() for e in main.greylist_exempt)
        self.limit = main.greylist_max_entries


def network(ip):
    """Return the client network of ip (text): its /24 (IPv4) or /64 (IPv6)."""
    if is_ipv4(ip):
        return "%s.0/24" % ip.rpartition(".")[0]
    import ipaddress                    # lazily: imported by relay control anyway
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network("%s/%d" % (addr, prefix), strict=False))


def exempt(settings, rcpt):
    """Return True if the recipient (a full address) is never greylisted."""
    if not settings.exempt:
        return False
    rcpt = rcpt.lower()
    local, _, domain = rcpt.rpartition("@")
    return rcpt in settings.exempt or "@" + domain in settings.exempt or \
        local in settings.exempt


def check(state, settings, peer, sender, rcpt, now):
    """Return GREYLISTED or None for sender -> rcpt from peer at now (seconds)."""
    if peer.trusted or exempt(settings, rcpt):
        return None
    now = int(now)
    net = network(peer.ip)
    net_key = state.key("net", net)
    count, last = state.network(net_key)
    if count >= settings.passes and now - last <= settings.keep:
        if now - last >= 3600:          # refreshed at most once an hour: few writes
            state.put_network(net_key, count, now)
        return None
    key = state.key(net, sender.lower(), rcpt.lower())
    seen = state.triplet(key)
    if seen is not None:
        first, _, passed = seen
        if passed:
            state.put_triplet(key, first, now, True, changed=False)
            return None
        if now - first <= settings.window:
            if now - first < settings.delay:
                return GREYLISTED
            state.put_triplet(key, first, now, True)
            state.put_network(net_key, count + 1 if now - last <= settings.keep else 1, now)
            return None
    state.put_triplet(key, now, now, False)
    return GREYLISTED
