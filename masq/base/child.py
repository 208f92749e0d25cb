"""One child process in the loop: spawned or forked, fed, read, watched, timed out, killed.

Owns the one way masq runs a program (a delivery command, a detector's query, `ubus
listen`, an SMTP `wrapper`) or a Python function in a forked process without blocking:
- stdin: /dev/null, a file descriptor of ours (one end of a socketpair), or an iterator
  of bytes written through a non-blocking pipe as the child reads it; a child that stops
  reading (EPIPE) just gets no more, and its exit decides;
- stdout: read through a non-blocking pipe and kept up to a cap (the rest is drained and
  dropped, so a flood costs neither memory nor a blocked child), or handed over as it
  comes (`on_data`), or a file descriptor of ours;
- stderr: /dev/null, into stdout, or ours;
- a program runs in its own session and process group (a forked function shares ours);
- exit watched through the loop's SIGCHLD handling (never a blocking wait);
- the time limit and kill() send SIGKILL to the whole process group, grandchildren
  included (to the forked process alone when it shares our group).

Reports once, from the loop: on_exit(child), when the child has exited and its stdout
pipe is closed (after a kill, its exit is enough: a grandchild that escaped may hold the
pipe). Then `status` is the wait status (None if it never started, and `error` says why),
`output` what it printed (up to the cap), `timed_out` whether the time limit ended it,
`feed_error` the exception that cut its stdin short (it was killed: it never sees a
short text end as if whole). cancel() kills it and reports nothing.

Does not say what an exit means (its callers do) and never uses a shell. Hostile input:
whatever the child prints, bounded by the cap.
"""

import os
import signal

from masq.base import reads

OUTPUT_CAP = 4096
READ_SIZE = 65536
NULL = "null"           # stdin or stderr from or to /dev/null
STDOUT = "stdout"       # stderr into the stdout pipe


class Child:
    """One child process; start it with spawn(argv, ...) or fork(work)."""

    def __init__(self, loop, on_exit, time_limit=None, cap=OUTPUT_CAP, on_data=None):
        self.loop = loop
        self.on_exit = on_exit
        self.time_limit = time_limit
        self.cap = cap
        self.on_data = on_data          # None: keep stdout up to cap
        self.proc = None                # the Popen of a program (None when forked)
        self.pid = None
        self.group = False              # True: the child leads its own process group
        self.status = None
        self.error = None
        self.output = bytearray()
        self.timed_out = False
        self.killed = False
        self.feed_error = None
        self.finished = False
        self.stdin = self.stdout = None     # our ends of its pipes (fds)
        self.chunks = None
        self.pending = b""
        self.timer = None

    # starting

    def spawn(self, argv, stdin=NULL, stdout=None, stderr=NULL, env=None, cwd=None,
              session=True, **switch):
        """Start argv (execvp; switch: Popen's user, group, extra_groups); return True, or
        False when it cannot start (`error` says why; on_exit is still called, soon).

        stdin is NULL, an fd or an iterable of bytes; stdout None (our pipe) or an fd;
        stderr NULL, STDOUT or None (ours)."""
        import subprocess
        feed = stdin != NULL and not isinstance(stdin, int)
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if feed else _popen_fd(stdin, subprocess),
                stdout=subprocess.PIPE if stdout is None else stdout,
                stderr=_popen_fd(stderr, subprocess), env=env, cwd=cwd, close_fds=True,
                start_new_session=session, bufsize=0, **switch)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return self._failed(getattr(exc, "strerror", None) or str(exc))
        self.pid, self.group = self.proc.pid, session
        if feed:
            self.chunks = iter(stdin)
            self.stdin = self.proc.stdin.fileno()
            os.set_blocking(self.stdin, False)
            self.loop.add_writer(self.stdin, self._write)
        self._watch(self.proc.stdout.fileno() if stdout is None else None)
        return True

    def fork(self, work):
        """Fork a child that calls work(write_fd) and must end with os._exit; what it
        writes to write_fd is read as its stdout. Return True, or False (as spawn)."""
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            return self._failed("cannot fork: %s" % exc.strerror)
        if pid == 0:                    # the child: never returns
            try:
                os.close(read_fd)
                work(write_fd)
            finally:
                os._exit(1)
        os.close(write_fd)
        self.pid = pid
        self._watch(read_fd)
        return True

    def _failed(self, text):
        self.error = text
        self.loop.call_soon(self._finish)
        return False

    def _watch(self, stdout_fd):
        if stdout_fd is not None:
            self.stdout = stdout_fd
            os.set_blocking(stdout_fd, False)
            self.loop.add_reader(stdout_fd, self._read)
        self.loop.watch_child(self.pid, self._exited)
        if self.time_limit is not None:
            self.timer = self.loop.call_later(self.time_limit, self._timeout)

    # stdin

    def _write(self):
        if not self.pending:
            try:
                self.pending = next(self.chunks, None)
            except Exception as exc:        # the text failed part-way: never a short text
                self._feed_failed(exc)
                return
            if self.pending is None:
                self._close_stdin()
                return
        try:
            self.pending = self.pending[os.write(self.stdin, self.pending):]
        except (BlockingIOError, InterruptedError):
            return
        except BrokenPipeError:
            self._close_stdin()             # the child stopped reading: its business
        except OSError as exc:
            self._feed_failed(exc)

    def _feed_failed(self, exc):
        """Kill the child before its stdin ends, so it never takes a cut text for whole."""
        self.feed_error = exc
        self.kill()
        self._close_stdin()

    def _close_stdin(self):
        if self.stdin is not None:
            self.loop.remove_writer(self.stdin)
            self.proc.stdin.close()
            self.stdin = None
        self.pending = b""
        close = getattr(self.chunks, "close", None)
        self.chunks = None
        if close:
            close()

    # stdout

    def _read(self):
        try:
            data = reads.for_loop(self.loop).read(self.stdout, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_stdout()
            self._finish_if_done()
        elif self.on_data is not None:
            self.on_data(data)
        elif len(self.output) < self.cap:
            self.output += data[:self.cap - len(self.output)]

    def _close_stdout(self):
        if self.stdout is not None:
            self.loop.remove_reader(self.stdout)
            if self.proc is not None:
                self.proc.stdout.close()
            else:
                os.close(self.stdout)
            self.stdout = None

    # the end

    def _exited(self, status):
        self.status = status
        if self.proc is not None:
            self.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: not Popen's
        if self.killed:
            self._close_stdout()        # a straggler that escaped may hold stdout
        self._finish_if_done()

    def _timeout(self):
        self.timer = None
        if self.status is None:
            self.timed_out = True
        self.kill()
        if self.status is not None:     # the leader is gone; a straggler holds stdout
            self._close_stdout()
            self._finish_if_done()

    def kill(self, signum=signal.SIGKILL):
        """Send signum (SIGKILL) to the child's process group; its exit is still reported."""
        if self.pid is None or self.finished or (not self.group and self.status is not None):
            return
        self.killed = self.killed or signum == signal.SIGKILL
        try:
            if self.group:
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def cancel(self):
        """Kill the child and never report it."""
        self.kill()
        self.finished = True
        self._release()

    def _release(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._close_stdin()
        self._close_stdout()

    def _finish_if_done(self):
        if self.status is not None and self.stdout is None:
            self._finish()

    def _finish(self):
        if self.finished:
            return
        self.finished = True
        self._release()
        self.on_exit(self)


def _popen_fd(what, subprocess):
    if what == NULL:
        return subprocess.DEVNULL
    if what == STDOUT:
        return subprocess.STDOUT
    return what
