"""One IMAP fetch run: log in, select the folder, take the new messages, delete them.

Owns the glue between the `masq.proto.imap` engine and `fetch_run.Run`: STARTTLS (or
implicit TLS), the login (under TLS: AUTHENTICATE PLAIN when offered, else LOGIN; without
TLS, which only `tls 'none'` allows: LOGIN unless the server says LOGINDISABLED), SELECT
of `folder`, the plan (every UID and RFC822.SIZE; what the state file holds is marked
deleted unless `keep`, larger than `max_size` left and reported, at most `max_count`
taken), and the order that makes a run safe: UID FETCH BODY.PEEK[] streams into the
queue; once the COMMIT is fdatasync'ed the key `UIDVALIDITY:UID` goes into the state file,
then UID STORE \\Deleted; UID EXPUNGE (RFC 4315, else EXPUNGE) at the end, then LOGOUT.

A key holds UIDVALIDITY: when the server renumbers a folder, its old keys match nothing
and are pruned, so a renumbered message is fetched again rather than lost. Results:
`done(taken, error or None)`, exactly once.
"""

from masq.inbound.fetch_run import SLACK, Run
from masq.proto import imap as I
from masq.proto.errors import ConnectionClosed


class ImapRun(Run):
    """One session with an IMAP server for one fetch source."""

    NEED_DATA = I.NEED_DATA
    PROTOCOL = "IMAP"

    def __init__(self, host, source, ip, done, login_only=False):
        super().__init__(host, source, ip, done, I.Client(max_message=source.max_size + SLACK),
                         login_only)
        self.sizes = {}             # uid -> size, from the listing
        self.listing = False
        self.plan = []              # uids still to fetch
        self.current = None         # the uid being fetched
        self.deleted = []           # uids marked \Deleted
        self.expunged = []          # uids the EXPUNGE in flight removes

    def key(self, uid):
        """Return the state-file key of uid in the selected folder."""
        return "%d:%d" % (self.client.uidvalidity, uid)

    def tls_ready(self):
        """STARTTLS done: the capabilities again."""
        self.client.tls_done()
        self.client.capability()

    def _on_greeting(self, event):
        if event.status == "BYE":
            return self.fail("the server turned us away: %s" % event.text)
        if event.status == "PREAUTH":
            return self._select()
        if self.client.capabilities:
            return self._after_capabilities()
        self.client.capability()

    def _after_capabilities(self):
        caps = self.client.capabilities
        if self.settings.tls == "starttls" and not self.encrypted:
            if "STARTTLS" not in caps:
                return self.fail("%s does not offer STARTTLS, which tls 'starttls' requires"
                                 % self.name())
            return self.client.starttls()
        s = self.settings
        if self.encrypted and "AUTH=PLAIN" in caps:
            return self.client.authenticate_plain(s.user, s.password)
        if "LOGINDISABLED" in caps:
            return self.fail("%s disables LOGIN%s" % (self.name(), "" if self.encrypted
                                                        else " without TLS"))
        self.client.login(s.user, s.password)

    def _on_done(self, event):
        _DONE[event.command](self, event)

    def _capability_done(self, event):
        if not event.ok:
            return self.fail("CAPABILITY refused: %s" % event.text)
        self._after_capabilities()

    def _starttls_done(self, event):
        if not event.ok:
            return self.fail("%s refused STARTTLS: %s" % (self.name(), event.text))
        self.flush()
        self.start_tls()

    def _login_done(self, event):
        if not event.ok:
            return self.fail("%s refused the login of %s: %s" % (self.name(),
                                                                 self.settings.user,
                                                                 event.text))
        self._select()

    def _select(self):
        if self.login_only:
            return self.client.logout()
        self.client.select(self.settings.folder)

    def _select_done(self, event):
        if not event.ok:
            return self.fail("SELECT %s refused: %s" % (self.settings.folder, event.text))
        if self.client.exists:
            self.listing = True
            return self.client.list_messages()
        self._make_plan()

    def _on_info(self, event):
        if self.listing:
            self.sizes[event.uid] = event.size or 0

    def _fetch_done(self, event):
        if self.listing:
            self.listing = False
            if not event.ok:
                return self.fail("UID FETCH refused: %s" % event.text)
            return self._make_plan()
        if self.current is not None:        # no BODY[] came: gone meanwhile, or refused
            self.source.log.warning("fetch %s: UID %d not fetched: %s %s", self.source.name,
                                    self.current, event.status, event.text)
            self.current = None
        self.next()

    def _make_plan(self):
        source, keep = self.source, self.settings.keep
        try:
            source.state.prune(self.key(uid) for uid in self.sizes)
        except OSError as exc:
            return self.fail("state file %s: %s" % (source.state.path, exc))
        left = []
        for uid in sorted(self.sizes):
            if self.key(uid) in source.state.taken:
                if not keep:
                    self.delete(uid)        # queued before; not expunged then
                continue
            if self.sizes[uid] > source.max_size:
                left.append("UID %d (%d octets)" % (uid, self.sizes[uid]))
                continue
            self.plan.append(uid)
        if left:
            source.report_left(left)
        if self.settings.max_count:
            del self.plan[self.settings.max_count:]
        self.next()

    def next(self):
        """Fetch the next message, or expunge and log out once every commit is durable."""
        if self.over or self.client.waiting_for is not None:
            return                          # every completion calls this again
        if self.plan:
            self.current = self.plan.pop(0)
            self.client.fetch(self.current)
        elif not self.syncing and self.client.state == I.SELECTED:
            if self.deleted:
                self.expunged, self.deleted = self.deleted, []
                self.client.expunge(self.expunged)
            else:
                self.client.logout()
        self.flush()

    def _on_text(self, event):
        if event.uid == self.current:
            self.text(self.key(event.uid), event.data)

    def _on_end(self, event):
        if event.uid != self.current:
            return
        self.current = None
        self.commit(self.key(event.uid), event.uid)

    def delete(self, uid):
        """Mark the message \\Deleted (removed by the EXPUNGE at the end)."""
        self.deleted.append(uid)
        self.client.delete(uid)

    def _store_done(self, event):
        if not event.ok:
            self.source.log.warning("fetch %s: UID STORE refused: %s", self.source.name,
                                    event.text)
        self.next()

    def _expunge_done(self, event):
        if not event.ok:
            return self.fail("EXPUNGE refused (nothing deleted): %s" % event.text)
        error = self.forget([self.key(uid) for uid in self.expunged])
        if error:
            return self.end(error)
        self.next()

    def _logout_done(self, event):
        self.end(None)

    def _on_eof(self, event):
        if self.client.state == I.CLOSED and event.state == I.LOGOUT:
            return self.end(None)
        self.fail("connection closed by the server")


_DONE = {
    "CAPABILITY": ImapRun._capability_done, "STARTTLS": ImapRun._starttls_done,
    "LOGIN": ImapRun._login_done, "AUTHENTICATE": ImapRun._login_done,
    "SELECT": ImapRun._select_done, "FETCH": ImapRun._fetch_done,
    "STORE": ImapRun._store_done, "EXPUNGE": ImapRun._expunge_done,
    "LOGOUT": ImapRun._logout_done,
}

ImapRun.EVENTS = {
    I.Greeting: ImapRun._on_greeting, I.Completion: ImapRun._on_done,
    I.MessageInfo: ImapRun._on_info, I.MessageText: ImapRun._on_text,
    I.MessageEnd: ImapRun._on_end, ConnectionClosed: ImapRun._on_eof,
}
