"""The selector loop: one thread drives every socket, timer, signal and child process.

Owns: readiness callbacks per file descriptor, a heap of timers, signals delivered through a
wake-up fd, child processes reaped without blocking, and end-of-turn hooks (group commit
runs there: everything committed during one turn shares one fdatasync).

Does not know about mail, configuration or the queue. Callbacks get no arguments except
where noted; they read `loop.now` (monotonic, for timers) or `loop.time()` (wall clock,
for what is stored) from the loop's Clock (masq.base.clock), so tests drive time with a fake
clock.

Idle means asleep: when no timer is pending, `select` waits with no timeout. A callback that
raises is a bug: the loop reports it through `on_error` (default: re-raise) and goes on.
"""

import heapq
import os
import selectors
import signal
import socket

from masq.base.clock import Clock


MIN_TIMERS = 64             # below this many timers the heap is never rebuilt
UNKNOWN_STATUS = 0xFF00     # reads as exit 255: a child whose status was lost never "succeeded"


class Timer:
    """A pending call; `cancel()` stops it from running."""

    __slots__ = ("when", "callback", "cancelled", "seq")

    def __init__(self, when, callback, seq):
        self.when = when
        self.callback = callback
        self.cancelled = False
        self.seq = seq

    def cancel(self):
        """Stop the timer from firing (harmless if it already fired).

        The callback is let go at once: a cancelled timer waits in the heap until the loop
        drops it, and must not keep what its callback refers to (a closed SMTP session)
        alive until then."""
        self.cancelled = True
        self.callback = None

    def __lt__(self, other):
        return (self.when, self.seq) < (other.when, other.seq)


