"""Run a delivery command (MDA, `|command` alias, pipe route) in the loop, message on stdin.

Owns: turning a command template into argv (shlex split first, then `%u %d %s %r %%`
expanded inside single arguments, so no value can add, split or quote an argument), the
refusal of values that would become a dangerous path component or an option, the
command's environment, the child itself (its own session and process group,
stdin fed from an iterator through a non-blocking pipe, stdout and stderr collected up to a
cap and drained past it, SIGKILL to the whole group at the time limit) and the exit-code
table that turns how it ended into an Outcome. Also `run_in_child`: a Python function (a
mailbox write) run in a forked child that first becomes the mailbox owner, its Outcome read
back as one line on a pipe, the child watched and timed out in the loop.

Does not decide which command runs or as whom (masq.outbound.local does), and never uses a
shell: a command is what its template says, run by execve.

Hostile input: sender and recipient (any RFC 5321 local part: quotes, spaces, `;`, `$()`,
backticks are all legal) and everything the command prints. Output is bounded in memory
and reaches the Outcome text as one sanitised line of at most 200 characters.

Fails: never raises after start; `done(Outcome)` is called exactly once, from the loop.
The exit-code table (docs/LOCAL.md): 0 ok; 75 temp 4.3.0; 67 perm 5.1.1; 64, 65, 68, 69,
70, 76, 77, 78 and 100 (qmail's hard error) perm 5.3.0; the time limit temp 4.3.0; any
other code or a signal temp 4.3.0, so that the queue retries until the queue lifetime and
nothing is lost to a crashing script.
"""

import os
import re
import shlex
import signal
import subprocess

from masq.outbound.outcome import OK, PERMFAIL, TEMPFAIL, Outcome

PATH = "/usr/bin:/bin"
EXCERPT = 200
_PERMANENT = {
    64: "command line usage error (EX_USAGE)",
    65: "data format error (EX_DATAERR)",
    68: "host name unknown (EX_NOHOST)",
    69: "service unavailable (EX_UNAVAILABLE)",
    70: "internal software error (EX_SOFTWARE)",
    76: "remote protocol error (EX_PROTOCOL)",
    77: "permission denied (EX_NOPERM)",
    78: "configuration error (EX_CONFIG)",
    100: "permanent error (exit 100)",
}
_TEMPORARY = {
    66: "cannot open input (EX_NOINPUT)",
    71: "system error (EX_OSERR)",
    72: "critical OS file missing (EX_OSFILE)",
    73: "cannot create output file (EX_CANTCREAT)",
    74: "input/output error (EX_IOERR)",
    75: "temporary failure (EX_TEMPFAIL)",
}
_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PLACEHOLDER = re.compile("%(.?)")


class Refused(Exception):
    """A command or path cannot be built safely; `outcome` says what to report."""

    def __init__(self, outcome):
        super().__init__(outcome.text)
        self.outcome = outcome


def become(identity):
    """Turn this (forked child) process into identity (uid, gid, groups()) for good."""
    if identity is None or (os.geteuid() == identity.uid and os.getegid() == identity.gid):
        return
    os.setgroups(identity.groups())
    os.setgid(identity.gid)
    os.setuid(identity.uid)


# building argv and paths


def unsafe_component(value):
    """Return why value may not be used as a file name or argument, or None if it may."""
    if not value:
        return "empty"
    if "\0" in value or _UNSAFE_TEXT.search(value):
        return "control character"
    if "/" in value:
        return "'/'"
    if value in (".", ".."):
        return "'%s'" % value
    if value.startswith("-"):
        return "leading '-'"
    return None


def _value(letter, values, at_start):
    """Return the text a placeholder stands for; raise Refused if it is unsafe there."""
    if letter == "%":
        return "%"
    if letter not in ("u", "d", "s", "r") or letter not in values:
        raise Refused(Outcome.temp("4.3.5", "bad placeholder %%%s in command or path" % letter))
    value = values[letter]
    if letter in ("u", "d"):
        why = unsafe_component(value)
    else:
        why = "control character" if _UNSAFE_TEXT.search(value) else None
        if why is None and at_start and value.startswith("-"):
            why = "leading '-'"
    if why:
        status, what = ("5.1.7", "sender") if letter == "s" else ("5.1.3", "recipient")
        raise Refused(Outcome.perm(status, "%s %s unsafe in a command or path (%s)"
                                   % (what, _show(value), why)))
    return value


def expand(template, values):
    """Return template with placeholders replaced (values: letter -> text); may raise Refused."""
    out, pos = [], 0
    for match in _PLACEHOLDER.finditer(template):
        out.append(template[pos:match.start()])
        out.append(_value(match.group(1), values, at_start=match.start() == 0))
        pos = match.end()
    out.append(template[pos:])
    return "".join(out)


