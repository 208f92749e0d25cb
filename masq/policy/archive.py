"""Archive copies: which addresses get a blind copy of a message as it is accepted.

Owns `always_bcc` (every message), masqmail's `log_user` (the same thing under masqmail's
name: one more address of the same list, not a second mechanism), and the `sender_bcc` and
`recipient_bcc` maps (Postfix's sender_bcc_maps and recipient_bcc_maps, as UCI list rows
`KEY ADDRESS`). A key is `user@domain` (that address), `@domain` (anyone in that domain)
or a bare `user` (that local part in any of our local domains); the exact address wins
over `@domain`, which wins over the bare user. Keys and addresses compare caselessly.

A copy is an extra envelope recipient, added to the COMMIT of the message itself: there is
one copy per message (not per recipient), written in the same record as the message, so a
retry, a restart or a crash never makes a second one and never loses it. The copy's
recipient carries `NOTIFY=NEVER` (as Postfix's always_bcc does): its failure never goes to
the sender and it never shows in a DSN or delay warning to the sender; a failed copy is
logged in the delivery log (`bounced`) only. An address that already is a recipient gets
no second copy.

Input paths (SMTP, `-bs`, QMTP/QMQP, `sendmail`, fetched mail) call `Rules.with_copies`
just before they commit, and import this module only when `Config.copies_wanted()` says
an option of it is set; mail masq makes itself (DSNs, delay warnings, the message an alias
forwards to remote addresses) is not copied again. Pure: no IO.
"""

from masq.policy.local import Locality
from masq.queue.envelope import Recipient

NEVER = "NEVER"


class Rules:
    """The archive settings of one configuration, parsed once."""

    __slots__ = ("always", "senders", "recipients", "hostname", "in_local_domain")

    def __init__(self, main):
        self.hostname = main.hostname.lower()
        self.in_local_domain = Locality.from_config(main).in_local_domain   # globs too
        self.always = [self.qualify(a) for a in (main.always_bcc, main.log_user) if a]
        self.senders = self._map(main.sender_bcc)
        self.recipients = self._map(main.recipient_bcc)

    def qualify(self, text):
        """Return text as a full address (a bare user name gets the host name)."""
        return text if "@" in text else "%s@%s" % (text, self.hostname)

    def _map(self, rows):
        table = {}
        for row in rows:
            key, target = row.split()
            table.setdefault(key.lower(), self.qualify(target))   # the first row wins
        return table

    def lookup(self, table, addr):
        """Return the copy address table gives for addr (a full address), or None."""
        if not table or not addr:
            return None
        addr = addr.lower()
        local, _, domain = addr.rpartition("@")
        found = table.get(addr) or table.get("@" + domain)
        if found is None and self.in_local_domain(domain):
            found = table.get(local)
        return found

    def copies(self, sender, recipients):
        """Return the archive addresses for a message, in order, each once."""
        wanted = list(self.always)
        wanted.append(self.lookup(self.senders, sender))
        wanted.extend(self.lookup(self.recipients, r) for r in recipients)
        seen, out = set(), []
        for addr in wanted:
            if addr and addr.lower() not in seen:
                seen.add(addr.lower())
                out.append(addr)
        return out

    def with_copies(self, sender, recipients):
        """Return recipients (Recipient objects or address strings) with the archive copies
        appended as NOTIFY=NEVER recipients; an address already among them is not added."""
        out = [r if isinstance(r, Recipient) else Recipient(r) for r in recipients]
        have = {r.address.lower() for r in out}
        for addr in self.copies(sender, [r.address for r in out]):
            if addr.lower() not in have:
                have.add(addr.lower())
                out.append(Recipient(addr, notify=NEVER))
        return out
