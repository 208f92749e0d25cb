"""The daemon's online detectors: one per route, each telling OnlineState "online" or not.

Owns the registry (detector kind -> class, imported only when a route uses it, so pyserial
and netlink stay unloaded where unused) and the `Detectors` component: it builds one
detector per route from the route's `online` option, shares what several detectors of a
kind can share (one rtnetlink socket, one `ubus listen` child), and feeds every verdict to
`daemon.online.detected(route, online, now, error)`. The scheduler, listening to
OnlineState, flushes a route when it comes online.

When to look: event-driven detectors (`always`, `iface:`, `ubus:`) report whenever the
system tells them something changed and set no timers. Polled detectors (`file:`,
`pipe:`, `modem:`) are asked once at start, on every MessagesQueued and FlushAsked event
(masq.base.host), and then
every `online_check_interval` seconds, but only while some undelivered mail could use
their route (`daemon.scheduler.waiting_routes()`); with no mail waiting no timer is set,
so an idle daemon sleeps. An interval of 0 means: only at start and on events (for a
detector without its own interval). A detector whose check is cheap says so with its own
`interval` (`file:`: 2 s, a stat and a read): it is asked that often while mail waits (or
at `online_check_interval` if shorter), so a dial-on-demand link that is up for a minute
is noticed within seconds.

The detector interface: `cls(ctx, route, arg)` with ctx this component (`loop`, `log`,
`cfg`, `report(name, online, error)`, `shared(key, make)`), then `start()`, `stop()`,
attribute `polled`, and for polled ones `check(done)` calling `done(online, error)` once.

Does not decide what mail goes where (the scheduler) nor keep overrides (OnlineState).
Fails: a detector that cannot work (no netlink, no ubus, no pyserial, no port) reports
offline with an error, logged when it first appears; the daemon goes on.
"""

import sys

from masq.base.host import Component, FlushAsked, MessagesQueued

KINDS = {
    "always": ("masq.online.detectors", "Always"),
    "file": ("masq.online.polled", "FileDetector"),
    "pipe": ("masq.online.polled", "PipeDetector"),
    "iface": ("masq.online.netlink", "IfaceDetector"),
    "ubus": ("masq.online.ubus", "UbusDetector"),
    "modem": ("masq.online.modem", "ModemDetector"),
}


def detector_class(kind):
    """Return the detector class for a kind ('iface', ...), or None for an unknown kind."""
    where = KINDS.get(kind)
    if where is None:
        return None
    __import__(where[0])
    return getattr(sys.modules[where[0]], where[1])


class Always:
    """`always`: online from the start."""

    polled = False

    def __init__(self, ctx, route, arg):
        self.ctx = ctx
        self.name = route.name

    def start(self):
        """Say online."""
        self.ctx.report(self.name, True)

    def stop(self):
        """Nothing to release."""


class Detectors(Component):
    """The daemon component that runs every route's detector."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.loop = daemon.loop
        self.log = daemon.log
        self.cfg = daemon.cfg
        self.detectors = []
        self.shares = {}            # key -> a shared resource with close()
        self.verdicts = {}          # route name -> last verdict reported
        self.errors = {}            # route name -> last error logged
        self.busy = set()           # polled detectors with a check in flight
        self.forced = set()         # routes to check at the next round, waiting or not
        self.due = {}               # polled detector -> loop time of its next timed check
        self.timer = None
        self.wake = None            # loop time the timer fires
        self.round_due = False

    # component interface

    def start(self):
        """Build and start a detector per route; ask the polled ones once."""
        self.cfg = self.daemon.cfg
        self.daemon.subscribe(MessagesQueued, self.queued)
        self.daemon.subscribe(FlushAsked, self.flush_asked)
        for route in self.cfg.routes:
            detector = self._build(route)
            if detector is not None:
                self.detectors.append(detector)
        for detector in list(self.detectors):
            detector.start()
        self._round(everyone=True)

    def stop(self):
        """Stop every detector and release what they shared."""
        self.daemon.unsubscribe(MessagesQueued, self.queued)
        self.daemon.unsubscribe(FlushAsked, self.flush_asked)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = self.wake = None
        self.due.clear()
        for detector in self.detectors:
            detector.stop()
        for share in self.shares.values():
            share.close()
        self.detectors, self.shares = [], {}
        self.busy.clear()
        self.forced.clear()

    def reload(self, cfg):
        """Rebuild the detectors for the new configuration's routes."""
        self.stop()
        self.verdicts.clear()
        self.start()

    def _build(self, route):
        kind, _, arg = route.online.partition(":")
        cls = detector_class(kind)
        if cls is None:
            self.report(route.name, False, "unknown online detector %r" % route.online)
            return None
        return cls(self, route, arg)

    # what detectors use

    def report(self, name, online, error=None):
        """Record a detector's verdict for route name (and log a change or a new error)."""
        online = bool(online)
        if self.verdicts.get(name) != online:
            self.log.info("route %s: detector %s says %s", name, self._spec(name),
                          "online" if online else "offline")
        self.verdicts[name] = online
        if error is not None and error != self.errors.get(name):
            self.log.warning("route %s: %s", name, error)
        self.errors[name] = error
        state = self.daemon.online
        if name in state.by_name:
            state.detected(name, online, self.daemon.loop.time(), error)

    def shared(self, key, make):
        """Return the shared resource called key, made by make() the first time."""
        if key not in self.shares:
            self.shares[key] = make()
        return self.shares[key]

    def _spec(self, name):
        route = self.cfg.route(name)
        return route.online if route is not None else "?"

    # polling

    def queued(self, event):
        """New mail asks the polled detectors again."""
        self._soon()

    def flush_asked(self, event):
        """A flush asks the polled detectors again (the one of its route, waiting or not)."""
        if event.route:
            self.forced.add(event.route)
        self._soon()

    def _soon(self):
        if not self.round_due:
            self.round_due = True
            self.loop.call_soon(self._due_round)

    def _due_round(self):
        self.round_due = False
        self._round()

    def _timer_fired(self):
        self.timer = self.wake = None
        self._round(timed=True)

    def _round(self, everyone=False, timed=False):
        polled = [d for d in self.detectors if d.polled]
        if not polled:
            return
        waiting = self._waiting()
        now = self.loop.now
        for detector in polled:
            due = detector.name in waiting and (not timed or self.due.get(detector, now) <= now)
            if everyone or due or detector.name in self.forced:
                self._check(detector)
                self.due[detector] = now + self._interval(detector)
        self.forced.clear()
        self._arm([d for d in polled if d.name in waiting])

    def _interval(self, detector):
        """Return how often detector is asked while mail waits (0: only on events)."""
        interval = self.cfg.main.online_check_interval
        own = getattr(detector, "interval", None)
        if own is None or (interval > 0 and interval < own):
            return interval
        return own

    def _arm(self, waiting):
        """Set the timer for the earliest timed check among the detectors mail waits for."""
        times = [self.due[d] for d in waiting if self._interval(d) > 0 and d in self.due]
        when = min(times) if times else None
        if when == self.wake:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.wake = when
        if when is not None:
            self.timer = self.loop.call_at(when, self._timer_fired)

    def _waiting(self):
        scheduler = self.daemon.scheduler
        return set(scheduler.waiting_routes()) if scheduler is not None else set()

    def _check(self, detector):
        if detector in self.busy:
            return
        self.busy.add(detector)

        def done(online, error):
            self.busy.discard(detector)
            if detector in self.detectors:
                self.report(detector.name, online, error)
        detector.check(done)
