"""Find the hosts to deliver a domain's mail to: its MX hosts, in order, with their addresses.

Owns the mail-routing question built on the stub resolver (`masq.dns.resolver`): MX lookup and
ordering (preference, ties shuffled, each host once, at most MAX_MX), the null MX (RFC
7505), the implicit MX (a domain with no MX record is its own mail host), address
literals (`[192.0.2.1]`, `[IPv6:...]`), and the own-host rule of RFC 5321 section 5.1:
the MX hosts at or after our own best preference are dropped, so mail never loops back.
Does not send queries itself: it asks through a `Resolver` (`query`, `addresses`);
`MailResolver` is the Resolver that also answers `resolve_mx`, what the SMTP agent asks.
Does not decide what to do with a failure.

Hostile input: the MX answers (names re-checked by the codec, normalized before they are
compared with our own names). A host may be listed twice, or under several preferences.

Errors (in `MXResult.error`, never raised): a lookup's own error as it came; a null MX is
5.1.10; a bad address literal 5.1.3; MX hosts that all fail to resolve, permanently, 5.4.4
(a temporary failure among them wins: 4.4.3); an MX list in which we are the best host, or
a domain or literal that is ourselves, is a mail loop (5.4.6).
The callback runs exactly once, from the loop, never inside the call that asked.
"""

import random

from masq.dns.resolver import DNSError, Resolver, address_literal
from masq.proto import Factory, frozen
from masq.proto import dns as wire
from masq.proto.dns import MX

MAX_MX = 10


@frozen
class MXResult:
    """The hosts to try for a domain, in order, as (host, [ip, ...]) pairs, or an error."""
    domain: str
    hosts: list = Factory(list)
    implicit: bool = False
    error: DNSError = None



class MailResolver(Resolver):
    """The stub resolver that also finds a domain's mail hosts (what the SMTP agent asks)."""

    def resolve_mx(self, domain, callback):
        """Find the hosts to deliver a domain's mail to; callback(MXResult) later, exactly once."""
        resolve(self, domain, callback)

def resolve(resolver, domain, callback):
    """Find the hosts to deliver a domain's mail to; callback(MXResult) later, exactly once."""
    if domain.startswith("["):
        literal = address_literal(domain)
        if literal is None:
            error = DNSError(False, "5.1.3", "bad address literal %s" % domain)
            return _soon(resolver, callback, MXResult(domain, error=error))
        if literal in resolver.own_addresses:
            return _soon(resolver, callback, MXResult(domain, error=_loop_error(domain)))
        return _soon(resolver, callback, MXResult(domain, [(literal, [literal])], True))
    resolver.query(domain, MX, lambda result: _on_mx(resolver, domain, result, callback))


def _soon(resolver, callback, result):
    resolver.loop.call_soon(lambda: callback(result))


def _on_mx(resolver, domain, result, callback):
    if result.error is not None:
        return callback(MXResult(domain, error=result.error))
    exchanges = [record.data for record in result.records]
    if exchanges and all(host == "." for _, host in exchanges):
        return callback(MXResult(domain, error=DNSError(
            False, "5.1.10", "Domain %s does not accept mail (null MX)" % domain)))
    exchanges = [(pref, host) for pref, host in exchanges if host != "."]
    if not exchanges:
        return resolver.addresses(domain, lambda host: callback(
            _implicit(resolver, domain, host)))
    ordered = _order(exchanges)[:MAX_MX]
    ordered = _before(ordered, [p for p, h in ordered if h in resolver.own_names])
    if not ordered:
        return callback(MXResult(domain, error=_loop_error(domain)))
    hosts = {}

    def got(host):
        hosts[host.name] = host
        if len(hosts) == len(ordered):
            callback(_assemble(resolver, domain, ordered, hosts))
    for _, host in ordered:
        resolver.addresses(host, got)


def _implicit(resolver, domain, host):
    if host.error is not None and host.error.temporary:
        return MXResult(domain, error=host.error, implicit=True)
    if wire.normalize(domain) in resolver.own_names or \
            resolver.own_addresses & set(host.addresses):
        return MXResult(domain, error=_loop_error(domain), implicit=True)
    if not host.addresses:
        return MXResult(domain, implicit=True, error=DNSError(
            False, "5.4.4", "Unable to route: %s has no MX and no address" % domain))
    return MXResult(domain, [(host.name, host.addresses)], True)


def _assemble(resolver, domain, ordered, hosts):
    ours = [p for p, h in ordered if resolver.own_addresses & set(hosts[h].addresses)]
    ordered = _before(ordered, ours)
    if not ordered:
        return MXResult(domain, error=_loop_error(domain))
    found = [(h, hosts[h].addresses) for _, h in ordered if hosts[h].addresses]
    if found:
        return MXResult(domain, found)
    errors = [hosts[h].error for _, h in ordered if hosts[h].error is not None]
    if any(error.temporary for error in errors):
        return MXResult(domain, error=next(e for e in errors if e.temporary))
    return MXResult(domain, error=DNSError(
        False, "5.4.4", "Unable to route: no MX host of %s has an address" % domain))


def _loop_error(domain):
    return DNSError(False, "5.4.6", "Mail for %s loops back to myself" % domain)


def _order(exchanges):
    """Return (pref, host) sorted by preference, ties in random order, each host once."""
    shuffled = [(pref, wire.normalize(host)) for pref, host in exchanges]
    random.shuffle(shuffled)
    best = {}
    for pref, host in sorted(shuffled, key=lambda mx: mx[0]):
        best.setdefault(host, pref)
    return [(pref, host) for host, pref in best.items()]


def _before(ordered, our_preferences):
    """Drop the MX hosts at or after our own best preference (RFC 5321 section 5.1)."""
    if not our_preferences:
        return ordered
    cut = min(our_preferences)
    return [(pref, host) for pref, host in ordered if pref < cut]
