"""A `pipe:COMMAND` content filter: the message on its stdin, the filtered message from its stdout.

Owns one run of a filter command over one queued message: the command split as delivery
commands are (masq.outbound.command: shlex, `%s` the sender, no shell), the message fed
with LF line ends, its stdout streamed into a new text for the same message (a queue
Writer: 64 KiB chunks go to the log as they come, so memory stays flat for a large
message; the text is normalised back to CRLF), stderr kept up to a cap for the reason,
the time limit (`filter_timeout`), and the exit-code table that turns how it ended into a
Verdict (docs/FILTERS.md): 0 pass, 1 quarantine (spamc -E: spam), 75 tempfail, 77 and 100
reject, anything else, a signal or the time limit tempfail; `filter_exit 'CODE=ACTION'`
entries change it.

The command runs as the daemon runs: after the daemon became `option user`, as that user;
a one-shot queue run started by root runs it as `option user` too.

Does not touch the message's envelope (masq.outbound.filters records the verdict). Fails:
never raises after start; done(Verdict) is called exactly once, from the loop, unless
cancel() came first. A text that could not be written (disk full) or a message that could
not be read is a tempfail: the original stays, untouched.
"""

import os

from masq.base.child import Child
from masq.mail.message import InputNormalizer
from masq.outbound import command
from masq.outbound.filter_verdict import Filter, Verdict, reason_of
from masq.queue.spool import LogError

DEFAULT_EXITS = {0: "pass", 1: "quarantine", 75: "tempfail", 77: "reject", 100: "reject"}
HEAD = 16384        # bytes of the filter's output kept to find an X-Spam-Status: reason
STDERR_CAP = 1024


def exit_table(entries):
    """Return {exit code: action}: the defaults, changed by `filter_exit` entries."""
    table = dict(DEFAULT_EXITS)
    for entry in entries:
        code, _, action = entry.partition("=")
        table[int(code)] = action
    return table


class PipeFilter(Filter):
    """Runs `pipe:COMMAND` over message msgid; done(Verdict) once it has ended."""

    def __init__(self, host, msgid, env, spec, done):
        super().__init__(host, msgid, env, spec, done)
        self.child = None
        self.text = None
        self.normalizer = InputNormalizer(dot_ends=False)
        self.head = bytearray()
        self.errors = bytearray()
        self.err_fd = None
        self.write_error = None

    def start(self):
        """Start the command (a failure to start is reported through done, soon)."""
        from masq.outbound.mailbox.write import to_lf
        main = self.host.cfg.main
        loop = self.host.loop
        try:
            argv = command.expand_argv(self.target, {"s": self.env.sender})
        except command.Refused as refused:
            why = refused.outcome.text
            loop.call_soon(lambda: self._report(Verdict("tempfail", why)))
            return
        self.text = self.host.queue.writer(own=True)
        self.child = Child(loop, self._exited, main.filter_timeout, on_data=self._data)
        read_fd, write_fd = os.pipe()
        env = {"PATH": command.PATH, "SENDER": self.env.sender, "MESSAGE_ID": self.msgid,
               "RECIPIENT": self.env.recipients[0].address}
        body = to_lf(self.host.queue.body(self.msgid))
        try:
            self.child.spawn(argv, stdin=body, stderr=write_fd, env=env, cwd="/",
                             **_switch(main.user))
        finally:
            os.close(write_fd)
        self.err_fd = read_fd
        os.set_blocking(read_fd, False)
        loop.add_reader(read_fd, self._read_errors)

    def cancel(self):
        """Kill the command and forget its text; done is not called."""
        if self.child is not None:
            self.child.cancel()
        self._close_errors()
        if self.text is not None:
            self.text.abort()

    # output

    def _data(self, data):
        if len(self.head) < HEAD:
            self.head += data[:HEAD - len(self.head)]
        if self.write_error is not None:
            return
        try:
            self.text.write(self.normalizer.feed(data))
        except LogError as exc:
            self.write_error = exc
            self.child.kill()

    def _read_errors(self):
        while True:
            try:
                data = os.read(self.err_fd, 4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._close_errors()
                return
            if len(self.errors) < STDERR_CAP:
                self.errors += data[:STDERR_CAP - len(self.errors)]

    def _close_errors(self):
        if self.err_fd is not None:
            self.host.loop.remove_reader(self.err_fd)
            os.close(self.err_fd)
            self.err_fd = None

    # the end

    def _exited(self, child):
        if self.err_fd is not None:
            self._read_errors()         # what is left in the pipe (the child has exited)
            self._close_errors()
        if self.write_error is None:
            try:
                self.text.write(self.normalizer.finish())
            except LogError as exc:
                self.write_error = exc
        self._report(self._verdict(child))

    def _verdict(self, child):
        name = os.path.basename(self.target.split()[0])
        said = command.excerpt(bytes(self.errors))
        if child.error is not None:
            return Verdict("tempfail", "cannot run filter %s: %s" % (name, child.error))
        if child.feed_error is not None:
            return Verdict("tempfail", "cannot read the message: %s"
                           % (getattr(child.feed_error, "strerror", None) or child.feed_error))
        if self.write_error is not None:
            return Verdict("tempfail", "cannot queue the filtered text: %s" % self.write_error)
        if child.timed_out:
            return Verdict("tempfail", "filter %s timed out after %gs"
                           % (name, self.host.cfg.main.filter_timeout))
        code = os.waitstatus_to_exitcode(child.status)
        if code < 0:
            return Verdict("tempfail", "filter %s killed by signal %d" % (name, -code))
        action = exit_table(self.host.cfg.main.filter_exit).get(code, "tempfail")
        reason = said or reason_of(bytes(self.head)) or "filter %s exited %d" % (name, code)
        if action in ("pass", "quarantine"):
            if self.text.size == 0:
                return Verdict("tempfail", "filter %s exited %d and printed no message"
                               % (name, code))
            text, self.text = self.text, None
            return Verdict(action, reason, text)
        return Verdict(action, reason)

    def _report(self, verdict):
        if self.text is not None:
            self.text.abort()
            self.text = None
        self.done(verdict)


def _switch(user):
    """Return Popen's user/group arguments: `option user` when we are root, else none."""
    if not user or os.getuid() != 0:
        return {}
    import pwd
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
