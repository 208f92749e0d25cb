"""The resolver in a real loop, against dnsmasq and against scripted servers.

dnsmasq (authoritative for `.test` through --local) serves the ordinary cases, including the
null MX (`--mx-host=nullmx.test,.,0` works with dnsmasq 2.90). A scripted UDP/TCP server in a
thread serves what dnsmasq cannot be made to do: SERVFAIL, silence, truncation forcing TCP,
stray packets with the wrong id or question, an unfollowed CNAME, SOA-carrying negatives.
"""

import ast
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from masq.dns import mx
from masq.dns import resolver as dns
from masq.base.loop import Loop
from masq.proto import dns as wire
from masq.proto.dns import ResourceRecord

from fakes import FakeClock, Frozen
from helpers import free_port

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RECORDS = [
    "--mx-host=example.test,mail.example.test,10",
    "--mx-host=example.test,backup.example.test,20",
    "--host-record=mail.example.test,127.0.0.2,::2",
    "--host-record=backup.example.test,127.0.0.3",
    "--mx-host=nullmx.test,.,0",
    "--mx-host=ghosts.test,ghost1.ghosts.test,10",
    "--mx-host=ghosts.test,ghost2.ghosts.test,20",
    "--host-record=implicit.test,127.0.0.4",
    "--txt-record=txtonly.test,nothing here",
    "--cname=www.example.test,mail.example.test",
    "--cname=a.test,b.test", "--cname=b.test,c.test", "--cname=c.test,mail.example.test",
    "--mx-host=self.test,me.test,10", "--mx-host=self.test,mail.example.test,20",
    "--mx-host=backup.test,mail.example.test,10", "--mx-host=backup.test,me.test,20",
    "--mx-host=byaddr.test,myself.test,5", "--host-record=myself.test,127.0.0.9",
]
for letter in "abcd":
    RECORDS.append("--mx-host=tie.test,%s.tie.test,%d" % (letter, 20 if letter == "d" else 10))
    RECORDS.append("--host-record=%s.tie.test,127.0.1.%d" % (letter, ord(letter)))


def wait_for_dns(port, proc, deadline=60.0):
    """Wait until dnsmasq answers; False if it exited first (its port was taken meanwhile)."""
    end = time.monotonic() + deadline
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.1)
        while time.monotonic() < end and proc.poll() is None:
            probe.sendto(wire.build_query(1, "mail.example.test", wire.A), ("127.0.0.1", port))
            try:
                return probe.recv(512)
            except OSError:
                time.sleep(0.05)
    if proc.poll() is None:
        raise RuntimeError("dnsmasq did not answer on port %d" % port)
    return False


@pytest.fixture(scope="module")
def dnsmasq():
    """Start dnsmasq on 127.0.0.1 and a random port; yield ("127.0.0.1", port)."""
    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq not installed (tools/install-test-deps installs dnsmasq-base)")
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--port=%d" % port, "--listen-address=127.0.0.1", "--bind-interfaces",
             "--local=/test/", "--local-ttl=60", "--pid-file="] + RECORDS,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait_for_dns(port, proc) is not False:
            break
    else:
        raise RuntimeError("dnsmasq exited at start five times")
    try:
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(5)


class ScriptedServer:
    """A DNS server in a thread on UDP and TCP 127.0.0.1:port; `handler` makes the replies.

    handler(transport, qid, name, qtype) returns a list of datagrams (bytes) to send back.
    """

    def __init__(self, handler):
        self.handler = handler
        self.log = []
        for _ in range(50):      # a UDP port whose TCP twin is free too
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.address = self.udp.getsockname()
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(self.address)
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen(8)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.02)
            if self.udp in ready:
                data, peer = self.udp.recvfrom(4096)
                for reply in self._replies("udp", data):
                    self.udp.sendto(reply, peer)
            if self.tcp in ready:
                self._serve_tcp()

    def _serve_tcp(self):
        conn, _ = self.tcp.accept()
        with conn:
            conn.settimeout(1)
            buffer = b""
            while True:
                message, rest = wire.unframe(buffer)
                if message is not None:
                    break
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buffer += chunk
            for reply in self._replies("tcp", message):
                conn.sendall(wire.frame(reply))

    def _replies(self, transport, data):
        qid, name, qtype = wire.parse_query(data)
        self.log.append((transport, name, qtype))
        return self.handler(transport, qid, name, qtype) or []

    def stop(self):
        self.stopping = True
        self.thread.join(2)
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def scripted():
    """Return a factory of ScriptedServers, all stopped after the test."""
    servers = []

    def start(handler):
        server = ScriptedServer(handler)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


