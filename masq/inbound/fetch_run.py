"""What every fetch run does whatever the protocol: the connection, TLS, timers, the queue.

Owns, for a protocol run built on it (`fetch_pop3.Pop3Run`, `fetch_imap.ImapRun`): the
connection (plain, STARTTLS/STLS or implicit TLS through `net.Stream`, the certificate
checked as the source says), feeding the engine and dispatching its events through the
subclass's `EVENTS` table, one timer (`timeout` for each event), streaming a message
into the queue (`fetch_intake.Intake`), and the one order that makes a run safe: once a
message's COMMIT is fdatasync'ed its key goes into the state file, and only then does the
subclass delete it (`delete(ref)`). It ends once: `done(taken, error or None)`, after
every commit already made has become durable.

The server is hostile: protocol errors, drops and timeouts end the run with an error; the
message in flight is aborted (the server keeps it).
"""

from masq.base import net
from masq.inbound.fetch_intake import Intake
from masq.outbound import tls
from masq.proto.errors import ProtocolError
from masq.queue.log import LogError

SLACK = 65536       # text beyond max_size before the server is taken for a liar


class Run:
    """One session with a mail server for one fetch source (subclassed per protocol)."""

    EVENTS = {}
    PROTOCOL = ""

    def __init__(self, host, source, ip, done, client, login_only=False):
        self.host, self.source, self.settings = host, source, source.settings
        self.loop = host.loop
        self.ip, self.port = ip, source.port
        self.done_callback, self.login_only = done, login_only
        self.client = client
        self.stream = self.connector = self.timer = self.intake = None
        self.encrypted = False
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
            return self.fail("connect to %s: %s" % (self.name(), error))
        self.stream = net.Stream(self.loop, sock, self._on_data, self._on_close)
        if self.settings.tls == "tls":
            self.start_tls()
        else:
            self.stream.resume_reading()
        self._arm()

    def name(self):
        """Return the server as the log names it."""
        return "%s[%s]:%d" % (self.source.host_name, self.ip, self.port)

    # input

    def _on_data(self, data):
        self.client.receive_data(data)
        try:
            while not self.over:
                event = self.client.next_event()
                if event is self.NEED_DATA:
                    break
                self._arm()
                self.EVENTS[type(event)](self, event)
        except ProtocolError as exc:
            return self.fail("protocol error: %s" % exc.reply.text[0])
        except LogError as exc:
            return self.fail("queue write failed: %s" % exc)
        except Exception as exc:        # a bug: end the run (its requester hears), then log
            self.fail("internal error: %r" % exc)
            raise
        self.flush()

    def _on_close(self, reason):
        if not self.over:
            self.fail("connection %s" % reason)

    def flush(self):
        """Write what the engine has for the server."""
        data = self.client.data_to_send()
        if data and self.stream is not None and not self.stream.closed:
            self.stream.write(data)

    def _arm(self):
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None if self.over else self.loop.call_later(
            self.settings.timeout, lambda: self.fail("timeout waiting for the server"))

    # TLS

    def start_tls(self):
        """Run the TLS handshake on the connection (then `tls_ready`)."""
        context, error = tls.context(self.settings.tls_verify, self.settings.tls_ca)
        if error is not None:
            return self.fail(error)
        try:
            name = self.source.host_name.encode("ascii")
        except UnicodeError:
            return self.fail("host name %r is not ASCII" % self.source.host_name)
        self.stream.start_tls(context, False, self._handshake_done, server_hostname=name)

    def _handshake_done(self, error):
        if self.over:
            return
        if error is not None:
            return self.fail(tls.describe_failure(error, self.source.host_name))
        self.encrypted = True
        if self.settings.tls == "starttls":
            self.tls_ready()
            self.flush()
        self._arm()

    def tls_ready(self):
        """STARTTLS finished: tell the engine (subclasses)."""

    # messages into the queue

    def text(self, ref, data):
        """Store a piece of the message with state-file key `ref` (None: no key)."""
        if self.intake is None:
            self.intake = Intake(self.host, self.source, ref, (self.source.host_name,
                                                               self.ip),
                                 self.stream.tls_info(), self.PROTOCOL)
        if data:
            self.intake.feed(data)

    def commit(self, ref, handle):
        """The message is complete: commit it; `handle` is what delete() will be given."""
        self.text(ref, b"")
        intake, self.intake = self.intake, None
        self.syncing += 1
        intake.commit(lambda error: self._durable(intake, ref, handle, error))

    def _durable(self, intake, ref, handle, error):
        """The message's COMMIT is on disk (or failed): record its key, then delete it."""
        self.syncing -= 1
        if error is not None:
            self.fail("queue sync failed: %s (message left on the server)" % error)
        else:
            self.taken += 1
            self.source.accepted(intake)
            try:
                if ref is not None:
                    self.source.state.add(ref)
                if not self.settings.keep and not self.over:
                    self.delete(handle)
            except OSError as exc:
                self.fail("state file %s: %s (message left on the server)"
                          % (self.source.state.path, exc))
        if self.over:
            return self._report()
        self.next()
        self.flush()

    def forget(self, keys):
        """Drop the keys of messages the server removed; return an error text or None."""
        keys = [k for k in keys if k is not None]
        try:
            self.source.state.forget(keys)
        except OSError as exc:
            return "state file %s: %s" % (self.source.state.path, exc)
        return None

    def delete(self, handle):
        """Mark a durably queued message for deletion (subclasses)."""
        raise NotImplementedError

    def next(self):
        """Go on after a message (subclasses)."""
        raise NotImplementedError

    # ending

    def fail(self, why):
        """End the run with an error."""
        self.end(why if why.startswith(self.name()) else "%s: %s" % (self.name(), why))

    def end(self, error):
        """End the run (error None: it succeeded)."""
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