def expand_argv(command, values):
    """Return the argv of a command template: shlex-split, then each word expanded."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise Refused(Outcome.temp("4.3.5", "bad command %s: %s" % (_show(command), exc)))
    if not words:
        raise Refused(Outcome.temp("4.3.5", "empty command"))
    return [expand(word, values) for word in words]


def expand_path(template, values):
    """Return a mailbox path from its template; it must come out absolute."""
    path = expand(template, values)
    if not path.startswith("/"):
        raise Refused(Outcome.temp("4.3.5", "mailbox path %s is not absolute" % _show(path)))
    return path


def environment(sender, recipient, identity, extra=None):
    """Return the environment of a delivery command (nothing inherited from masq)."""
    local, _, domain = recipient.rpartition("@")
    env = {"PATH": PATH, "SENDER": sender, "RECIPIENT": recipient,
           "LOCAL": local if domain else recipient, "DOMAIN": domain,
           "USER": identity.name, "LOGNAME": identity.name, "HOME": identity.home}
    env.update(extra or {})
    return env


def _show(text, limit=80):
    text = _UNSAFE_TEXT.sub("?", text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def excerpt(output, limit=EXCERPT):
    """Return output as one sanitised line of at most limit characters."""
    text = _UNSAFE_TEXT.sub(" ", output.decode("utf-8", "replace"))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def exit_outcome(name, status, output=b"", timed_out=None):
    """Return the Outcome for how a command ended (status as from os.waitpid)."""
    said = excerpt(output)
    tail = (": " + said) if said else ""
    if timed_out is not None:
        return Outcome.temp("4.3.0", "command %s timed out after %gs%s" % (name, timed_out, tail))
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return Outcome.ok("delivered to command %s%s" % (name, tail))
    if code < 0:
        try:
            signame = signal.Signals(-code).name
        except ValueError:
            signame = "signal %d" % -code
        return Outcome.temp("4.3.0", "command %s killed by %s%s" % (name, signame, tail))
    if code == 67:
        return Outcome.perm("5.1.1", "command %s: user unknown (EX_NOUSER)%s" % (name, tail))
    if code in _PERMANENT:
        return Outcome.perm("5.3.0", "command %s exited %d, %s%s"
                            % (name, code, _PERMANENT[code], tail))
    meaning = _TEMPORARY.get(code, "unknown exit status, will retry")
    return Outcome.temp("4.3.0", "command %s exited %d, %s%s" % (name, code, meaning, tail))


# running


class Command:
    """One running command; `kill()` ends it early (the outcome is then a deferral)."""

    def __init__(self, loop, argv, env, stdin_iter, time_limit, output_cap, done):
        self.loop = loop
        self.argv = argv
        self.name = os.path.basename(argv[0]) or argv[0]
        self.env = env
        self.chunks = stdin_iter
        self.time_limit = time_limit
        self.output_cap = output_cap
        self.done = done
        self.proc = None
        self.pending = b""
        self.output = bytearray()
        self.status = None
        self.timed_out = None
        self.failure = None
        self.timer = None
        self.stdin = self.stdout = None
        self.finished = False

    def start(self, identity, cwd):
        """Start the child; a failure to start is reported through done, from the loop."""
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=self.env, cwd=cwd, close_fds=True,
                start_new_session=True, bufsize=0, **(identity.switch_args() if identity else {}))
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            text = getattr(exc, "strerror", None) or str(exc)
            outcome = Outcome.temp("4.3.5", "cannot run command %s: %s" % (self.name, text))
            self.loop.call_soon(lambda: self._report(outcome))
            return
        self.stdin, self.stdout = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self.stdin, False)
        os.set_blocking(self.stdout, False)
        self.loop.add_writer(self.stdin, self._write)
        self.loop.add_reader(self.stdout, self._read)
        self.loop.watch_child(self.proc.pid, self._exited)
        self.timer = self.loop.call_later(self.time_limit, self._timeout)

    def _write(self):
        if not self.pending:
            try:
                self.pending = next(self.chunks, None)
            except Exception as exc:        # the text failed part-way: never a short text
                self._unreadable(exc)
                return
            if self.pending is None:
                self._close_stdin()
                return
        try:
            written = os.write(self.stdin, self.pending)
            self.pending = self.pending[written:]
        except (BlockingIOError, InterruptedError):
            return
        except BrokenPipeError:
            self._close_stdin()             # the command stopped reading: its business
        except OSError as exc:
            self._unreadable(exc)

    def _unreadable(self, exc):
        """Reading the text (or writing the pipe) failed: kill the command before its stdin
        ends, so that it never takes a truncated text for the whole message."""
        self.failure = Outcome.temp("4.3.0", "cannot read the message: %s"
                                    % (getattr(exc, "strerror", None) or exc))
        self.kill()
        self._close_stdin()

    def _close_stdin(self):
        if self.stdin is not None:
            self.loop.remove_writer(self.stdin)
            self.proc.stdin.close()
            self.stdin = None
        self.pending = b""
        close = getattr(self.chunks, "close", None)
        if close:
            close()

    def _read(self):
        try:
            data = os.read(self.stdout, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_stdout()
            self._maybe_finish()
            return
        room = self.output_cap - len(self.output)
        if room > 0:
            self.output += data[:room]

    def _close_stdout(self):
        if self.stdout is not None:
            self.loop.remove_reader(self.stdout)
            self.proc.stdout.close()
            self.stdout = None

    def _exited(self, status):
        self.status = status
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not
        if self.timed_out is not None or self.failure is not None:
            self._close_stdout()            # killed: do not wait for an escaped straggler
        self._maybe_finish()

    def _timeout(self):
        self.timer = None
        if self.status is None:
            self.timed_out = self.time_limit
        self.kill()
        if self.status is not None:         # the leader is gone; a straggler holds stdout
            self._close_stdout()
            self._maybe_finish()

    def kill(self):
        """Kill the command's whole process group with SIGKILL."""
        if self.proc is None or self.finished:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _maybe_finish(self):
        if self.finished or self.status is None or self.stdout is not None:
            return
        self._close_stdin()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        outcome = self.failure or exit_outcome(self.name, self.status, bytes(self.output),
                                               self.timed_out)
        self._report(outcome)

    def _report(self, outcome):
        self.finished = True
        self.done(outcome)