def answer(qid, name, qtype, records=(), rcode=wire.NOERROR, tc=False, authority=()):
    return [wire.build_response(qid, name, qtype, rcode, records, authority, tc)]


def a_record(name, ip="192.0.2.1", ttl=60):
    return ResourceRecord(name, wire.A, ttl, ip)


# driving the loop

@pytest.fixture
def loop():
    loop = Loop()
    yield loop
    loop.close()


def run(loop, start, limit=60.0):
    """Start a lookup, check it does not answer synchronously, run the loop until it does."""
    results = []
    start(results.append)
    assert results == [], "callback ran synchronously"
    assert loop.run_until(lambda: results, limit), "no answer within %s s" % limit
    for _ in range(3):
        loop.run_once(block=False)
    assert len(results) == 1, "callback ran more than once"
    return results[0]


def assert_idle(loop, resolver):
    assert resolver.pending == {}
    assert loop.next_deadline() is None
    assert len(loop.selector.get_map()) == 0


def make(loop, server, **kw):
    kw.setdefault("timeout", 10)            # only a silent server waits it out
    kw.setdefault("hosts_file", None)       # never this machine's /etc/hosts
    return mx.MailResolver(loop, servers=[server], **kw)


# against dnsmasq

def test_mx_hosts_come_in_preference_order_with_addresses(loop, dnsmasq):
    resolver = make(loop, dnsmasq)
    result = run(loop, lambda cb: resolver.resolve_mx("example.test", cb))
    assert result.error is None and not result.implicit
    assert result.hosts == [("mail.example.test", ["127.0.0.2", "::2"]),
                            ("backup.example.test", ["127.0.0.3"])]
    assert_idle(loop, resolver)


def test_equal_preferences_are_shuffled_and_worse_ones_stay_last(loop, dnsmasq):
    resolver = make(loop, dnsmasq)
    firsts = set()
    for _ in range(30):
        result = run(loop, lambda cb: resolver.resolve_mx("tie.test", cb))
        names = [host for host, _ in result.hosts]
        assert sorted(names[:3]) == ["a.tie.test", "b.tie.test", "c.tie.test"]
        assert names[3] == "d.tie.test"
        firsts.add(names[0])
    assert len(firsts) > 1


def test_null_mx_is_a_permanent_5_1_10(loop, dnsmasq):
    resolver = make(loop, dnsmasq)
    result = run(loop, lambda cb: resolver.resolve_mx("nullmx.test", cb))
    assert result.hosts == []
    assert (result.error.temporary, result.error.status) == (False, "5.1.10")


def test_nxdomain_is_a_permanent_5_1_2(loop, dnsmasq):
    resolver = make(loop, dnsmasq)
    result = run(loop, lambda cb: resolver.resolve_mx("nope.test", cb))
    assert (result.error.temporary, result.error.status) == (False, "5.1.2")
    assert "not found" in result.error.text
    host = run(loop, lambda cb: resolver.resolve_host("nope.test", cb))
    assert host.addresses == [] and host.error.status == "5.1.2"


def test_mx_targets_all_nxdomain_is_a_permanent_5_4_4(loop, dnsmasq):
    resolver = make(loop, dnsmasq)
    result = run(loop, lambda cb: resolver.resolve_mx("ghosts.test", cb))
    assert (result.error.temporary, result.error.status) == (False, "5.4.4")


