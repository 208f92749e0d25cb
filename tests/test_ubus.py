"""The ubus: detector: netifd's status JSON and events, through tools/fake-ubus.

tools/fake-ubus prints what OpenWrt's `ubus listen network.interface` and `ubus call
network.interface.X status` print, driven by files the test writes. The detector must
follow ifup/ifdown within a second, treat wan_4/wan_6 as wan, restart a listener that
died, stay offline (and say so once) without ubus, and never set a timer while it works.
End to end: a daemon delivers held mail to an aiosmtpd sink when the fake emits ifup.
"""

import json
import os

import pytest

from helpers import ROOT
from masq.online import probe, ubus
from test_online_detectors import Host, held_then_delivered

OPENWRT_LINE = '{ "network.interface": {"action":"ifup","interface":"wan"} }'


def status_doc(up=True, address="10.64.3.17", device="3g-wan", default_route=True, v6=None):
    """Return a status document shaped like netifd's (ubus.c field names)."""
    doc = {"up": up, "pending": False, "available": True, "autostart": True,
           "dynamic": False, "proto": "3g", "data": {}}
    if up:
        doc.update({"uptime": 312, "l3_device": device, "metric": 0, "dns-server": [],
                    "ipv4-address": [{"address": address, "mask": 32}] if address else [],
                    "ipv6-address": [{"address": v6, "mask": 64}] if v6 else [],
                    "route": [{"target": "0.0.0.0", "mask": 0, "nexthop": "10.64.64.64",
                               "source": "%s/32" % address}] if default_route else []})
    return doc


class FakeUbus:
    """The folder tools/fake-ubus reads, and what a test does with it."""

    def __init__(self, folder):
        self.folder = folder

    def status(self, name, **kw):
        with open(os.path.join(self.folder, name + ".json"), "w") as f:
            json.dump(status_doc(**kw), f)

    def event(self, action, name, status=None):
        if status is not None:
            self.status(name, **status)
        with open(os.path.join(self.folder, "events"), "a") as f:
            f.write("%s %s\n" % (action, name))

    def raw_event(self, line):
        with open(os.path.join(self.folder, "events"), "a") as f:
            f.write(line + "\n")

    def read(self, name, default=""):
        try:
            with open(os.path.join(self.folder, name)) as f:
                return f.read()
        except FileNotFoundError:
            return default

    def calls(self, word=""):
        return [c for c in self.read("calls").splitlines() if word in c]

    def starts(self):
        return int(self.read("listen.starts", "0").strip() or 0)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    bin_dir, data = tmp_path / "bin", tmp_path / "ubus"
    bin_dir.mkdir()
    data.mkdir()
    os.symlink(os.path.join(ROOT, "tools", "fake-ubus"), bin_dir / "ubus")
    monkeypatch.setenv("PATH", "%s:%s" % (bin_dir, os.environ["PATH"]))
    monkeypatch.setenv("FAKE_UBUS_DIR", str(data))
    return FakeUbus(str(data))


@pytest.fixture
def host():
    made = []

    def make(*routes):
        made.append(Host(list(routes)).start())
        return made[-1]
    yield make
    for one in made:
        one.close()


# the rules

@pytest.mark.parametrize("doc, need_route, online", [
    (status_doc(), False, True),
    (status_doc(), True, True),
    (status_doc(default_route=False), True, False),
    (status_doc(address=None), False, False),                 # qmi parent: up, no address
    (status_doc(address=None, v6="2001:db8::5"), False, True),
    (status_doc(up=False), False, False),
    (dict(status_doc(), l3_device=""), False, False),
    (dict(status_doc(), up="true"), False, False),
    (dict(status_doc(), **{"ipv4-address": "10.0.0.1"}), False, False),
    (dict(status_doc(), route=[{"target": "0.0.0.0", "mask": "0"}]), True, False),
    ([], False, False), ("up", False, False), (None, False, False)])
def test_judge(doc, need_route, online):
    assert ubus.judge(doc, need_route) is online


@pytest.mark.parametrize("line, name", [
    (OPENWRT_LINE, "wan"),
    ('{"network.interface":{"action":"ifdown","interface":"wwan_4"}}', "wwan_4"),
    ('{ "network.wireless": {"action":"up"} }', None),
    ('{ "network.interface": ["wan"] }', None),
    ('{ "network.interface": {"interface": 7} }', None),
    ("not json", None), ("[1, 2]", None), ("", None)])
def test_parse_event(line, name):
    assert ubus.parse_event(line) == name


