"""The checks in the SMTP dialogue: DNS lists, HELO and sender domain, for outside clients.

Owns the glue between a session and the pure decisions of masq/policy/dnsbl.py and
masq/policy/sender_helo.py: asking masq's non-blocking resolver (one for every listener,
made at the first client), keeping DNS list verdicts by TTL, and answering a session's
question through a callback, at once or when the answers are in; the loop never waits.

When: the DNS list lookups start when the client connects and are waited for at its first
RCPT TO, so they cost a client no time while it greets and gives its sender; a blocked
client gets 554 5.7.1 for every recipient but postmaster (RFC 5321 section 4.5.1: a
postmaster can always be told about a false listing). HELO is judged at RCPT too (550
5.7.1, postmaster exempt); the sender domain at MAIL FROM (550 5.1.8, 550 5.7.27, 450
4.1.8; the null sender is not checked). A relay_net client or an authenticated one
skips every check (also one that authenticates after connecting); a dnswl hit skips the
others (the DNS lists, HELO, the sender domain: the sender check then waits for the
lists; and greylisting, which the session asks `allowed()`). A failed lookup never refuses a DNS list check. Pregreet is the session's
(smtp_greet_delay), not this module's.

Imported only when one of the options is set (`dnsbl`, `dnswl`, `check_helo`,
`check_sender_domain`): a router without them never loads it, nor the resolver for it.
"""

from masq.dns.resolver import A, Resolver, parse_server
from masq.policy import dnsbl, sender_helo
from masq.proto.dns import MX, TXT


class Checks:
    """What every listener's sessions share: the settings, resolver, verdicts, counters."""

    def __init__(self, loop, log, settings, main):
        self.loop, self.log, self.settings = loop, log, settings
        self.lists = dnsbl.Lists(main.dnsbl, main.dnswl, main.dnsbl_threshold) \
            if main.dnsbl or main.dnswl else None
        self.verdicts = dnsbl.Verdicts()
        servers = [parse_server(main.dns_server)] if main.dns_server else None
        self.resolver = Resolver(loop, servers, hosts_file=main.hosts_file)
        self.asked = 0                      # DNS list questions put to the resolver

    def close(self):
        """Release the resolver (pending questions are answered with a failure)."""
        self.resolver.close()

    def session(self, peer, local_ip):
        """Return the checks of one client connection."""
        return ClientChecks(self, peer, local_ip)

    # the DNS lists

    def client(self, ip, callback):
        """Find the lists' verdict on ip; callback(Verdict, txt) later, exactly once."""
        kept = self.verdicts.get(ip, self.loop.now)
        if kept is not None:
            self.loop.call_soon(lambda: callback(*kept))
            return
        zones, answers = self.lists.zones(), {}

        def got(zone, result):
            if result.error is not None and result.error.temporary:
                answers[zone] = (None, 0)
            else:
                answers[zone] = ([r.data for r in result.records], result.ttl)
            if len(answers) == len(zones):
                self._judged(ip, self.lists.verdict(answers), callback)
        for zone in zones:
            self.asked += 1
            self.resolver.query(dnsbl.query_name(ip, zone), A,
                                lambda result, zone=zone: got(zone, result))

    def _judged(self, ip, verdict, callback):
        if not verdict.blocked:
            self.verdicts.put(ip, verdict, None, self.loop.now)
            return callback(verdict, None)
        zone = verdict.listed_by[0]

        def got_txt(result):
            texts = [dnsbl.txt_text(r.data) for r in result.records] if result.error is None \
                else []
            txt = next((t for t in texts if t), None)
            self.verdicts.put(ip, verdict, txt, self.loop.now)
            self.log.info("client %s blocked by %s (score %d)", ip, " ".join(
                verdict.listed_by), verdict.score)
            callback(verdict, txt)
        self.asked += 1
        self.resolver.query(dnsbl.query_name(ip, zone), TXT, got_txt)

    # the sender's domain

    def sender(self, domain, callback):
        """Judge the sender's domain; callback(refusal or None) later, exactly once."""
        def got_mx(result):
            refusal, more = sender_helo.mx_says(domain, result)
            if not more:
                return callback(refusal)
            self.resolver.addresses(domain, lambda host: callback(
                sender_helo.addresses_say(domain, host)))
        self.resolver.query(domain, MX, got_mx)


class ClientChecks:
    """The checks of one connection: the DNS list verdict once it is in, and what waits
    for it."""

    def __init__(self, checks, peer, local_ip):
        self.checks, self.peer, self.local_ip = checks, peer, local_ip
        self.verdict = self.txt = None
        self.waiting = []               # functions to call once the verdict is in
        self.asking = checks.lists is not None and not self.exempt()
        if self.asking:
            checks.client(peer.ip, self._verdict)

    def exempt(self):
        """Return True if this client skips the checks (relay_net, authenticated)."""
        return self.peer.trusted_net or self.peer.authenticated

    def allowed(self):
        """Return the dnswl zone that lists the client, or None (also while unknown)."""
        return self.verdict.allowed_by if self.verdict is not None else None

    def _verdict(self, verdict, txt):
        self.verdict, self.txt, self.asking = verdict, txt, False
        waiting, self.waiting = self.waiting, []
        for then in waiting:
            then()

    def _judged(self, then):
        """Call then() once the DNS lists have answered (at once if none are asked)."""
        if self.asking:
            self.waiting.append(then)
        else:
            then()

    def mail(self, sender, callback):
        """Judge MAIL FROM sender (an Address); callback(refusal or None), maybe later."""
        if not self.checks.settings.check_sender_domain or self.exempt() or sender.is_null \
                or not sender.domain or sender.domain.startswith("["):
            return callback(None)

        def judge():
            if self.allowed():
                return callback(None)
            self.checks.sender(sender.domain.lower(), callback)
        self._judged(judge)

    def rcpt(self, rcpt, helo, local, callback):
        """Judge RCPT TO rcpt (text) after HELO helo; local: rcpt is in a local domain.
        callback(refusal or None), maybe later."""
        if self.exempt() or (local and rcpt.partition("@")[0].lower() == "postmaster"):
            return callback(None)
        self._judged(lambda: callback(self._refusal(rcpt, helo)))

    def _refusal(self, rcpt, helo):
        settings, verdict = self.checks.settings, self.verdict
        if self.allowed():
            return None
        if settings.check_helo and helo:
            refusal = sender_helo.helo_refusal(helo, rcpt, settings.hostname,
                                               settings.locality.exact, (self.local_ip,))
            if refusal is not None:
                return refusal
        if verdict is not None and verdict.blocked:
            return dnsbl.refusal(self.peer.ip, verdict.listed_by[0], self.txt)
        return None

    def close(self):
        """Forget what waits for the verdict (the session is gone)."""
        self.waiting = []