def test_no_mx_falls_back_to_the_domains_own_address(loop, dnsmasq):
    resolver = make(loop, dnsmasq)
    result = run(loop, lambda cb: resolver.resolve_mx("implicit.test", cb))
    assert result.error is None and result.implicit
    assert result.hosts == [("implicit.test", ["127.0.0.4"])]


def test_no_mx_and_no_address_is_a_permanent_5_4_4(loop, dnsmasq):
    resolver = make(loop, dnsmasq)
    result = run(loop, lambda cb: resolver.resolve_mx("txtonly.test", cb))
    assert (result.error.temporary, result.error.status) == (False, "5.4.4")


def test_host_with_a_and_aaaa(loop, dnsmasq):
    resolver = make(loop, dnsmasq)
    result = run(loop, lambda cb: resolver.resolve_host("Mail.Example.Test.", cb))
    assert result.error is None and result.addresses == ["127.0.0.2", "::2"]


def test_cname_chains_are_followed(loop, dnsmasq):
    resolver = make(loop, dnsmasq)
    result = run(loop, lambda cb: resolver.query("a.test", dns.A, cb))
    assert result.error is None
    assert (result.name, result.canonical) == ("a.test", "mail.example.test")
    assert [r.data for r in result.records] == ["127.0.0.2"]
    host = run(loop, lambda cb: resolver.resolve_host("www.example.test", cb))
    assert host.addresses == ["127.0.0.2", "::2"]


def test_our_own_name_as_best_mx_is_a_loop_5_4_6(loop, dnsmasq):
    resolver = make(loop, dnsmasq, own_names={"ME.test"})
    result = run(loop, lambda cb: resolver.resolve_mx("self.test", cb))
    assert (result.error.temporary, result.error.status) == (False, "5.4.6")


def test_as_backup_mx_only_better_hosts_are_kept(loop, dnsmasq):
    resolver = make(loop, dnsmasq, own_names={"me.test"})
    result = run(loop, lambda cb: resolver.resolve_mx("backup.test", cb))
    assert result.error is None
    assert result.hosts == [("mail.example.test", ["127.0.0.2", "::2"])]


def test_mx_at_our_own_address_is_a_loop_5_4_6(loop, dnsmasq):
    resolver = make(loop, dnsmasq, own_addresses={"127.0.0.9"})
    result = run(loop, lambda cb: resolver.resolve_mx("byaddr.test", cb))
    assert result.error.status == "5.4.6"


def test_implicit_mx_at_our_own_address_is_a_loop(loop, dnsmasq):
    resolver = make(loop, dnsmasq, own_addresses={"127.0.0.4"})
    result = run(loop, lambda cb: resolver.resolve_mx("implicit.test", cb))
    assert result.error.status == "5.4.6"


def test_answers_are_cached_by_ttl(loop, dnsmasq):
    resolver = make(loop, dnsmasq)
    first = run(loop, lambda cb: resolver.query("mail.example.test", dns.A, cb))
    assert first.ttl == 60 and ("mail.example.test", dns.A) in resolver.cache
    second = run(loop, lambda cb: resolver.query("MAIL.example.test.", dns.A, cb))
    assert second is first
    assert_idle(loop, resolver)


# without any query

def test_address_literals_need_no_query(loop, scripted):
    server = scripted(lambda *query: [])
    resolver = make(loop, server.address)
    result = run(loop, lambda cb: resolver.resolve_mx("[192.0.2.7]", cb))
    assert result.hosts == [("192.0.2.7", ["192.0.2.7"])]
    result = run(loop, lambda cb: resolver.resolve_mx("[IPv6:2001:db8::7]", cb))
    assert result.hosts == [("2001:db8::7", ["2001:db8::7"])]
    host = run(loop, lambda cb: resolver.resolve_host("192.0.2.8", cb))
    assert host.addresses == ["192.0.2.8"]
    bad = run(loop, lambda cb: resolver.resolve_mx("[192.0.2.300]", cb))
    assert (bad.error.temporary, bad.error.status) == (False, "5.1.3")
    ours = make(loop, server.address, own_addresses={"192.0.2.7"})
    looped = run(loop, lambda cb: ours.resolve_mx("[192.0.2.7]", cb))
    assert looped.error.status == "5.4.6"
    assert server.log == []


