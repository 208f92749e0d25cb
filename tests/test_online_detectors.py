"""The Detectors component and the polled detectors (file:, pipe:), in a real Loop.

A small host stands in for the daemon (loop, log, configuration, OnlineState, a scheduler
that only answers waiting_routes()); the other detector tests import it. Polling happens
only while mail waits, no timer is set otherwise; the verdict rules are the one-shot
probes' rules. End to end: a daemon holds mail for an offline file:/pipe: route and
delivers it to an aiosmtpd sink when the file appears or the command starts saying yes.
"""

import os
import select
import threading
import time

import pytest

from helpers import Daemon, free_port, masq, write_config
from masq.base.host import FlushAsked, MessagesQueued, RouteChanged
from masq.config import schema as config
from masq.online import polled, probe
from masq.online.detectors import KINDS, Detectors, detector_class
from fakes import FakeClock, FakeHost, Frozen
from sinks import Sink


class Log:
    """Records log lines as (level, text)."""

    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        if level not in ("error", "warning", "info", "debug"):
            raise AttributeError(level)
        return lambda text, *args: self.lines.append((level, text % args if args else text))

    def texts(self, level):
        return [text for lvl, text in self.lines if lvl == level]


class Scheduler:
    """Answers waiting_routes() from a set the test controls."""

    def __init__(self):
        self.waiting = set()
        self.asked = 0

    def waiting_routes(self):
        self.asked += 1
        return set(self.waiting)


class Host(FakeHost):
    """What the Detectors component needs from the daemon."""

    def __init__(self, routes, interval="300", clock=None):
        text = "config masq 'main'\n\toption online_check_interval '%s'\n\n" % interval
        for name, spec, *extra in routes:
            text += "config route '%s'\n\toption online \"%s\"\n" % (name, spec)
            text += "".join("\toption %s '%s'\n" % pair for pair in extra)
        super().__init__(config.loads(text), Log(), clock, scheduler=Scheduler())
        self.changes = []
        self.subscribe(RouteChanged,
                       lambda e: self.changes.append((e.route.name, e.route.online)))
        self.detectors = Detectors(self)

    def start(self):
        self.detectors.start()
        return self

    def is_online(self, name):
        return self.online.get(name).online

    def run_until(self, predicate, timeout=10.0):
        """Run the loop until predicate() is true (False if timeout seconds pass first)."""
        return self.loop.run_until(predicate, timeout)

    def spin(self, seconds):
        self.run_until(lambda: False, seconds)

    def close(self):
        self.detectors.stop()
        self.loop.close()


@pytest.fixture
def hosts():
    made = []

    def make(routes, **kw):
        made.append(Host(routes, **kw))
        return made[-1]
    yield make
    for host in made:
        host.close()


# the registry

def test_every_configurable_kind_has_a_detector_class():
    kinds = [p.rstrip(":") for p in ("always", "file:", "pipe:", "iface:", "ubus:", "modem:")]
    assert sorted(kinds) == sorted(KINDS)
    for kind in kinds:
        cls = detector_class(kind)
        assert callable(cls) and hasattr(cls, "polled") and hasattr(cls, "start")
    assert detector_class("carrier-pigeon") is None