class Loop:
    """A single-threaded event loop over `selectors`."""

    def __init__(self, clock=None, selector=None):
        self.clock = clock or Clock()
        self.selector = selector or selectors.DefaultSelector()
        self.timers = []
        self.compact_at = MIN_TIMERS      # heap size at which cancelled timers are dropped
        self.seq = 0
        self.soon = []
        self.turn_end = []
        self.signals = {}
        self.children = {}
        self.wake_r = self.wake_w = None
        self.running = False
        self.on_error = None
        self.turns = 0
        self.calls = 0              # callbacks run, ever (run_until: did a turn do anything?)
        self.read_buffer = None     # the one buffer its readers read into (masq.base.reads)

    @property
    def now(self):
        """Return the loop's monotonic time (timers run on it)."""
        return self.clock.monotonic()

    def time(self):
        """Return the wall-clock time of the loop's clock (for times that are stored)."""
        return self.clock.time()

    # file descriptors

    def add_reader(self, fd, callback):
        """Call callback() whenever fd is readable."""
        self._set(fd, selectors.EVENT_READ, callback)

    def add_writer(self, fd, callback):
        """Call callback() whenever fd is writable."""
        self._set(fd, selectors.EVENT_WRITE, callback)

    def remove_reader(self, fd):
        """Stop watching fd for reading."""
        self._unset(fd, selectors.EVENT_READ)

    def remove_writer(self, fd):
        """Stop watching fd for writing."""
        self._unset(fd, selectors.EVENT_WRITE)

    def _set(self, fd, event, callback):
        fd = fd if isinstance(fd, int) else fd.fileno()
        try:
            key = self.selector.get_key(fd)
        except KeyError:
            self.selector.register(fd, event, {event: callback})
            return
        key.data[event] = callback
        self.selector.modify(fd, key.events | event, key.data)

    def _unset(self, fd, event):
        fd = fd if isinstance(fd, int) else fd.fileno()
        try:
            key = self.selector.get_key(fd)
        except KeyError:
            return
        key.data.pop(event, None)
        events = key.events & ~event
        if events:
            self.selector.modify(fd, events, key.data)
        else:
            self.selector.unregister(fd)

    # time

    def call_at(self, when, callback):
        """Call callback() at loop time `when`; return a Timer."""
        self.seq += 1
        timer = Timer(when, callback, self.seq)
        heapq.heappush(self.timers, timer)
        if len(self.timers) > self.compact_at:
            self._drop_cancelled()
        return timer

    def _drop_cancelled(self):
        """Rebuild the heap without cancelled timers (sessions re-arm theirs on every
        command): it stays within twice the live timers, at amortised constant cost."""
        self.timers = [t for t in self.timers if not t.cancelled]
        heapq.heapify(self.timers)
        self.compact_at = max(MIN_TIMERS, 2 * len(self.timers))

    def call_later(self, delay, callback):
        """Call callback() after `delay` seconds; return a Timer."""
        return self.call_at(self.now + delay, callback)

    def call_soon(self, callback):
        """Call callback() in this turn, after the current callbacks."""
        self.soon.append(callback)

    def at_turn_end(self, callback):
        """Call callback() once at the end of every turn, before the loop sleeps."""
        self.turn_end.append(callback)

    def next_deadline(self):
        """Return the time of the next live timer, or None."""
        while self.timers and self.timers[0].cancelled:
            heapq.heappop(self.timers)
        return self.timers[0].when if self.timers else None

    # signals and children

    def add_signal(self, signum, callback):
        """Call callback() in the loop whenever signal signum arrives."""
        if self.wake_r is None:
            self.wake_r, self.wake_w = socket.socketpair()
            self.wake_r.setblocking(False)
            self.wake_w.setblocking(False)
            signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
            self.add_reader(self.wake_r, self._read_signals)
        self.signals[signum] = callback
        signal.signal(signum, _ignore)

    def _read_signals(self):
        try:
            data = self.wake_r.recv(512)
        except (BlockingIOError, InterruptedError):
            return
        for signum in dict.fromkeys(data):
            callback = self.signals.get(signum)
            if callback:
                self._call(callback)

    def watch_child(self, pid, callback):
        """Call callback(status) when child pid exits (status as from os.waitpid)."""
        if signal.SIGCHLD not in self.signals:
            self.add_signal(signal.SIGCHLD, self._reap)
        self.children[pid] = callback
        self.call_soon(self._reap)

    def _reap(self):
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:       # reaped elsewhere: the status is lost
                done, status = pid, UNKNOWN_STATUS
            if done:
                callback = self.children.pop(pid)
                self._call(lambda callback=callback, status=status: callback(status))

    def close(self):
        """Release the wake-up fd and restore default signal handling."""
        for signum in self.signals:
            signal.signal(signum, signal.SIG_DFL)
        self.signals.clear()
        if self.wake_r is not None:
            signal.set_wakeup_fd(-1)
            self.remove_reader(self.wake_r)
            self.wake_r.close()
            self.wake_w.close()
            self.wake_r = self.wake_w = None
        self.selector.close()

    # running

    def run_once(self, block=True, longest=None):
        """Wait for the next event (or not, if block is False; at most `longest` seconds
        if given) and run what is due; return how many callbacks ran (events, timers and
        callbacks soon; not the turn-end hooks, which run every turn)."""
        deadline = self.next_deadline()
        if self.soon or not block:
            timeout = 0
        elif deadline is None:
            timeout = longest
        else:
            timeout = max(0.0, deadline - self.now)
            if longest is not None:
                timeout = min(timeout, longest)
        self.turns += 1
        calls = self.calls
        for key, events in self.selector.select(timeout):
            for event in (selectors.EVENT_READ, selectors.EVENT_WRITE):
                callback = key.data.get(event) if events & event else None
                if callback:
                    self._call(callback)
        self._run_timers()
        self._run_soon()
        ran = self.calls - calls
        self._end_turn()
        return ran

    def run_until(self, predicate, timeout):
        """Run turns until predicate() is true; return True, or False once `timeout`
        seconds have passed on the loop's clock without it.

        A clock that moves only when told (one with `advance(seconds)`, as tests have) is
        moved when a turn finds nothing to do: to the next timer, or to the timeout. Time
        then passes only where the loop would have slept."""
        end = self.now + timeout
        advance = getattr(self.clock, "advance", None)
        while not predicate():
            left = end - self.now
            if left <= 0:
                return False
            if advance is None:
                self.run_once(longest=left)
            elif not self.run_once(block=False):
                deadline = self.next_deadline()
                advance(max(0.0, min(end if deadline is None else deadline, end) - self.now))
        return True

    def _end_turn(self):
        """Run the turn-end hooks last: work they start (callbacks soon) gets them again,
        so nothing a hook should see (a group commit) is left waiting while the loop sleeps."""
        while True:
            for callback in list(self.turn_end):
                self._call(callback)
            if not self.soon:
                return
            self._run_soon()

    def _run_timers(self):
        now = self.now
        while self.timers and (self.timers[0].cancelled or self.timers[0].when <= now):
            timer = heapq.heappop(self.timers)
            if not timer.cancelled:
                timer.cancelled = True
                self._call(timer.callback)

    def _run_soon(self):
        while self.soon:
            batch, self.soon = self.soon, []
            for callback in batch:
                self._call(callback)

    def run(self):
        """Run turns until stop() is called."""
        self.running = True
        while self.running:
            self.run_once()

    def stop(self):
        """Make run() return after the current turn."""
        self.running = False

    def _call(self, callback):
        self.calls += 1
        try:
            callback()
        except Exception as exc:
            if self.on_error is None:
                raise
            self.on_error(exc)


def _ignore(signum, frame):
    """Do nothing in Python: the wake-up fd carries the signal into the loop."""