def test_invalid_names_fail_permanently_without_a_query(loop, scripted):
    server = scripted(lambda *query: [])
    resolver = make(loop, server.address)
    result = run(loop, lambda cb: resolver.query("bad name.test", dns.A, cb))
    assert (result.error.temporary, result.error.status) == (False, "5.1.2")
    assert server.log == []


# against scripted servers

def test_servfail_is_temporary_and_every_try_is_made(loop, scripted):
    server = scripted(lambda t, qid, name, qtype: answer(qid, name, qtype,
                                                         rcode=wire.SERVFAIL))
    resolver = make(loop, server.address, attempts=2)
    result = run(loop, lambda cb: resolver.resolve_mx("example.test", cb))
    assert (result.error.temporary, result.error.status) == (True, "4.4.3")
    assert "SERVFAIL" in result.error.text
    assert len(server.log) == 2
    assert_idle(loop, resolver)


def test_refused_is_temporary(loop, scripted):
    server = scripted(lambda t, qid, name, qtype: answer(qid, name, qtype,
                                                         rcode=wire.REFUSED))
    resolver = make(loop, server.address, attempts=1)
    result = run(loop, lambda cb: resolver.resolve_host("x.test", cb))
    assert result.error.temporary and "REFUSED" in result.error.text


def test_silent_server_times_out_temporarily(scripted):
    clock = FakeClock()
    loop = Loop(clock)                          # a silent server: only timers ever fire
    server = scripted(lambda *query: [])
    resolver = make(loop, server.address, timeout=0.15, attempts=2)
    started = clock.monotonic()
    result = run(loop, lambda cb: resolver.query("example.test", dns.MX, cb))
    assert clock.monotonic() - started == pytest.approx(0.3)      # two attempts of 0.15 s
    assert (result.error.temporary, result.error.status) == (True, "4.4.3")
    assert "timeout" in result.error.text
    assert_idle(loop, resolver)
    loop.close()


def test_silent_first_server_fails_over_to_the_second(loop, scripted):
    silent = scripted(lambda *query: [])
    good = scripted(lambda t, qid, name, qtype: answer(qid, name, qtype, [a_record(name)]))
    resolver = dns.Resolver(loop, servers=[silent.address, good.address], timeout=1.0)
    result = run(loop, lambda cb: resolver.resolve_host("h.test", cb))
    assert result.addresses == ["192.0.2.1"]


def test_closed_port_fails_fast_without_waiting_for_the_timeout():
    loop = Loop(Frozen())                       # its timers never come due
    resolver = dns.Resolver(loop, servers=[("127.0.0.1", free_port())], timeout=5)
    results = []
    resolver.query("example.test", dns.A, results.append)
    for _ in range(100):                        # each turn waits (up to 5 s) for the refusal
        if results:
            break
        loop.run_once()
    assert results and results[0].error.temporary
    assert_idle(loop, resolver)
    loop.close()


def test_truncated_answer_is_repeated_over_tcp(loop, scripted):
    many = ["192.0.2.%d" % i for i in range(1, 101)]

    def handler(transport, qid, name, qtype):
        if transport == "udp":
            return answer(qid, name, qtype, tc=True)
        return answer(qid, name, qtype, [a_record(name, ip) for ip in many])
    server = scripted(handler)
    resolver = make(loop, server.address)
    result = run(loop, lambda cb: resolver.query("big.test", dns.A, cb))
    assert [r.data for r in result.records] == many
    assert [entry[0] for entry in server.log] == ["udp", "tcp"]
    assert_idle(loop, resolver)


