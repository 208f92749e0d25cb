"""Interface detector `ubus:IFACE`: OpenWrt's netifd, asked through the `ubus` program.

Owns one long-running child `ubus listen network.interface` shared by every ubus route
(one JSON object per line: `{ "network.interface": {"action":"ifup","interface":"wan"} }`)
and, for each event naming IFACE or its dynamic sub-interfaces IFACE_4 / IFACE_6, a child
`ubus call network.interface.X status` whose JSON decides: online when `up` is true, an
`l3_device` is named and an `ipv4-address` or `ipv6-address` is listed (and, with the
route option `online_require_route`, a default route 0.0.0.0/0 or ::/0 is in `route`).
The route is online while any of IFACE, IFACE_4, IFACE_6 is. The status of each
sub-interface is asked once at start, after every event for it, and again after the
listener was restarted (events may have been lost meanwhile).

No timers while things work: the loop sleeps until the listener prints. If the listener
dies it is started again after 1, 2, 4 ... up to 60 seconds. If there is no `ubus` on
PATH, that is logged once and the routes stay offline.

Hostile input: whatever `ubus` prints. Lines are capped, anything that is not the JSON
expected is ignored; a status that is not an object, or lacks the fields, means offline.
"""

import os

from masq.base import compat
from masq.online.polled import start_child

STATUS_TIME_LIMIT = 10.0
STATUS_CAP = 1 << 18
LINE_CAP = 1 << 16
BACKOFF_FIRST, BACKOFF_MAX, STEADY = 1.0, 60.0, 60.0


def find_program(name="ubus"):
    """Return the path of program name on PATH, or None."""
    for folder in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        path = os.path.join(folder or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def base_interface(name):
    """Return the logical interface an event name belongs to (wan_4 -> wan)."""
    return name[:-2] if name.endswith(("_4", "_6")) else name


def parse_event(line):
    """Return the interface named by one `ubus listen` line, or None."""
    try:
        event = compat.loads(line)
    except ValueError:
        return None
    body = event.get("network.interface") if isinstance(event, dict) else None
    name = body.get("interface") if isinstance(body, dict) else None
    return name if isinstance(name, str) and name else None


def _has_default_route(routes):
    return isinstance(routes, list) and any(
        isinstance(r, dict) and r.get("target") in ("0.0.0.0", "::") and r.get("mask") == 0
        for r in routes)


def judge(status, need_route=False):
    """Return True if an interface status document says the interface is usable."""
    if not isinstance(status, dict) or status.get("up") is not True:
        return False
    device = status.get("l3_device")
    if not isinstance(device, str) or not device:
        return False
    addresses = [a for key in ("ipv4-address", "ipv6-address")
                 for a in (status.get(key) if isinstance(status.get(key), list) else ())
                 if isinstance(a, dict) and a.get("address")]
    if not addresses:
        return False
    return not need_route or _has_default_route(status.get("route"))


def judge_output(code, output, need_route=False):
    """Return the verdict for the exit code and stdout of `ubus call ... status`."""
    if code != 0:
        return False
    try:
        status = compat.loads(output.decode("utf-8", "replace"))
    except ValueError:
        return False
    return judge(status, need_route)


class UbusEvents:
    """The shared `ubus listen network.interface` child; watchers get event(name) calls."""

    def __init__(self, loop, log):
        self.loop = loop
        self.log = log
        self.program = find_program()
        self.watchers = []
        self.child = None
        self.buffer = b""
        self.backoff = BACKOFF_FIRST
        self.started = None
        self.timer = None
        self.closed = False

    def start(self):
        """Start listening; return self (program None: there is no ubus)."""
        if self.program is None:
            self.log.warning("no ubus program on PATH: ubus: routes stay offline")
            return self
        self.buffer = b""
        self.started = self.loop.now
        self.child = start_child(self.loop, [self.program, "listen", "network.interface"],
                                 self._exited, on_data=self._data)
        return self

    def close(self):
        """Stop the listener for good."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.child is not None:
            self.child.cancel()
            self.child = None
        self.watchers = []

    def _data(self, data):
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        if len(self.buffer) > LINE_CAP:
            self.buffer = b""
        for line in lines:
            name = parse_event(line.decode("utf-8", "replace"))
            if name is not None:
                for watcher in list(self.watchers):
                    watcher.event(name)

    def _exited(self, code, output, error):
        self.child = None
        if self.closed:
            return
        if self.loop.now - self.started > STEADY:
            self.backoff = BACKOFF_FIRST
        self.log.warning("ubus listen ended (%s); starting it again in %gs",
                         error or "exit %s" % code, self.backoff)
        self.timer = self.loop.call_later(self.backoff, self._restart)
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _restart(self):
        self.timer = None
        self.start()
        for watcher in list(self.watchers):
            watcher.resync()


class UbusDetector:
    """`ubus:IFACE`: online while netifd says IFACE (or IFACE_4/IFACE_6) is up and addressed."""

    polled = False

    def __init__(self, ctx, route, arg):
        self.ctx = ctx
        self.name = route.name
        self.interface = arg
        self.need_route = bool(route.online_require_route)
        self.states = {n: False for n in (arg, arg + "_4", arg + "_6")}
        self.children = {}          # sub-interface -> status query in flight
        self.again = set()          # asked again while a query was in flight
        self.listener = None
        self.last = None

    def start(self):
        """Join the shared listener and ask for the current status."""
        self.listener = self.ctx.shared("ubus", lambda: UbusEvents(self.ctx.loop,
                                                                 self.ctx.log).start())
        if self.listener.program is None:
            self.ctx.report(self.name, False, "no ubus program on PATH")
            return
        self.listener.watchers.append(self)
        self.resync()

    def stop(self):
        """Leave the listener; kill queries in flight."""
        if self.listener is not None and self in self.listener.watchers:
            self.listener.watchers.remove(self)
        for child in self.children.values():
            child.cancel()
        self.children.clear()

    def resync(self):
        """Ask for the status of every sub-interface again."""
        for name in self.states:
            self._query(name)

    def event(self, name):
        """The listener saw an event for interface name."""
        if name in self.states:
            self._query(name)

    def _query(self, name):
        if name in self.children:
            self.again.add(name)
            return
        argv = [self.listener.program, "call", "network.interface." + name, "status"]
        self.children[name] = start_child(
            self.ctx.loop, argv, lambda code, out, error: self._answered(name, code, out),
            time_limit=STATUS_TIME_LIMIT, cap=STATUS_CAP)

    def _answered(self, name, code, output):
        self.children.pop(name, None)
        self.states[name] = judge_output(code, output, self.need_route)
        if name in self.again:
            self.again.discard(name)
            self._query(name)
        if not self.children:
            online = any(self.states.values())
            if online != self.last:
                self.last = online
                self.ctx.report(self.name, online)


def probe(interface, need_route=False, timeout=5.0):
    """Return True if `ubus:IFACE` is online now (synchronous, for runs without a daemon)."""
    import subprocess
    program = find_program()
    if program is None:
        return False
    for name in (interface, interface + "_4", interface + "_6"):
        try:
            done = subprocess.run([program, "call", "network.interface." + name, "status"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, timeout=timeout)
        except (OSError, subprocess.SubprocessError):
            return False
        if judge_output(done.returncode, done.stdout[:STATUS_CAP], need_route):
            return True
    return False
