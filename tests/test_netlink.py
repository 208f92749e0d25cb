"""The iface: detector: rtnetlink parsing (golden and hostile bytes) and real veth links.

Links are real (veth pairs named with the test's pid, deleted in a finally); the detector
runs in a real Loop and must report within a second of `ip link set`. The default-route
option is tested in a network namespace so the host's routes are never touched. End to
end: a daemon holds mail while its iface: route is down and delivers it to an aiosmtpd
sink within a second of `ip link set up`, without a restart.
"""

import itertools
import os
import select
import socket
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from helpers import ROOT
from masq.online import netlink, probe
from test_online_detectors import Host, held_then_delivered

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not hasattr(socket, "AF_NETLINK"),
                                reason="needs root and Linux netlink")
_COUNTER = itertools.count()


def sh(command):
    subprocess.run(command, shell=True, check=True, capture_output=True)


def unique(prefix):
    return "%s%d%d" % (prefix, os.getpid() % 100000, next(_COUNTER))


@pytest.fixture
def veth():
    """Make veth pairs on demand: veth(address=None, name=None) -> name; deleted after."""
    made = []

    def make(address="10.231.0.1/24", name=None):
        name = name or unique("mq")
        peer = unique("mp")
        sh("ip link add %s type veth peer name %s" % (name, peer))
        made.append(name)
        if address:
            sh("ip addr add %s dev %s" % (address, name))
        sh("ip link set %s up && ip link set %s up" % (peer, name))
        return name
    yield make
    for name in made:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


# golden bytes

def attr(kind, value):
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + bytes(-length % 4)


def message(kind, payload, seq=0, port=0):
    return struct.pack("=IHHII", 16 + len(payload), kind, 0, seq, port) + payload \
        + bytes(-len(payload) % 4)


def link_payload(index, flags, name=None, operstate=None):
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0xffffffff)
    if name is not None:
        body += attr(netlink.IFLA_IFNAME, name.encode() + b"\0")
    if operstate is not None:
        body += attr(netlink.IFLA_OPERSTATE, bytes([operstate]))
    return body


def addr_payload(index, address, family=socket.AF_INET, scope=0, flags=0, local=True):
    body = struct.pack("=BBBBi", family, 24, 0, scope, index)
    body += attr(netlink.IFA_ADDRESS, address)
    if local:
        body += attr(netlink.IFA_LOCAL, address)
    body += attr(netlink.IFA_FLAGS, struct.pack("=I", flags))
    return body


def route_payload(index, dst_len=0, table=254, kind=1, family=socket.AF_INET):
    body = struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, table, 4, 0, kind, 0)
    return body + attr(netlink.RTA_TABLE, struct.pack("=I", table)) \
        + attr(netlink.RTA_OIF, struct.pack("=I", index))


def test_parse_link_address_route():
    assert netlink.parse_link(link_payload(7, 0x11043, "ppp0", 0)) == (7, 0x11043, "ppp0",
                                                                       "unknown")
    assert netlink.parse_link(link_payload(3, 1, None, 6)) == (3, 1, None, "up")
    four = socket.inet_aton("10.1.2.3")
    assert netlink.parse_address(addr_payload(7, four)) == (7, (2, 24, four), True)
    assert netlink.parse_address(addr_payload(7, four, scope=253))[2] is False    # link
    assert netlink.parse_address(addr_payload(7, four, flags=0x40))[2] is False   # tentative
    assert netlink.parse_route(route_payload(7)) == (7, (2, 7, 0, None))
    assert netlink.parse_route(route_payload(7, dst_len=24)) is None
    assert netlink.parse_route(route_payload(7, table=100)) is None


def test_messages_split_a_datagram_and_stop_at_a_bad_length():
    data = message(16, link_payload(1, 1, "a", 6)) + message(3, b"\0\0\0\0", seq=9, port=5)
    assert [(k, s, p) for k, s, p, _ in netlink.messages(data)] == [(16, 0, 0), (3, 9, 5)]
    assert netlink.messages(data[:20]) == []
    assert netlink.messages(struct.pack("=IHHII", 8, 16, 0, 0, 0) + bytes(8)) == []


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_hostile_bytes_never_raise(data):
    watcher = netlink.Netlink(None)
    watcher.feed(data)
    watcher.feed(message(16, data) + message(20, data) + message(24, data))
    for parse in (netlink.parse_link, netlink.parse_address, netlink.parse_route):
        result = parse(data)
        assert result is None or isinstance(result, (tuple, dict, list))


def test_dump_replies_go_to_the_dump_and_events_to_both():
    watcher = netlink.Netlink(None)
    watcher.port = 77
    watcher.dumping = (netlink.RTM_GETADDR, 5, {})
    one, two = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")
    watcher.feed(message(20, addr_payload(4, one), seq=5, port=77))         # our dump
    watcher.feed(message(20, addr_payload(4, two), seq=1700000000, port=4242))  # `ip addr`
    assert watcher.table.addresses == {4: {(2, 24, two)}}
    watcher.feed(message(20, addr_payload(4, one), seq=3, port=77))         # a stale dump
    watcher.feed(message(3, b"\0\0\0\0", seq=5, port=77))
    assert watcher.ready and watcher.table.addresses == {4: {(2, 24, one), (2, 24, two)}}