def test_stray_packets_are_ignored_then_the_real_answer_is_taken(loop, scripted):
    def handler(transport, qid, name, qtype):
        return (answer(qid ^ 1, name, qtype, [a_record(name, "192.0.2.66")])
                + answer(qid, "evil.test", qtype, [a_record("evil.test", "192.0.2.66")])
                + answer(qid, name, wire.AAAA)
                + [b"\x00garbage", wire.build_query(qid, name, qtype)]
                + answer(qid, name, qtype, [a_record(name, "192.0.2.5")]))
    server = scripted(handler)
    resolver = make(loop, server.address)
    result = run(loop, lambda cb: resolver.query("h.test", dns.A, cb))
    assert [r.data for r in result.records] == ["192.0.2.5"]
    assert len(server.log) == 1


def test_mx_with_unresolvable_hosts_is_temporary_when_any_lookup_failed(loop, scripted):
    def handler(transport, qid, name, qtype):
        if qtype == wire.MX:
            return answer(qid, name, qtype,
                          [ResourceRecord(name, wire.MX, 60, (10, "mx.flaky.test"))])
        return answer(qid, name, qtype, rcode=wire.SERVFAIL)
    server = scripted(handler)
    resolver = make(loop, server.address, attempts=1)
    result = run(loop, lambda cb: resolver.resolve_mx("flaky.test", cb))
    assert (result.error.temporary, result.error.status) == (True, "4.4.3")


def test_mx_host_failing_temporarily_is_skipped_for_a_working_one(loop, scripted):
    def handler(transport, qid, name, qtype):
        if qtype == wire.MX:
            return answer(qid, name, qtype,
                          [ResourceRecord(name, wire.MX, 60, (10, "bad.two.test")),
                           ResourceRecord(name, wire.MX, 60, (20, "good.two.test"))])
        if name == "good.two.test" and qtype == wire.A:
            return answer(qid, name, qtype, [a_record(name)])
        if name == "good.two.test":
            return answer(qid, name, qtype)
        return answer(qid, name, qtype, rcode=wire.SERVFAIL)
    server = scripted(handler)
    resolver = make(loop, server.address, attempts=1)
    result = run(loop, lambda cb: resolver.resolve_mx("two.test", cb))
    assert result.hosts == [("good.two.test", ["192.0.2.1"])]


def test_hostile_mx_target_names_are_never_queried(loop, scripted):
    def handler(transport, qid, name, qtype):
        if qtype == wire.MX:
            bad = ResourceRecord(name, wire.MX, 60, (10, "x"))
            message = wire.build_response(qid, name, qtype, answers=[bad])
            return [message[:-3] + b"\x01\x00\x00"]   # exchange "x" becomes "\000"
        return answer(qid, name, qtype, [a_record(name)])
    server = scripted(handler)
    resolver = make(loop, server.address)
    result = run(loop, lambda cb: resolver.resolve_mx("hostile.test", cb))
    assert (result.error.temporary, result.error.status) == (False, "5.4.4")
    assert [entry[2] for entry in server.log] == [wire.MX]


def test_unfollowed_cname_is_queried_by_the_resolver(loop, scripted):
    def handler(transport, qid, name, qtype):
        if name == "alias.test":
            return answer(qid, name, qtype, [ResourceRecord(name, wire.CNAME, 60, "target.test")])
        return answer(qid, name, qtype, [a_record(name, "192.0.2.9", ttl=30)])
    server = scripted(handler)
    resolver = make(loop, server.address)
    result = run(loop, lambda cb: resolver.query("alias.test", dns.A, cb))
    assert (result.name, result.canonical, result.ttl) == ("alias.test", "target.test", 30)
    assert [r.data for r in result.records] == ["192.0.2.9"]


