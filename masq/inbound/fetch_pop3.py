"""One POP3 fetch run: connect, log in, take the new messages into the queue, delete them.

Owns the glue between the `masq.proto.pop3` engine and a socket (plain, STLS or implicit
TLS through `net.Stream`), the choice of login (under TLS: SASL PLAIN, else USER/PASS;
without TLS, which only `tls 'none'` allows: APOP, else CRAM-MD5, else USER/PASS), the
plan of a run (UIDL and LIST; messages already taken are deleted unless `keep`, larger
than `max_size` left and reported, at most `max_count` taken), and the order that makes a
run safe: RETR streams into the queue; once the COMMIT is fdatasync'ed the UID goes into
the state file, then DELE; QUIT makes the deletions. Also `login_only` for SMTP-after-POP.

The server is hostile: a protocol error, a drop, a timeout (`timeout` for each reply or
block of text) ends the run with an error; the message in flight is aborted (the server
keeps it), what was committed stays queued, and what was not QUIT is not deleted (the state
file deletes it next run). Results: `done(taken, error or None)`, exactly once.
"""

from masq.inbound.fetch_run import SLACK, Run
from masq.proto import pop3 as P
from masq.proto.errors import ConnectionClosed
from masq.proto.smtp_client_wire import choose_mechanism


class Pop3Run(Run):
    """One session with a POP3 server for one fetch source."""

    NEED_DATA = P.NEED_DATA
    PROTOCOL = "POP3"

    def __init__(self, host, source, ip, done, login_only=False):
        super().__init__(host, source, ip, done, P.Client(max_message=source.max_size + SLACK),
                         login_only)
        self.uids = self.sizes = None
        self.has_uidl = False
        self.plan = []              # (number, uid) still to retrieve
        self.current = None         # (number, uid) being retrieved
        self.deleted = []           # numbers DELE was sent for

    def tls_ready(self):
        """STLS done: the capabilities again."""
        self.client.tls_done()
        self.client.capa()

    # events

    def _on_greeting(self, event):
        if not event.status.ok:
            return self.fail("the server turned us away: %s" % event.status.text)
        self.client.capa()

    def _on_capabilities(self, event):
        if self.settings.tls == "starttls" and not self.encrypted:
            if "STLS" not in self.client.capabilities:
                return self.fail("%s does not offer STLS, which tls 'starttls' requires"
                                  % self.name())
            return self.client.stls()
        self._login()

    def _on_stls(self, event):
        if not event.status.ok:
            return self.fail("%s refused STLS: %s" % (self.name(), event.status.text))
        self.flush()
        self.start_tls()

    def _login(self):
        s, caps = self.settings, self.client.capabilities
        sasl = caps.get("SASL", ())
        if self.encrypted:
            if "PLAIN" in sasl:
                return self.client.authenticate("PLAIN", s.user, s.password)
            return self.client.user_pass(s.user, s.password)
        if self.client.timestamp is not None:
            return self.client.apop(s.user, s.password)
        mechanism = choose_mechanism(frozenset(sasl), False)
        if mechanism:
            return self.client.authenticate(mechanism, s.user, s.password)
        self.client.user_pass(s.user, s.password)

    def _on_login(self, event):
        if not event.status.ok:
            return self.fail("%s refused the login of %s: %s"
                              % (self.name(), self.settings.user, event.status.text))
        if self.login_only:
            return self._quit()
        self.client.uidl()
        self.client.list()

    def _on_listing(self, event):
        if event.command == "UIDL":
            if not event.status.ok:
                if self.settings.keep:
                    return self.fail("%s has no UIDL, and keep '1' needs it (fetch '%s' "
                                      "cannot keep mail there)" % (self.name(),
                                                                    self.source.name))
                self.uids, self.has_uidl = {}, False
            else:
                self.uids, self.has_uidl = dict(event.entries), True
            return
        if not event.status.ok:
            return self.fail("LIST refused: %s" % event.status.text)
        self.sizes = dict(event.entries)
        self._make_plan()

    def _make_plan(self):
        source, keep = self.source, self.settings.keep
        taken = source.state.taken if self.has_uidl else set()
        if self.has_uidl:
            try:
                source.state.prune(self.uids.values())
            except OSError as exc:
                return self.fail("state file %s: %s" % (source.state.path, exc))
        left = []
        for number in sorted(self.sizes):
            uid = self.uids.get(number)
            if uid is not None and uid in taken:
                if not keep:
                    self.client.dele(number)    # queued before; its DELE was not QUIT
                continue
            if self.sizes[number] > source.max_size:
                left.append("%d (%d octets)" % (number, self.sizes[number]))
                continue
            self.plan.append((number, uid))
        if left:
            source.report_left(left)
        if self.settings.max_count:
            del self.plan[self.settings.max_count:]
        self.next()

    def next(self):
        """Ask for the next message, or QUIT once every commit is durable."""
        if self.over:
            return
        if self.plan and self.current is None:
            self.current = self.plan.pop(0)
            self.client.retr(self.current[0])
        elif not self.plan and self.current is None and not self.syncing:
            self._quit()
        self.flush()

    def _on_text(self, event):
        self.text(self.current[1], event.data)

    def _on_end(self, event):
        (number, uid), self.current = self.current, None
        self.commit(uid, number)
        self.next()

    def delete(self, number):
        """DELE the message (made at QUIT)."""
        self.deleted.append(number)
        self.client.dele(number)

    def _on_command(self, event):
        if event.command == "RETR" and not event.status.ok:
            self.current = None
            self.source.log.warning("fetch %s: RETR %d refused: %s", self.source.name,
                                    event.number, event.status.text)
            self.next()
        elif event.command == "DELE" and not event.status.ok:
            self.source.log.warning("fetch %s: DELE %d refused: %s", self.source.name,
                                    event.number, event.status.text)

    def _quit(self):
        if self.client.state in (P.AUTHORIZATION, P.TRANSACTION, P.REFUSED):
            self.client.quit()
            self.flush()

    def _on_quit(self, event):
        if not event.status.ok:
            return self.end("QUIT refused (nothing deleted): %s" % event.status.text)
        self.end(self.forget([self.uids.get(n) for n in self.deleted] if self.uids else ()))

    def _on_eof(self, event):
        self.fail("connection closed by the server")


Pop3Run.EVENTS = {
    P.Greeting: Pop3Run._on_greeting, P.Capabilities: Pop3Run._on_capabilities,
    P.StlsReply: Pop3Run._on_stls, P.LoginReply: Pop3Run._on_login,
    P.Listing: Pop3Run._on_listing, P.MessageText: Pop3Run._on_text,
    P.MessageEnd: Pop3Run._on_end, P.CommandReply: Pop3Run._on_command,
    P.QuitReply: Pop3Run._on_quit, ConnectionClosed: Pop3Run._on_eof,
}