def test_usable_needs_up_and_an_address_and_maybe_a_route():
    table = netlink.Table()
    table.set_link(5, 0x1003, "eth9", "up")
    assert not table.usable("eth9")
    table.addresses[5] = {"a"}
    assert table.usable("eth9") and not table.usable("eth9", need_route=True)
    table.routes[("k",)] = 5
    assert table.usable("eth9", need_route=True)
    table.set_link(5, 0x1003, None, "lowerlayerdown")
    assert not table.usable("eth9")
    table.set_link(5, 0x10d1, None, "unknown")          # ppp: UP|RUNNING, operstate unknown
    assert table.usable("eth9")
    table.set_link(5, 0x1001, None, "unknown")          # up but not running
    assert not table.usable("eth9")


# real links

def test_link_down_and_up_reported_within_a_second(veth):
    name = veth()
    host = Host([("isp", "iface:%s" % name)]).start()
    try:
        assert host.run_until(lambda: host.is_online("isp"), 60.0)
        assert host.loop.next_deadline() is None                # event-driven: no timer
        for state, online in (("down", False), ("up", True), ("down", False), ("up", True)):
            sh("ip link set %s %s" % (name, state))
            assert host.run_until(lambda: host.is_online("isp") is online, 60.0)
            assert probe.probe("isp", "iface:%s" % name) is online
        assert host.changes == [("isp", True), ("isp", False), ("isp", True),
                                ("isp", False), ("isp", True)]
    finally:
        host.close()


def test_address_comes_and_goes(veth):
    name = veth(address=None)
    host = Host([("isp", "iface:%s" % name)]).start()
    try:
        host.spin(0.3)
        assert not host.is_online("isp")        # up, but IPv6 link-local only
        sh("ip addr add 10.231.5.1/24 dev %s" % name)
        assert host.run_until(lambda: host.is_online("isp"), 60.0)
        sh("ip addr del 10.231.5.1/24 dev %s" % name)
        assert host.run_until(lambda: not host.is_online("isp"), 60.0)
    finally:
        host.close()


def test_sub_interfaces_count_and_one_socket_serves_every_route(veth):
    base = unique("mq")
    veth(name=base + "_4")
    other = veth(address="10.231.9.1/24")
    host = Host([("wwan", "iface:%s" % base), ("lan", "iface:%s" % other),
                 ("gone", "iface:%s" % unique("no"))]).start()
    try:
        assert host.run_until(lambda: host.is_online("wwan") and host.is_online("lan"), 60.0)
        assert not host.is_online("gone")
        assert list(host.detectors.shares) == ["netlink"]
        sh("ip link del %s_4" % base)
        assert host.run_until(lambda: not host.is_online("wwan"), 60.0)
        assert host.is_online("lan")
    finally:
        host.close()


def test_interface_created_later_is_noticed(veth):
    name = unique("mq")
    host = Host([("ppp", "iface:%s" % name)]).start()
    try:
        host.spin(0.1)
        assert not host.is_online("ppp")
        veth(name=name)
        assert host.run_until(lambda: host.is_online("ppp"), 60.0)
    finally:
        host.close()


NETNS_WATCHER = """
import sys, time
sys.path[:0] = [%(root)r, %(tests)r]
from test_online_detectors import Host, held_then_delivered
host = Host([("isp", "iface:v0", ("online_require_route", "1"))]).start()
print("ready", flush=True)
last, end = None, time.monotonic() + 20
while time.monotonic() < end:
    host.spin(0.02)
    if host.is_online("isp") != last:
        last = host.is_online("isp")
        print(last, flush=True)
"""


def test_require_route_follows_the_default_route_in_a_namespace():
    ns = unique("mqns")
    sh("ip netns add %s" % ns)
    proc = None
    try:
        sh("ip -n {0} link add v0 type veth peer name v1 && ip -n {0} addr add 10.9.0.1/24 "
           "dev v0 && ip -n {0} link set v1 up && ip -n {0} link set v0 up".format(ns))
        code = NETNS_WATCHER % {"root": ROOT, "tests": os.path.dirname(__file__)}
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                                stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)

        def expect(timeout=1.0):
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            return proc.stdout.readline().strip() if ready else None
        assert expect(10) == "ready"
        assert expect() == "False"
        for command, verdict in (("route add default via 10.9.0.2 dev v0", "True"),
                                 ("link set v0 down", "False"),
                                 ("link set v0 up", None),        # the kernel dropped it
                                 ("route add default via 10.9.0.2 dev v0", "True"),
                                 ("route del default", "False")):
            sh("ip -n %s %s" % (ns, command))
            assert expect(1.0 if verdict else 0.5) == verdict, command
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_daemon_delivers_within_a_second_of_link_up(veth, tmp_path):
    name = veth(address="10.231.7.1/24")
    sh("ip link set %s down" % name)
    log = held_then_delivered(tmp_path, "iface:%s" % name,
                              lambda: sh("ip link set %s up" % name))
    assert "says online" in log



def test_daemon_delivers_when_an_ifb_device_comes_up(tmp_path):
    """The issue's other link kind: an ifb device (no carrier, operstate 'unknown' when up)."""
    name = unique("mi")
    sh("ip link add %s type ifb" % name)
    try:
        sh("ip addr add 10.231.9.1/24 dev %s" % name)
        log = held_then_delivered(tmp_path, "iface:%s" % name,
                                  lambda: sh("ip link set %s up" % name))
        assert "says online" in log
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