def test_cname_loop_is_a_temporary_error(loop, scripted):
    def handler(transport, qid, name, qtype):
        other = "ping.test" if name == "pong.test" else "pong.test"
        return answer(qid, name, qtype, [ResourceRecord(name, wire.CNAME, 60, other)])
    server = scripted(handler)
    resolver = make(loop, server.address)
    result = run(loop, lambda cb: resolver.query("ping.test", dns.A, cb))
    assert result.error.temporary and "CNAME" in result.error.text
    assert len(server.log) <= dns.MAX_CNAME + 1


def test_negative_answers_are_cached_for_the_soa_minimum(loop, scripted):
    soa = ResourceRecord("neg.test", wire.SOA, 120, ("ns.test", "host.test", 1, 2, 3, 4, 45))
    server = scripted(lambda t, qid, name, qtype: answer(
        qid, name, qtype, rcode=wire.NXDOMAIN, authority=[soa]))
    resolver = make(loop, server.address)
    first = run(loop, lambda cb: resolver.query("gone.neg.test", dns.A, cb))
    second = run(loop, lambda cb: resolver.query("gone.neg.test", dns.A, cb))
    assert first.error.status == "5.1.2" and first.ttl == 45 and second is first
    assert len(server.log) == 1


def test_temporary_errors_are_not_cached(loop, scripted):
    server = scripted(lambda t, qid, name, qtype: answer(qid, name, qtype,
                                                         rcode=wire.SERVFAIL))
    resolver = make(loop, server.address, attempts=1)
    run(loop, lambda cb: resolver.query("x.test", dns.A, cb))
    run(loop, lambda cb: resolver.query("x.test", dns.A, cb))
    assert len(server.log) == 2


def test_cache_is_bounded(loop, scripted):
    server = scripted(lambda t, qid, name, qtype: answer(qid, name, qtype, [a_record(name)]))
    resolver = make(loop, server.address)
    for i in range(dns.CACHE_SIZE + 20):
        resolver.cache[("n%d.test" % i, dns.A)] = (loop.now + 60, None)
    run(loop, lambda cb: resolver.query("fresh.test", dns.A, cb))
    assert len(resolver.cache) <= dns.CACHE_SIZE
    assert ("fresh.test", dns.A) in resolver.cache


def test_concurrent_identical_questions_share_one_exchange(loop, scripted):
    server = scripted(lambda t, qid, name, qtype: answer(qid, name, qtype, [a_record(name)]))
    resolver = make(loop, server.address)
    results = []
    resolver.query("same.test", dns.A, results.append)
    resolver.query("SAME.test", dns.A, results.append)
    loop.run_until(lambda: len(results) == 2, 60)
    assert len(results) == 2 and results[0] is results[1]
    assert len(server.log) == 1


def test_close_answers_pending_questions_and_leaves_nothing_behind(loop, scripted):
    server = scripted(lambda *query: [])
    resolver = make(loop, server.address, timeout=5)
    results = []
    resolver.resolve_mx("example.test", results.append)
    assert loop.next_deadline() is not None and loop.selector.get_map()
    resolver.close()
    for _ in range(3):
        loop.run_once(block=False)
    assert len(results) == 1 and results[0].error.temporary
    assert_idle(loop, resolver)
    later = run(loop, lambda cb: resolver.query("example.test", dns.A, cb))
    assert later.error.temporary


# configuration

@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1", ("127.0.0.1", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[::1]:53", ("::1", 53)),
    ("[::1]", ("::1", 53)),
    ("::1", ("::1", 53)),
    (" 2001:DB8::1 ", ("2001:db8::1", 53)),
])
def test_parse_server(text, expected):
    assert dns.parse_server(text) == expected


@pytest.mark.parametrize("text", [
    "dns.example", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "[::1", "[::1]x",
    "[::1]:x", "1.2.3.4:53:1", "",
])
def test_parse_server_refuses_non_literals(text):
    with pytest.raises(ValueError):
        dns.parse_server(text)