def run_command(loop, argv, env, stdin_iter, time_limit, output_cap, done, identity=None,
                cwd="/"):
    """Run argv with stdin_iter's bytes on its stdin; call done(Outcome); return the Command."""
    command = Command(loop, list(argv), env, iter(stdin_iter), time_limit, output_cap, done)
    command.start(identity, cwd)
    return command


# running a Python function in a child


def _encode(outcome):
    text = excerpt(outcome.text.encode("utf-8", "replace"), 900)
    return ("%s %s %s\n" % (outcome.kind, outcome.status, text)).encode("utf-8")


def _decode(line):
    parts = line.decode("utf-8", "replace").rstrip("\n").split(" ", 2)
    if len(parts) == 3 and parts[0] in (OK, TEMPFAIL, PERMFAIL):
        return Outcome(parts[0], parts[1], parts[2])
    return None


def _child(read_fd, write_fd, identity, prepare, work):
    """Run in the forked child: prepare (as root), become identity, work, report, exit."""
    code = 1
    try:
        os.close(read_fd)
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        try:
            prepared = prepare()
            become(identity)
            outcome = work(prepared)
        except BaseException as exc:    # whatever happens, the parent gets one line
            outcome = Outcome.temp("4.3.0", "delivery process failed: %s" % exc)
        line = _encode(outcome)
        while line:
            line = line[os.write(write_fd, line):]
        code = 0
    finally:
        os._exit(code)


class _ChildWatch:
    """The parent's side: read the child's one line, reap it, time it out."""

    def __init__(self, loop, pid, read_fd, done, what):
        self.loop, self.pid, self.fd, self.done, self.what = loop, pid, read_fd, done, what
        self.line = b""
        self.status = None
        self.killed = False
        self.timer = None

    def read(self):
        try:
            data = os.read(self.fd, 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data and len(self.line) < 4096:
            self.line += data
            return
        self.loop.remove_reader(self.fd)
        os.close(self.fd)
        self.fd = None
        self.finish()

    def exited(self, status):
        self.status = status
        self.finish()

    def timeout(self):
        self.timer = None
        self.killed = True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(self):
        if self.fd is not None or self.status is None:
            return
        if self.timer is not None:
            self.timer.cancel()
        outcome = _decode(self.line) if not self.killed else None
        if outcome is None:
            how = "timed out" if self.killed else "ended without a result (status %d)" % (
                os.waitstatus_to_exitcode(self.status))
            outcome = Outcome.temp("4.3.0", "%s: delivery process %s" % (self.what, how))
        self.done(outcome)


def run_in_child(loop, identity, prepare, work, done, time_limit, what="delivery"):
    """Fork a child that runs prepare() with our privileges (create the mailbox, open the
    message), becomes identity, reports work(prepared)'s Outcome on a pipe; call
    done(Outcome) from the loop."""
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        outcome = Outcome.temp("4.3.0", "%s: cannot fork: %s" % (what, exc.strerror))
        loop.call_soon(lambda: done(outcome))
        return
    if pid == 0:
        _child(read_fd, write_fd, identity, prepare, work)
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    watch = _ChildWatch(loop, pid, read_fd, done, what)
    loop.add_reader(read_fd, watch.read)
    loop.watch_child(pid, watch.exited)
    watch.timer = loop.call_later(time_limit, watch.timeout)
