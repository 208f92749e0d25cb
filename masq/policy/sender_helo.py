"""Cheap checks of what a client claims: the HELO name it gives and its sender's domain.

Owns two optional decisions, each "a reply or nothing":
- `check_helo`: a HELO/EHLO name that is a bare IP address (RFC 5321 wants an address
  literal in brackets) or one of our own names (the host name, a local domain, our
  address as a literal) is refused at RCPT, 550 5.7.1;
- `check_sender_domain`: the sender's domain must have an MX (not the null MX of RFC 7505:
  550 5.7.27) or an address. NXDOMAIN or no record at all: 550 5.1.8; a lookup that
  failed (timeout, SERVFAIL): 450 4.1.8, so a DNS outage never bounces mail.
Pure: the caller (masq/inbound/checks.py) looks the domain up and hands the results in
(objects with `records`/`addresses` and `error.temporary`, as the resolver gives them).
"""

from masq.base.ip import is_ipv4
from masq.proto.reply import Reply


def helo_refusal(name, rcpt, hostname, local_domains, own_ips):
    """Return the refusal for RCPT TO rcpt after HELO name, or None.

    local_domains: the local domains that are names, lower-cased (a pattern such as
    `*.lan` names other hosts too, not us)."""
    lowered = name.lower().rstrip(".")
    if is_ipv4(lowered) or (":" in lowered and not lowered.startswith("[")):
        why = "an address must be given in brackets"
    elif lowered == hostname.lower() or lowered in local_domains:
        why = "that is my name"
    elif lowered.startswith("[") and _literal(lowered) in own_ips:
        why = "that is my address"
    else:
        return None
    return Reply(550, "5.7.1", "<%s>: HELO %s refused: %s" % (rcpt, name, why))


def _literal(text):
    inner = text[1:-1]
    return inner[5:] if inner.startswith("ipv6:") else inner


def mx_says(domain, result):
    """Return (refusal or None, True if the addresses must be looked up too) for an MX answer."""
    if result.error is not None:
        return _failed(domain, result.error.temporary), False
    hosts = [record.data[1] for record in result.records]
    if hosts and all(host == "." for host in hosts):
        return Reply(550, "5.7.27", "Sender domain %s accepts no mail (null MX)" % domain), \
            False
    return None, not hosts


def addresses_say(domain, result):
    """Return the refusal (or None) for the sender domain's addresses (no MX)."""
    if result.addresses:
        return None
    return _failed(domain, result.error is not None and result.error.temporary)


def _failed(domain, temporary):
    if temporary:
        return Reply(450, "4.1.8", "Cannot check sender domain %s now; try again later"
                     % domain)
    return Reply(550, "5.1.8", "Sender domain %s not found (no MX, no address)" % domain)
