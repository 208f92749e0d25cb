"""The checks in the dialogue on the loop's clock: a DNS server that never answers, and
pregreet. A real listener on loopback and raw client sockets, in a loop on a FakeClock,
so the resolver's timeouts and the greeting delay pass without waiting for them (the
replies themselves are checked against dnsmasq and swaks in test_dnsbl.py)."""

import socket

import pytest

from masq.config import schema as config
from masq.proto import dns as wire
from masq.inbound.listener import Listener
from masq.queue.memory import MemoryQueue

from fakes import FakeClock, FakeHost
from helpers import free_port


class Log:
    def __init__(self):
        self.lines = []

    def _add(self, text, *args):
        self.lines.append(text % args if args else text)

    info = warning = error = debug = _add


class Client:
    """A raw SMTP client socket, read without blocking."""

    def __init__(self, port, source):
        self.sock = socket.create_connection(("127.0.0.1", port), 10, (source, 0))
        self.sock.setblocking(False)
        self.got = b""

    def send(self, data):
        self.sock.sendall(data)

    def has(self, text):
        try:
            self.got += self.sock.recv(65536)
        except BlockingIOError:
            pass
        return text in self.got


@pytest.fixture
def silent_dns():
    """A UDP socket that takes questions and never answers them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def make(silent_dns):
    made = []

    def make(extra, dns_port=silent_dns):
        port = free_port()
        text = ("config masq 'main'\n\toption hostname 'test.example'\n"
                "\tlist local_domain 'test.example'\n\tlist local_users 'alice'\n"
                "\tlist relay_net '127.0.0.9/32'\n\toption dns_server '127.0.0.1:%d'\n"
                "\toption alias_file '/nonexistent/aliases'\n%s" % (dns_port, extra))
        clock = FakeClock()
        host = FakeHost(config.loads(text), Log(), clock, MemoryQueue(clock=clock))
        host.loop.at_turn_end(host.queue.sync_now)
        listener = Listener(host, "smtp://127.0.0.1:%d" % port, {})
        listener.start()
        made.append(listener)
        return host, listener, port
    yield make
    for listener in made:
        listener.stop()
        listener.loop.close()


def turns(loop, count=5):
    for _ in range(count):
        loop.run_once(block=False)


def test_a_dns_list_that_never_answers_does_not_refuse(make):
    host, listener, port = make("\tlist dnsbl 'bl.test'\n")
    client = Client(port, "127.0.0.2")
    assert host.loop.run_until(lambda: client.has(b"220 "), 5)
    client.send(b"EHLO client.example\r\nMAIL FROM:<bob@client.example>\r\n"
                b"RCPT TO:<alice@test.example>\r\n")
    assert host.loop.run_until(lambda: client.has(b"250 2.1.0"), 5)
    turns(host.loop)                         # the clock does not move: no answer yet
    assert b"RCPT" not in client.got and b"2.1.5" not in client.got
    assert host.loop.run_until(lambda: client.has(b"250 2.1.5"), 60)
    client.send(b"DATA\r\n")
    assert host.loop.run_until(lambda: client.has(b"354 "), 5)
    client.send(b"Subject: t\r\n\r\nhi\r\n.\r\n")
    assert host.loop.run_until(lambda: client.has(b"250 2.0.0 Message queued"), 5)
    assert len(list(host.queue.live())) == 1
    assert not listener.shared["checks"].verdicts.kept     # a failed lookup is not kept


def test_a_sender_domain_that_cannot_be_looked_up_is_deferred(make):
    host, listener, port = make("\toption check_sender_domain '1'\n")
    client = Client(port, "127.0.0.2")
    assert host.loop.run_until(lambda: client.has(b"220 "), 5)
    client.send(b"EHLO client.example\r\nMAIL FROM:<bob@client.example>\r\n")
    turns(host.loop)
    assert b"2.1.0" not in client.got and b"4.1.8" not in client.got
    assert host.loop.run_until(lambda: client.has(b"\r\n450 4.1.8 "), 60)
    assert b"450 4.1.8 Cannot check sender domain client.example now; try again later" \
        in client.got


def test_a_client_that_talks_first_is_refused_until_it_quits(make):
    host, listener, port = make("\toption smtp_greet_delay '5s'\n")
    client = Client(port, "127.0.0.2")
    client.send(b"EHLO spambot.example\r\nMAIL FROM:<a@spambot.example>\r\n")
    assert host.loop.run_until(lambda: client.has(b"503 5.5.1"), 60)
    assert host.loop.run_until(lambda: client.got.count(b"503 5.5.1") == 2, 5)
    assert client.got == (b"554 5.5.1 Protocol error: you talked before my greeting; "
                          b"send QUIT\r\n"
                          + b"503 5.5.1 No mail is taken in this session; send QUIT\r\n" * 2)
    client.send(b"QUIT\r\n")
    assert host.loop.run_until(lambda: client.has(b"221 2.0.0"), 5)
    assert any("talked before the greeting" in line for line in host.log.lines)


def test_a_patient_client_is_greeted_after_the_delay(make):
    host, listener, port = make("\toption smtp_greet_delay '5s'\n")
    client = Client(port, "127.0.0.2")
    turns(host.loop)                         # the clock does not move: no greeting yet
    assert not client.has(b"220")
    assert host.loop.run_until(lambda: client.has(b"220 test.example ESMTP"), 60)
    client.send(b"EHLO client.example\r\n")
    assert host.loop.run_until(lambda: client.has(b"250 "), 5)


def test_a_relay_net_client_is_greeted_at_once(make):
    host, listener, port = make("\toption smtp_greet_delay '5s'\n")
    client = Client(port, "127.0.0.9")
    turns(host.loop)                         # no clock movement needed
    assert client.has(b"220 test.example ESMTP")


class ServfailServer:
    """A name server that answers every question SERVFAIL, run by the test's own loop."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.asked = []

    def serve(self, loop):
        loop.add_reader(self.sock, self._answer)

    def _answer(self):
        data, peer = self.sock.recvfrom(4096)
        qid, name, qtype = wire.parse_query(data)
        self.asked.append(name)
        self.sock.sendto(wire.build_response(qid, name, qtype, rcode=wire.SERVFAIL), peer)


def test_servfail_from_a_list_does_not_refuse_and_defers_a_sender_check(make):
    server = ServfailServer()
    host, listener, port = make("\tlist dnsbl 'bl.test'\n\toption check_sender_domain '1'\n",
                                dns_port=server.port)
    server.serve(host.loop)
    client = Client(port, "127.0.0.2")
    assert host.loop.run_until(lambda: client.has(b"220 "), 5)
    client.send(b"EHLO client.example\r\nMAIL FROM:<bob@client.example>\r\n")
    assert host.loop.run_until(lambda: client.has(b"\r\n450 4.1.8 "), 60)
    client.send(b"MAIL FROM:<>\r\nRCPT TO:<alice@test.example>\r\n")
    assert host.loop.run_until(lambda: client.has(b"250 2.1.5"), 60)
    assert "2.0.0.127.bl.test" in server.asked and "client.example" in server.asked
    host.loop.remove_reader(server.sock)
    server.sock.close()
