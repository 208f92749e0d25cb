"""Relay control: may this client send to this recipient? A reply, or None to go on.

Owns the decisions Postfix makes with `reject_unauth_destination`,
`allow_untrusted_routing = no` and `smtpd_reject_unlisted_recipient`:
- a client is trusted when its address is in `relay_net`, it has authenticated, or it
  presented a TLS client certificate whose fingerprint `relay_cert` lists (Postfix's
  `permit_tls_clientcerts`: such a client counts as authenticated);
- on a `submission` listener every transaction needs AUTH or such a certificate
  (530 5.7.0 at MAIL);
- a recipient in a local domain must be a known local user (550 5.1.1; 450 4.3.0 while
  the aliases file cannot be read, so nothing bounces for that), unless the
  address is routed (`%`, `!`, source route, quoted `@`) and the client untrusted
  (554 5.7.1: no relaying through us by tricks);
- any other recipient needs a trusted client (554 5.7.1 "not relaying"). An IP
  literal is never a local domain here: `user@[our.ip]` is treated as remote.

Pure: the caller passes what it knows (peer, local domains, a lookup for local users).
"""

import ipaddress

from masq.proto.reply import Reply


class Peer:
    """What relay control needs to know about the client."""

    __slots__ = ("ip", "trusted_net", "auth_user", "kind", "cert", "uid")

    def __init__(self, ip, trusted_net=False, auth_user=None, kind="smtp", cert=None,
                 uid=None):
        self.ip = ip
        self.trusted_net = trusted_net
        self.auth_user = auth_user
        self.kind = kind
        self.cert = cert            # the fingerprint of a listed client certificate
        self.uid = uid              # a local process's uid (`-bs` on a pipe), for the log

    @property
    def authenticated(self):
        """Return True if the client proved who it is (SMTP AUTH or a listed certificate)."""
        return self.auth_user is not None or self.cert is not None

    @property
    def trusted(self):
        """Return True if the client may relay."""
        return self.authenticated or (self.trusted_net and self.kind != "submission")


def parse_networks(texts):
    """Return ip_network objects for the relay_net strings."""
    return [ipaddress.ip_network(text, strict=False) for text in texts]


def in_networks(ip, networks):
    """Return True if the address ip (text) is in one of networks."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in networks)


def check_mail(peer):
    """Return a refusal for MAIL FROM from this peer, or None."""
    if peer.kind == "submission" and not peer.authenticated:
        return Reply(530, "5.7.0", "Log in with AUTH before sending mail here")
    return None


def certificate(der, listed):
    """Return the sha256 fingerprint (hex) of a DER client certificate if listed, else None."""
    if not der or not listed:
        return None
    import hashlib                      # lazily: only when a client shows a certificate
    digest = hashlib.sha256(der).hexdigest()
    return digest if digest in listed else None


def check_rcpt(peer, addr, locality, is_local_user):
    """Return a refusal for RCPT TO addr (an Address) from peer, or None.

    locality: the configuration's policy.local.Locality; is_local_user(addr): True, False,
    or None when that cannot be told now."""
    local = locality.is_local(str(addr))
    if addr.routed and not peer.trusted:
        return Reply(554, "5.7.1", "<%s>: not relaying for you to this domain" % addr)
    if local:
        known = is_local_user(addr)
        if known is None:           # the aliases file is broken: never bounce, defer
            return Reply(450, "4.3.0", "<%s>: cannot check this address now; try again later"
                         % addr)
        if not known:
            return Reply(550, "5.1.1", "<%s>: no such user here" % addr)
        return None
    if not peer.trusted:
        return Reply(554, "5.7.1", "<%s>: not relaying for you to this domain" % addr)
    return None