def test_registry_imports_nothing_heavy_until_a_kind_is_used():
    import subprocess
    import sys
    code = ("import sys, masq.online.detectors; print(sorted(m for m in ('serial', "
            "'masq.online.netlink', 'masq.online.modem', 'masq.online.ubus') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]", out.stderr


def test_always_is_online_at_start(hosts):
    host = hosts([("lan", "always")]).start()
    assert host.is_online("lan") and host.loop.next_deadline() is None


# file:

@pytest.mark.parametrize("content, online", [
    (None, False), (b"", True), (b"isp\n", True), (b"  isp  \r\nother\n", True),
    (b"other\n", False), (b"ispx\n", False), (b"\xff\xfe\n", False)])
def test_file_rule_matches_masqmail_and_the_probe(tmp_path, content, online):
    path = tmp_path / "online"
    if content is not None:
        path.write_bytes(content)
    assert polled.file_says("isp", str(path)) is online
    assert probe.probe("isp", "file:%s" % path) is online


def test_a_fifo_counts_as_present_and_is_never_read(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    said = []                       # opened for reading, a fifo blocks until a writer comes
    asker = threading.Thread(target=lambda: said.append(polled.file_says("isp", str(fifo))),
                             daemon=True)
    asker.start()
    asker.join(30)
    assert said == [True]


def test_file_route_polls_only_while_mail_waits(tmp_path, hosts):
    path = tmp_path / "online"
    host = hosts([("isp", "file:%s" % path)], interval="0.1").start()
    assert not host.is_online("isp")
    assert host.loop.next_deadline() is None            # nothing waits: no timer at all
    path.write_text("isp\n")
    host.spin(0.3)
    assert not host.is_online("isp")                    # nobody asked
    host.scheduler.waiting.add("isp")
    host.publish(MessagesQueued(("x",)))
    assert host.run_until(lambda: host.is_online("isp"), 60.0)
    assert host.loop.next_deadline() is not None        # mail waits: the next poll is due
    path.unlink()
    assert host.run_until(lambda: not host.is_online("isp"), 60.0)
    host.scheduler.waiting.clear()
    host.spin(0.25)                                     # one last poll sees nothing waiting
    assert host.loop.next_deadline() is None


def advance_to(clock, host, when):
    """Move the fake clock to `when` and run what has come due (never sleeps)."""
    clock.advance(when - clock.monotonic())
    host.loop.run_once(block=False)


def test_file_detector_looks_every_2s_while_mail_waits_and_never_when_idle(tmp_path, hosts):
    path = tmp_path / "online"
    clock = FakeClock(wall=1000.0, mono=1000.0)
    host = hosts([("isp", "file:%s" % path)], clock=clock).start()   # online_check 5 min
    detector = host.detectors.detectors[0]
    looked = []
    check = detector.check
    detector.check = lambda done: (looked.append(clock.monotonic()), check(done))
    host.scheduler.waiting.add("isp")
    host.publish(MessagesQueued(("x",)))
    advance_to(clock, host, 1000.0)
    assert looked == [1000.0] and host.loop.next_deadline() == 1002.0
    path.write_text("")                                 # the ip-up script ran
    advance_to(clock, host, 1001.9)
    assert not host.is_online("isp")
    advance_to(clock, host, 1002.0)
    assert host.is_online("isp") and looked == [1000.0, 1002.0]
    host.scheduler.waiting.clear()                      # delivered: nothing waits
    advance_to(clock, host, 1004.0)
    assert looked == [1000.0, 1002.0] and host.loop.next_deadline() is None
    for when in (1010.0, 1400.0, 5000.0):
        advance_to(clock, host, when)
    assert looked == [1000.0, 1002.0]                   # idle: no wake-ups at all


def test_pipe_detector_keeps_online_check_interval(tmp_path, hosts):
    clock = FakeClock(wall=1000.0, mono=1000.0)
    host = hosts([("dial", "pipe:/bin/false"), ("isp", "file:%s" % (tmp_path / "f"))],
                 interval="60", clock=clock).start()
    host.scheduler.waiting.add("dial")
    host.publish(MessagesQueued(("x",)))
    advance_to(clock, host, 1000.0)
    assert host.detectors.wake == 1060.0                # the command: every minute
    host.scheduler.waiting.add("isp")
    host.publish(MessagesQueued(("y",)))
    advance_to(clock, host, 1000.0)
    assert host.detectors.wake == 1002.0                # the file: every 2 s
    assert polled.PipeDetector.time_limit and not hasattr(polled.PipeDetector, "interval")


def test_flush_of_a_route_checks_it_even_without_waiting_mail(tmp_path, hosts):
    path = tmp_path / "online"
    host = hosts([("isp", "file:%s" % path)]).start()
    path.write_text("")
    host.publish(FlushAsked("isp"))
    assert host.run_until(lambda: host.is_online("isp"), 60.0)
    assert host.loop.next_deadline() is None


def test_many_events_in_one_turn_make_one_round(tmp_path, hosts):
    host = hosts([("isp", "file:%s" % (tmp_path / "x"))]).start()
    asked = host.scheduler.asked
    for _ in range(20):
        host.publish(MessagesQueued(()))
    host.spin(0.05)
    assert host.scheduler.asked == asked + 1


def test_override_holds_until_the_detector_changes_its_mind(tmp_path, hosts):
    path = tmp_path / "online"
    host = hosts([("isp", "file:%s" % path)], interval="0.05").start()
    host.scheduler.waiting.add("isp")
    host.online.set_override("isp", "up", time.time())
    host.publish(MessagesQueued(()))
    host.spin(0.2)
    assert host.is_online("isp")                        # offline again and again: no change
    path.write_text("isp")
    host.spin(0.2)
    path.unlink()
    assert host.run_until(lambda: not host.is_online("isp"), 60.0)


# pipe:

def script(tmp_path, body, name="query"):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("body, online", [
    ("echo isp\n", True), ("echo 'other isp'\n", True), ("echo other\n", False),
    ("echo isp; exit 1\n", False), ("exit 0\n", False), ("echo ispx\n", False)])
def test_pipe_rule_matches_masqmail_and_the_probe(tmp_path, hosts, body, online):
    command = script(tmp_path, body)
    host = hosts([("isp", "pipe:%s" % command)]).start()
    assert host.run_until(lambda: not host.detectors.busy, 60.0)
    assert host.is_online("isp") is online
    assert probe.probe("isp", "pipe:%s" % command) is online


def test_pipe_command_is_split_with_shlex_never_a_shell(tmp_path, hosts):
    marker = tmp_path / "pwned"
    host = hosts([("isp", "pipe:echo 'isp;' touch %s" % marker)]).start()
    host.run_until(lambda: not host.detectors.busy, 60.0)
    assert not marker.exists() and not host.is_online("isp")


def test_pipe_that_hangs_is_killed_at_the_time_limit(tmp_path, hosts, monkeypatch):
    monkeypatch.setattr(polled.PipeDetector, "time_limit", 0.3)
    command = script(tmp_path, "echo isp\nsleep 30\n")
    host = hosts([("isp", "pipe:%s" % command)]).start()
    assert host.run_until(lambda: not host.detectors.busy, 30.0)    # not the 30 s sleep
    assert not host.is_online("isp")
    assert any("timed out" in t for t in host.log.texts("warning"))


def test_pipe_whose_background_child_holds_stdout_ends_at_the_time_limit(tmp_path, hosts):
    """The command said yes and exited, but a child it left behind keeps stdout open: at
    the time limit that child is killed and the answer counts (the detector was stuck
    busy for good, never asked again). The clock moves only when the test moves it."""
    clock = Frozen()
    pidfile = tmp_path / "pid"
    command = script(tmp_path, "echo isp\nsleep 1000 &\necho $! > %s\n" % pidfile)
    host = hosts([("isp", "pipe:%s" % command)], clock=clock).start()
    child = host.detectors.detectors[0].child
    assert host.run_until(lambda: child.status is not None and pidfile.exists()
                          and pidfile.read_text().endswith("\n"), 60)
    background = os.pidfd_open(int(pidfile.read_text()))
    for _ in range(3):
        host.loop.run_once(block=False)
    assert host.detectors.busy                          # stdout still open
    FakeClock.advance(clock, polled.PIPE_TIME_LIMIT)
    assert host.run_until(lambda: not host.detectors.busy, 60)
    assert host.is_online("isp")
    assert select.select([background], [], [], 60)[0]   # the straggler was killed
    os.close(background)


def test_pipe_that_cannot_run_reports_an_error(tmp_path, hosts):
    host = hosts([("isp", "pipe:%s" % (tmp_path / "missing"))]).start()
    host.run_until(lambda: not host.detectors.busy, 60.0)
    assert not host.is_online("isp")
    assert "cannot run" in host.online.get("isp").last_error


def test_stop_kills_a_running_query(tmp_path, hosts):
    pidfile = tmp_path / "pid"
    command = script(tmp_path, "echo $$ > %s\nexec sleep 30\n" % pidfile)
    host = hosts([("isp", "pipe:%s" % command)]).start()
    assert host.run_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 60.0)
    pid = int(pidfile.read_text())
    host.detectors.stop()
    host.spin(0.1)
    assert not os.path.exists("/proc/%d" % pid) or \
        open("/proc/%d/stat" % pid).read().split()[2] == "Z"


def test_reload_rebuilds_detectors_and_keeps_the_state(tmp_path, hosts):
    path = tmp_path / "online"
    path.write_text("isp")
    host = hosts([("isp", "file:%s" % path)]).start()
    assert host.is_online("isp")
    host.detectors.reload(host.cfg)
    host.spin(0.05)
    assert host.is_online("isp") and host.changes == [("isp", True)]


# end to end: a daemon, mail held, the route comes online, the sink gets it

def route(name, spec, port):
    return ("config route '%s'\n\toption online '%s'\n\toption smarthost '127.0.0.1:%d'\n"
            "\toption tls 'none'\n" % (name, spec, port))


def held_then_delivered(tmp_path, spec, make_online):
    port = free_port()
    spool = str(tmp_path / "spool")
    conf = write_config(str(tmp_path / "masq.conf"), spool,
                        extra="\toption online_check_interval '0.2'\n",
                        routes=route("isp", spec, port))
    daemon = Daemon(conf).start()
    try:
        with Sink(port) as sink:
            done = masq("-C", conf, "-odq", "far@example.org", input=b"Subject: t\n\nheld\n")
            assert done.returncode == 0, done.stderr
            time.sleep(0.5)
            assert sink.messages == []
            make_online()
            # how fast is measured by tools/bench_online.py (a few ms); here only that it
            # leaves by itself, well before any polling interval of minutes would let it
            [(_, rcpts, text)] = sink.wait(1, timeout=30)
            assert rcpts == ["far@example.org"] and b"held" in text
    finally:
        log = daemon.stop()
    assert "detector" in log
    return log


def test_daemon_delivers_when_the_online_file_appears(tmp_path):
    path = tmp_path / "online"
    log = held_then_delivered(tmp_path, "file:%s" % path, lambda: path.write_text("isp\n"))
    assert "isp" in log


def test_daemon_delivers_when_the_query_starts_saying_the_name(tmp_path):
    flag = tmp_path / "up"
    command = script(tmp_path, "[ -e %s ] && echo isp\n" % flag)
    log = held_then_delivered(tmp_path, "pipe:%s" % command, lambda: flag.write_text(""))
    assert "isp" in log