def test_judge_output_tolerates_garbage():
    good = json.dumps(status_doc(), indent="\t").encode()
    assert ubus.judge_output(0, good) is True
    assert ubus.judge_output(4, good) is False
    assert ubus.judge_output(0, good[:-5]) is False
    assert ubus.judge_output(0, b"\xff\xfe") is False


# the detector with the fake

def test_follows_ifdown_and_ifup_within_a_second(fake, host):
    fake.status("wan")
    h = host(("isp", "ubus:wan"))
    assert h.run_until(lambda: h.is_online("isp"), 60.0)
    assert h.run_until(lambda: fake.starts() == 1, 60.0)
    assert h.loop.next_deadline() is None                   # no timer while all is well
    for action, up in (("ifdown", False), ("ifup", True), ("ifdown", False)):
        fake.event(action, "wan", status={"up": up})
        assert h.run_until(lambda: h.is_online("isp") is up, 60.0), action
        assert probe.probe("isp", "ubus:wan") is up
    assert h.changes == [("isp", True), ("isp", False), ("isp", True), ("isp", False)]


def test_sub_interfaces_count_and_other_interfaces_are_not_asked(fake, host):
    fake.status("wwan", address=None)                       # qmi: the parent has no address
    h = host(("lte", "ubus:wwan"))
    assert h.run_until(lambda: fake.starts() == 1 and len(fake.calls("status")) == 3, 60.0)
    h.spin(0.1)
    assert not h.is_online("lte")
    fake.event("ifup", "lan", status={})
    fake.event("ifup", "wwan_4", status={"device": "wwan0"})
    assert h.run_until(lambda: h.is_online("lte"), 60.0)
    assert fake.calls("network.interface.lan") == []


def test_route_option_needs_a_default_route(fake, host):
    fake.status("wan", default_route=False)
    h = host(("isp", "ubus:wan", ("online_require_route", "1")), ("any", "ubus:wan"))
    # the listener follows events only from its start on: wait for it, then raise one
    assert h.run_until(lambda: h.is_online("any") and fake.starts() == 1, 60.0)
    assert not h.is_online("isp")
    fake.event("ifupdate", "wan", status={})
    assert h.run_until(lambda: h.is_online("isp"), 60.0)
    assert list(h.detectors.shares) == ["ubus"] and fake.starts() == 1


def test_dead_listener_is_started_again_and_the_state_asked_again(fake, host):
    fake.status("wan")
    h = host(("isp", "ubus:wan"))
    assert h.run_until(lambda: h.is_online("isp") and fake.starts() == 1, 60.0)
    asked = len(fake.calls("status"))
    fake.status("wan", up=False)                # changes while nobody listens
    open(os.path.join(fake.folder, "listen.exit"), "w").close()
    assert h.run_until(lambda: fake.starts() == 2, 60.0)
    assert h.run_until(lambda: not h.is_online("isp"), 60.0)
    assert len(fake.calls("status")) >= asked + 3
    assert any("ubus listen ended" in t for t in h.log.texts("warning"))
    fake.event("ifup", "wan", status={})
    assert h.run_until(lambda: h.is_online("isp"), 60.0)


def test_without_ubus_routes_stay_offline_and_it_is_said_once(host, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    h = host(("a", "ubus:wan"), ("b", "ubus:lan"))
    h.spin(0.1)
    assert not h.is_online("a") and not h.is_online("b")
    assert [t for t in h.log.texts("warning") if "no ubus program" in t][:1] == [
        "no ubus program on PATH: ubus: routes stay offline"]
    assert h.online.get("a").last_error == "no ubus program on PATH"
    assert h.loop.next_deadline() is None
    assert probe.probe("a", "ubus:wan") is False


def test_hostile_listener_output_is_ignored(fake, host):
    fake.status("wan", up=False)
    h = host(("isp", "ubus:wan"))
    assert h.run_until(lambda: fake.starts() == 1 and len(fake.calls("status")) == 3, 60.0)
    for line in ("garbage", "{", '{"network.interface": null}', "x" * 70000, OPENWRT_LINE):
        fake.raw_event(line)
    fake.status("wan")
    assert h.run_until(lambda: h.is_online("isp"), 60.0)


def test_daemon_delivers_when_ubus_says_ifup(fake, tmp_path):
    fake.status("wan", up=False)

    def come_up():
        assert fake.starts() == 1           # one shared `ubus listen` child
        fake.event("ifup", "wan", status={})
    log = held_then_delivered(tmp_path, "ubus:wan", come_up)
    assert "says online" in log