def test_resolv_conf_nameservers_are_used(tmp_path, loop):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch lan\nnameserver bogus\nnameserver 192.0.2.53\n"
                    "nameserver ::1\n")
    assert dns.read_resolv_conf(str(conf)) == [("192.0.2.53", 53), ("::1", 53)]
    assert dns.read_resolv_conf(str(tmp_path / "missing")) == []
    resolver = dns.Resolver(loop, resolv_conf=str(conf))
    assert resolver.servers() == [("192.0.2.53", 53), ("::1", 53)]
    conf.write_text("nameserver 192.0.2.54\n")
    os.utime(conf, ns=(1, 1))
    assert resolver.servers() == [("192.0.2.54", 53)]
    empty = dns.Resolver(loop, resolv_conf=str(tmp_path / "missing"))
    assert empty.servers() == [("127.0.0.1", 53)]


# the hosts file, before DNS (as the C library's resolver)

def test_hosts_file_is_read_like_the_c_library_does(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n127.0.0.1\tlocalhost\n::1 localhost ip6-localhost  # v6\n"
                     "192.0.2.7 Relay.Example.TEST. relay\nbogus name.test\n\n"
                     "192.0.2.8 relay.example.test\n")
    assert dns.read_hosts(str(hosts)) == {
        "localhost": ["127.0.0.1", "::1"], "ip6-localhost": ["::1"],
        "relay.example.test": ["192.0.2.7", "192.0.2.8"], "relay": ["192.0.2.7"]}
    assert dns.read_hosts(str(tmp_path / "missing")) == {}


def test_hosts_file_answers_before_dns_and_is_reread_when_changed(tmp_path, loop, dnsmasq):
    hosts = tmp_path / "hosts"
    hosts.write_text("10.1.2.3 mail.example.test\n")
    resolver = make(loop, dnsmasq, hosts_file=str(hosts))
    listed = run(loop, lambda cb: resolver.addresses("MAIL.example.test.", cb))
    assert listed.error is None and listed.addresses == ["10.1.2.3"]
    from_dns = run(loop, lambda cb: resolver.addresses("backup.example.test", cb))
    assert from_dns.error is None and from_dns.addresses == ["127.0.0.3"]
    hosts.write_text("10.9.9.9 mail.example.test\n")
    os.utime(hosts, ns=(1, 1))
    again = run(loop, lambda cb: resolver.resolve_host("mail.example.test", cb))
    assert again.addresses == ["10.9.9.9"]


# runtime rules (python3-light: no idna codec, no email/logging/asyncio...)

def test_resolves_with_idna_and_heavy_modules_blocked(dnsmasq):
    code = (
        "import sys\n"
        "for m in ('email', 'logging', 'asyncio', 'http', 'urllib', 'xml', 'unicodedata',\n"
        "          'uuid', 'stringprep', 'encodings.idna'):\n"
        "    sys.modules[m] = None\n"
        "from masq.base.loop import Loop\n"
        "from masq.dns.mx import MailResolver\n"
        "loop, mx, host = Loop(), [], []\n"
        "resolver = MailResolver(loop, servers=[('127.0.0.1', %d)], timeout=10)\n"
        "resolver.resolve_mx('example.test', mx.append)\n"
        "resolver.resolve_host('www.example.test', host.append)\n"
        "while not (mx and host):\n"
        "    loop.run_once()\n"
        "assert mx[0].hosts[0] == ('mail.example.test', ['127.0.0.2', '::2']), mx\n"
        "assert host[0].addresses == ['127.0.0.2', '::2'], host\n"
        "try:\n"
        "    'x'.encode('idna')\n"
        "except LookupError:\n"
        "    print('no idna')\n" % dnsmasq[1])
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"no idna\n"


def test_imports_are_python3_light_only():
    allowed = {"errno", "ipaddress", "os", "random", "socket", "struct", "dataclasses", "masq"}
    for path in ("masq/dns/resolver.py", "masq/proto/dns.py"):
        tree = ast.parse(open(os.path.join(ROOT, path)).read())
        names = {alias.name.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module.split(".")[0] if node.level == 0 else "masq"
                  for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert names <= allowed, path
