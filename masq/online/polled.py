"""Polled online detectors: `file:PATH` and `pipe:COMMAND` (masqmail's online file and query).

Owns the verdict rules (shared with the one-shot probes in masq.online.probe) and
`start_child`, a command run in the loop for a detector (a masq.base.child.Child): argv
from shlex, never a shell; stdin and stderr on /dev/null; stdout either collected (up to a
cap) or handed over as it comes (the ubus listener); its own process group, SIGKILLed at
the time limit. A detector here answers `check(done)` with `done(online, error)`, once, from the
loop; masq.online.detectors decides when to ask (only while mail waits for the route:
a file every FILE_INTERVAL seconds, a command every `online_check_interval`).

`file:PATH` is online while PATH exists and, if it has content, its first line is the
route's name. A FIFO or device at PATH counts as existing and is never read (it could
block the loop). `pipe:COMMAND` is online when the command exits 0 and one of the words it
prints on stdout is the route's name. "The route's name" is its `online_name` when set
(masqmail's connection name, shared by the routes of one `query_routes.NAME`).

Hostile input: whatever the file or command contains or prints. Output is capped and
decoded leniently. Fails: a command that cannot start, is killed or runs past its time
limit means offline with an error; nothing raises into the loop.
"""

import os
import shlex
import stat

from masq.base.child import Child

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

def start_child(loop, argv, on_exit, on_data=None, time_limit=None, cap=OUTPUT_CAP):
    """Start argv for a detector (stdin and stderr on /dev/null): on_exit(exit_code,
    output, error) is called once, from the loop; return the Child (cancel() ends it)."""
    child = Child(loop, lambda child: on_exit(*_verdict(argv[0], child)), time_limit, cap,
                  on_data)
    child.spawn(argv)
    return child


def _verdict(name, child):
    """Return (exit_code, output, error) of a detector's command that has ended."""
    if child.error is not None:
        return None, b"", "cannot run %s: %s" % (name, child.error)
    code = os.waitstatus_to_exitcode(child.status)
    error = None
    if child.timed_out:
        error = "%s timed out after %gs" % (name, child.time_limit)
    elif code < 0:
        error = "%s killed by signal %d" % (name, -code)
    return code, bytes(child.output), error


# the detectors

class FileDetector:
    """`file:PATH`: masqmail's online file."""

    polled = True
    interval = FILE_INTERVAL            # cheap to look at: every 2 s while mail waits

    def __init__(self, ctx, route, arg):
        self.name = route.name
        self.looks_for = route.online_name or route.name
        self.path = arg

    def start(self):
        """Nothing to set up: the file is looked at when asked."""

    def stop(self):
        """Nothing to release."""

    def check(self, done):
        """Look at the file now; done(online, None)."""
        done(file_says(self.looks_for, self.path), None)


class PipeDetector:
    """`pipe:COMMAND`: masqmail's online_query, run as a child of the loop."""

    polled = True
    time_limit = PIPE_TIME_LIMIT

    def __init__(self, ctx, route, arg):
        self.loop = ctx.loop
        self.name = route.name
        self.looks_for = route.online_name or route.name
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
            done(error is None and pipe_says(self.looks_for, code, output), error)
        self.child = start_child(self.loop, argv, exited, time_limit=self.time_limit)
