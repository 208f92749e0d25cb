"""Polled online detectors: `file:PATH` and `pipe:COMMAND` (masqmail's online file and query).

Owns the verdict rules (shared with the one-shot probes in masq.online.probe) and `Child`,
a command run in the loop for a detector: argv from shlex, never a shell; stdin and stderr
on /dev/null; stdout read through a non-blocking pipe, either collected (up to a cap) or
handed over as it comes (the ubus listener); its own process group, SIGKILLed at the time
limit. A detector here answers `check(done)` with `done(online, error)`, once, from the
loop; masq.online.detectors decides when to ask (only while mail waits for the route:
a file every FILE_INTERVAL seconds, a command every `online_check_interval`).

`file:PATH` is online while PATH exists and, if it has content, its first line is the
route's name. A FIFO or device at PATH counts as existing and is never read (it could
block the loop). `pipe:COMMAND` is online when the command exits 0 and one of the words it
prints on stdout is the route's name.

Hostile input: whatever the file or command contains or prints. Output is capped and
decoded leniently. Fails: a command that cannot start, is killed or runs past its time
limit means offline with an error; nothing raises into the loop.
"""

import os
import shlex
import signal
import stat
import subprocess

PIPE_TIME_LIMIT = 30.0
OUTPUT_CAP = 4096
FIRST_LINE_CAP = 1024
FILE_INTERVAL = 2.0


# the verdict rules

def file_says(name, path):
    """Return True if the online file at path says route name is online."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return True
        first = os.read(fd, FIRST_LINE_CAP).split(b"\n", 1)[0].strip()
    except OSError:
        return False
    finally:
        os.close(fd)
    return not first or first.decode("utf-8", "replace") == name


def pipe_says(name, exit_code, output):
    """Return True if a query command's exit code and stdout say route name is online."""
    words = output.decode("utf-8", "replace").split()
    return exit_code == 0 and name in words


def command_argv(command):
    """Return the argv of a detector command (shlex, no shell); ValueError if unusable."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("empty command")
    return argv


# a command in the loop

class Child:
    """One command run for a detector; on_exit(exit_code, output, error) is called once."""

    def __init__(self, loop, argv, on_exit, on_data=None, time_limit=None, cap=OUTPUT_CAP):
        self.loop = loop
        self.argv = argv
        self.on_exit = on_exit
        self.on_data = on_data          # None: collect stdout up to cap
        self.time_limit = time_limit
        self.cap = cap
        self.proc = None
        self.fd = None
        self.output = bytearray()
        self.status = None
        self.timer = None
        self.timed_out = False
        self.finished = False

    def start(self):
        """Start the command; raise OSError if it cannot run."""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     close_fds=True, start_new_session=True, bufsize=0)
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.loop.add_reader(self.fd, self._read)
        self.loop.watch_child(self.proc.pid, self._exited)
        if self.time_limit is not None:
            self.timer = self.loop.call_later(self.time_limit, self._timeout)
        return self

    @property
    def pid(self):
        """Return the child's process id (None before start)."""
        return self.proc.pid if self.proc else None

    def _read(self):
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close()
            self._maybe_finish()
        elif self.on_data is not None:
            self.on_data(data)
        elif len(self.output) < self.cap:
            self.output += data[:self.cap - len(self.output)]

    def _close(self):
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            self.proc.stdout.close()
            self.fd = None

    def _exited(self, status):
        self.status = status
        self.proc.returncode = os.waitstatus_to_exitcode(status)   # reaped by the loop
        if self.timed_out:
            self._close()           # a straggler may hold stdout: do not wait for it
        self._maybe_finish()

    def _timeout(self):
        self.timer = None
        self.timed_out = True
        self.kill()

    def kill(self):
        """Kill the command's process group (its exit is still reported)."""
        if self.proc is not None and self.status is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def cancel(self):
        """Kill the command and never report it."""
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.kill()
        self._close()

    def _maybe_finish(self):
        if self.finished or self.status is None or self.fd is not None:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        code = os.waitstatus_to_exitcode(self.status)
        error = None
        if self.timed_out:
            error = "%s timed out after %gs" % (self.argv[0], self.time_limit)
        elif code < 0:
            error = "%s killed by signal %d" % (self.argv[0], -code)
        self.on_exit(code, bytes(self.output), error)


def start_child(loop, argv, on_exit, **kw):
    """Start a Child; a failure to start is reported through on_exit, from the loop."""
    child = Child(loop, argv, on_exit, **kw)
    try:
        child.start()
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        text = getattr(exc, "strerror", None) or str(exc)
        child.finished = True
        loop.call_soon(lambda: on_exit(None, b"", "cannot run %s: %s" % (argv[0], text)))
    return child


# the detectors

class FileDetector:
    """`file:PATH`: masqmail's online file."""

    polled = True
    interval = FILE_INTERVAL            # cheap to look at: every 2 s while mail waits

    def __init__(self, ctx, route, arg):
        self.name = route.name
        self.path = arg

    def start(self):
        """Nothing to set up: the file is looked at when asked."""

    def stop(self):
        """Nothing to release."""

    def check(self, done):
        """Look at the file now; done(online, None)."""
        done(file_says(self.name, self.path), None)


class PipeDetector:
    """`pipe:COMMAND`: masqmail's online_query, run as a child of the loop."""

    polled = True
    time_limit = PIPE_TIME_LIMIT

    def __init__(self, ctx, route, arg):
        self.loop = ctx.loop
        self.name = route.name
        self.command = arg
        self.child = None

    def start(self):
        """Nothing to set up: the command runs when asked."""

    def stop(self):
        """Kill a command still running."""
        if self.child is not None:
            self.child.cancel()
            self.child = None

    def check(self, done):
        """Run the command; done(online, error) when it has ended."""
        try:
            argv = command_argv(self.command)
        except ValueError as exc:
            done(False, "bad online command %r: %s" % (self.command, exc))
            return

        def exited(code, output, error):
            self.child = None               # a non-zero exit is a plain "no", not an error
            done(error is None and pipe_says(self.name, code, output), error)
        self.child = start_child(self.loop, argv, exited, time_limit=self.time_limit)
