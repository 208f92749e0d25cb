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

from masq.base import net
from masq.outbound import tls
from masq.proto import pop3 as P
from masq.proto.reply import RemoteProtocolError
from masq.proto.smtp_client_wire import choose_mechanism
from masq.queue.log import LogError
from masq.inbound.fetch_intake import Intake

SLACK = 65536       # text beyond max_size before the server is taken for a liar


class Pop3Run:
    """One session with a POP3 server for one fetch source."""

    def __init__(self, host, source, ip, done, login_only=False):
        self.host, self.source, self.settings = host, source, source.settings
        self.loop = host.loop
        self.ip, self.port = ip, source.port
        self.done_callback, self.login_only = done, login_only
        self.client = P.Client(max_message=source.max_size + SLACK)
        self.stream = self.connector = self.timer = self.intake = None
        self.encrypted = False
        self.uids = self.sizes = None
        self.has_uidl = False
        self.plan = []              # (number, uid) still to retrieve
        self.current = None         # (number, uid) being retrieved
        self.syncing = 0            # commits waiting for the fdatasync
        self.taken = 0
        self.over = False
        self.error = None

    def start(self):
        """Connect; the greeting drives the rest."""
        self.connector = net.Connector(self.loop, self.ip, self.port, self._connected,
                                       self.settings.timeout)

    def _connected(self, sock, error):
        self.connector = None
        if error is not None:
            return self._fail("connect to %s: %s" % (self._name(), error))
        self.stream = net.Stream(self.loop, sock, self._on_data, self._on_close)
        if self.settings.tls == "tls":
            self._start_tls()
        else:
            self.stream.resume_reading()
        self._arm()

    def _name(self):
        return "%s[%s]:%d" % (self.source.host_name, self.ip, self.port)

    # input

    def _on_data(self, data):
        self.client.receive_data(data)
        try:
            while not self.over:
                event = self.client.next_event()
                if event is P.NEED_DATA:
                    break
                self._arm()
                _EVENTS[type(event)](self, event)
        except RemoteProtocolError as exc:
            return self._fail("protocol error: %s" % exc.reply.text[0])
        except LogError as exc:
            return self._fail("queue write failed: %s" % exc)
        except Exception as exc:        # a bug: end the run (its requester hears), then log
            self._fail("internal error: %r" % exc)
            raise
        self._flush()

    def _on_close(self, reason):
        if not self.over:
            self._fail("connection %s" % reason)

    def _flush(self):
        data = self.client.data_to_send()
        if data and self.stream is not None and not self.stream.closed:
            self.stream.write(data)

    def _arm(self):
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None if self.over else self.loop.call_later(
            self.settings.timeout, lambda: self._fail("timeout waiting for the server"))

    # TLS

    def _start_tls(self):
        context, error = tls.context(self.settings.tls_verify, self.settings.tls_ca)
        if error is not None:
            return self._fail(error)
        try:
            name = self.source.host_name.encode("ascii")
        except UnicodeError:
            return self._fail("host name %r is not ASCII" % self.source.host_name)
        self.stream.start_tls(context, False, self._handshake_done, server_hostname=name)

    def _handshake_done(self, error):
        if self.over:
            return
        if error is not None:
            return self._fail(tls.describe_failure(error, self.source.host_name))
        self.encrypted = True
        if self.settings.tls == "starttls":
            self.client.tls_done()
            self.client.capa()
            self._flush()
        self._arm()

    # events

    def _on_greeting(self, event):
        if not event.status.ok:
            return self._fail("the server turned us away: %s" % event.status.text)
        self.client.capa()

    def _on_capabilities(self, event):
        if self.settings.tls == "starttls" and not self.encrypted:
            if "STLS" not in self.client.capabilities:
                return self._fail("%s does not offer STLS, which tls 'starttls' requires"
                                  % self._name())
            return self.client.stls()
        self._login()

    def _on_stls(self, event):
        if not event.status.ok:
            return self._fail("%s refused STLS: %s" % (self._name(), event.status.text))
        self._flush()
        self._start_tls()

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
            return self._fail("%s refused the login of %s: %s"
                              % (self._name(), self.settings.user, event.status.text))
        if self.login_only:
            return self._quit()
        self.client.uidl()
        self.client.list()

    def _on_listing(self, event):
        if event.command == "UIDL":
            if not event.status.ok:
                if self.settings.keep:
                    return self._fail("%s has no UIDL, and keep '1' needs it (fetch '%s' "
                                      "cannot keep mail there)" % (self._name(),
                                                                    self.source.name))
                self.uids, self.has_uidl = {}, False
            else:
                self.uids, self.has_uidl = dict(event.entries), True
            return
        if not event.status.ok:
            return self._fail("LIST refused: %s" % event.status.text)
        self.sizes = dict(event.entries)
        self._make_plan()

    def _make_plan(self):
        source, keep = self.source, self.settings.keep
        taken = source.state.taken if self.has_uidl else set()
        if self.has_uidl:
            try:
                source.state.prune(self.uids.values())
            except OSError as exc:
                return self._fail("state file %s: %s" % (source.state.path, exc))
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
        self._next()

    def _next(self):
        """Ask for the next message, or QUIT once every commit is durable."""
        if self.over:
            return
        if self.plan and self.current is None:
            self.current = self.plan.pop(0)
            self.client.retr(self.current[0])
        elif not self.plan and self.current is None and not self.syncing:
            self._quit()
        self._flush()

    def _on_text(self, event):
        if self.intake is None:
            self.intake = Intake(self.host, self.source, self.current[1],
                                 (self.source.host_name, self.ip), self.stream.tls_info(), "POP3")
        self.intake.feed(event.data)

    def _on_end(self, event):
        if self.intake is None:         # an empty message: still a message
            self.intake = Intake(self.host, self.source, self.current[1],
                                 (self.source.host_name, self.ip), self.stream.tls_info(), "POP3")
        intake, (number, uid) = self.intake, self.current
        self.intake = self.current = None
        self.syncing += 1
        intake.commit(lambda error: self._durable(intake, number, uid, error))
        self._next()

    def _durable(self, intake, number, uid, error):
        """The message's COMMIT is on disk (or failed): record the UID, then DELE."""
        self.syncing -= 1
        if error is not None:
            self._fail("queue sync failed: %s (message %d left on the server)"
                       % (error, number))
        else:
            self.taken += 1
            self.source.accepted(intake)
            try:
                if uid is not None:
                    self.source.state.add(uid)
                if not self.settings.keep and not self.over:
                    self.client.dele(number)
            except OSError as exc:
                self._fail("state file %s: %s (message %d left on the server)"
                           % (self.source.state.path, exc, number))
        if self.over:
            return self._report()
        self._next()

    def _on_command(self, event):
        if event.command == "RETR" and not event.status.ok:
            self.current = None
            self.source.log.warning("fetch %s: RETR %d refused: %s", self.source.name,
                                    event.number, event.status.text)
            self._next()
        elif event.command == "DELE" and not event.status.ok:
            self.source.log.warning("fetch %s: DELE %d refused: %s", self.source.name,
                                    event.number, event.status.text)

    def _quit(self):
        if self.client.state in (P.AUTHORIZATION, P.TRANSACTION, P.REFUSED):
            self.client.quit()
            self._flush()

    def _on_quit(self, event):
        error = None if event.status.ok else "QUIT refused (nothing deleted): %s" % \
            event.status.text
        self._end(error)

    def _on_eof(self, event):
        self._fail("connection closed by the server")

    # ending

    def _fail(self, why):
        self._end("%s: %s" % (self._name(), why) if not why.startswith(self._name())
                  else why)

    def _end(self, error):
        if self.over:
            return
        self.over = True
        if self.intake is not None:
            self.intake.abort()
            self.intake = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.connector is not None:
            self.connector.cancel()
        if self.stream is not None:
            self.stream.close("closed by us")
        self.error = error
        self._report()

    def _report(self):
        """Tell the source how the run ended, once every commit has become durable."""
        if not self.syncing and self.done_callback is not None:
            done, self.done_callback = self.done_callback, None
            done(self.taken, self.error)


_EVENTS = {
    P.Greeting: Pop3Run._on_greeting, P.Capabilities: Pop3Run._on_capabilities,
    P.StlsReply: Pop3Run._on_stls, P.LoginReply: Pop3Run._on_login,
    P.Listing: Pop3Run._on_listing, P.MessageText: Pop3Run._on_text,
    P.MessageEnd: Pop3Run._on_end, P.CommandReply: Pop3Run._on_command,
    P.QuitReply: Pop3Run._on_quit, P.ConnectionClosed: Pop3Run._on_eof,
}
