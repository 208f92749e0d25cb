"""Fuzz DNS replies: the codec (masq/proto/dns.py) and the resolver and MX logic above it.

Input: well-formed answers (MX hosts, addresses, CNAMEs, null MX, ourselves, NXDOMAIN) and
responses built from the DNS grammar (our id and question echoed or not, any rcode
and TC bit, A/AAAA/MX/CNAME/SOA/PTR/OPT/TXT records with right and wrong lengths, names
with compression pointers forwards, backwards and into themselves, escapes), then bytes
flipped, cut or inserted; and plain random bytes.
Properties: `parse_response` returns a Response or raises ProtocolError, nothing else, and
`chase`/`negative_ttl` on what it returns do too. A Resolver in a real loop (its clock
driven by the test, its server a socket pair of UDP and TCP on loopback that answers every
question with such a response) calls back exactly once with an MXResult or HostResult,
and leaves no exchange, socket or timer behind.
"""

import socket
import struct

from hypothesis import event, given, strategies as st

from fakes import FakeClock
from fuzzing import fuzz_settings, mutated
from masq.dns import resolver as dns
from masq.dns.mx import MailResolver, MXResult
from masq.base.loop import Loop
from masq.proto import dns as wire
from masq.proto.dns import ResourceRecord as RR
from masq.proto.errors import ProtocolError

QID, NAME = 0x1234, "mail.example.test"

_label = st.sampled_from([b"mx", b"a", b"example", b"test", b"MAIL", b"x-y", b"\x00\xff.",
                          b"a" * 63, b"_s"])


@st.composite
def names(draw):
    """A wire name: labels, then a terminator or a compression pointer anywhere."""
    labels = b"".join(bytes((len(l),)) + l for l in draw(st.lists(_label, max_size=4)))
    end = draw(st.one_of(st.just(b"\x00"), st.integers(0, 0x3FFF).map(
        lambda p: struct.pack("!H", 0xC000 | p)), st.sampled_from([b"\xc0\x0c", b"\x40", b""])))
    return labels + end


@st.composite
def records(draw):
    kind = draw(st.sampled_from([wire.A, wire.AAAA, wire.MX, wire.CNAME, wire.SOA, wire.PTR,
                                 wire.OPT, wire.TXT, wire.NS, 99]))
    if kind == wire.A:
        rdata = draw(st.sampled_from([bytes([127, 0, 0, 1]), bytes([192, 0, 2, 7]), b"\x01"]))
    elif kind == wire.AAAA:
        rdata = draw(st.sampled_from([bytes(15) + b"\x01", bytes(4)]))
    elif kind == wire.MX:
        rdata = struct.pack("!H", draw(st.integers(0, 65535))) + draw(names())
    elif kind in (wire.CNAME, wire.PTR, wire.NS):
        rdata = draw(names())
    elif kind == wire.SOA:
        rdata = draw(names()) + draw(names()) + draw(st.binary(min_size=18, max_size=22))
    else:
        rdata = draw(st.binary(max_size=20))
    owner = draw(st.sampled_from([b"\xc0\x0c", b"\x04mail\x07example\x04test\x00",
                                  b"\x02mx\xc0\x11"]) | names())
    length = len(rdata) + draw(st.sampled_from([0, 0, 0, 0, 1, -1, 300]))
    ttl = draw(st.sampled_from([0, 60, 2 ** 31, 2 ** 32 - 1]))
    klass = draw(st.sampled_from([1, 1, 1, 3, 4096]))
    return owner + struct.pack("!HHIH", kind, klass, ttl, max(0, length) & 0xFFFF) + rdata


@st.composite
def responses(draw, qid=QID, name=NAME, qtype=wire.MX):
    """A response to (qid, name, qtype), mostly well-formed, sometimes not."""
    flags = 0x8000 | draw(st.sampled_from([0, 0, 0, 0x0200, 0x0080])) | draw(
        st.sampled_from([0, 0, 0, 1, 2, 3, 5, 15]))
    body = [draw(records()) for _ in range(draw(st.integers(0, 6)))]
    an = draw(st.integers(0, len(body)))
    ns = draw(st.integers(0, len(body) - an))
    counts = (an, ns, len(body) - an - ns)
    if draw(st.integers(0, 9)) == 0:
        counts = (draw(st.integers(0, 65535)), 0, 0)
    head = struct.pack("!HHHHHH", qid, flags, 1, *counts)
    question = wire.encode_name(name) + struct.pack("!HH", qtype, 1)
    return head + question + b"".join(body)


@st.composite
def good_responses(draw, qid, name, qtype):
    """A well-formed answer: MX hosts, addresses, a CNAME, NXDOMAIN or an empty answer."""
    hosts = ["mx%d.example.test" % i for i in range(draw(st.integers(0, 3)))]
    if qtype == wire.MX:
        records = [RR(name, wire.MX, 60, (draw(st.integers(0, 20)), h)) for h in hosts] or \
            draw(st.sampled_from([[], [RR(name, wire.MX, 60, (0, "."))],
                                  [RR(name, wire.MX, 60, (5, "me.test"))]]))
    elif qtype == wire.A:
        records = [RR(name, wire.A, 60, "192.0.2.%d" % i) for i in range(len(hosts))]
    else:
        records = [RR(name, wire.AAAA, 60, "2001:db8::%d" % i) for i in range(len(hosts))]
    if draw(st.booleans()) and records:
        records = [RR(name, wire.CNAME, 60, "alias.example.test")] + [
            RR("alias.example.test", r.type, r.ttl, r.data) for r in records]
    rcode = draw(st.sampled_from([wire.NOERROR] * 4 + [wire.NXDOMAIN, wire.SERVFAIL]))
    return wire.build_response(qid, name, qtype, rcode, records)


_any_response = st.one_of(mutated(responses()), responses(), st.binary(max_size=80))


@fuzz_settings()
@given(_any_response, st.sampled_from([wire.MX, wire.A, wire.AAAA]))
def test_parse_response_returns_a_response_or_a_format_error(data, qtype):
    data = data if qtype == wire.MX else data.replace(b"\x00\x0f\x00\x01", struct.pack(
        "!HH", qtype, 1), 1)
    try:
        response = wire.parse_response(data, QID, NAME, qtype)
    except ProtocolError:
        return
    assert isinstance(response, wire.Response)
    for record in response.answers + response.authority:
        assert record.name == record.name.lower() and " " not in record.name
    try:
        records, canonical, ttl = wire.chase(response, NAME, qtype)
        assert 0 <= ttl < 2 ** 31 and all(r.type == qtype for r in records)
    except ProtocolError:
        pass
    assert wire.negative_ttl(response) >= 0


class Server:
    """One UDP and one TCP socket on the same loopback port, answered by the test."""

    def __init__(self, answer):
        self.answer = answer        # answer(qid, name, qtype) -> bytes
        for _ in range(50):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(self.udp.getsockname())
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen(8)
        for sock in (self.udp, self.tcp):
            sock.setblocking(False)
        self.address = self.udp.getsockname()
        self.asked = 0
        self.conns = []

    def serve(self):
        """Answer whatever questions wait; return True if there were any."""
        served = False
        while True:
            try:
                data, peer = self.udp.recvfrom(4096)
            except BlockingIOError:
                break
            self.udp.sendto(self._reply(data), peer)
            served = True
        while True:
            try:
                conn, _ = self.tcp.accept()
            except BlockingIOError:
                break
            conn.setblocking(False)
            self.conns.append([conn, b""])
        for entry in list(self.conns):
            conn, buffer = entry
            try:
                chunk = conn.recv(4096)
            except BlockingIOError:
                continue
            message, entry[1] = wire.unframe(buffer + chunk)
            if message is not None:
                conn.setblocking(True)
                conn.sendall(wire.frame(self._reply(message)[:65535]))
            if message is not None or not chunk:
                conn.close()
                self.conns.remove(entry)
            served = True
        return served

    def _reply(self, data):
        self.asked += 1
        qid, name, qtype = wire.parse_query(data)
        return self.answer(qid, name, qtype)

    def close(self):
        for conn, _ in self.conns:
            conn.close()
        self.udp.close()
        self.tcp.close()


def resolve(make_answer, ask):
    """Run one lookup against a server answering with make_answer; return the results."""
    clock = FakeClock()
    loop = Loop(clock=clock)
    errors = []
    loop.on_error = errors.append
    server = Server(make_answer)
    resolver = MailResolver(loop, servers=[server.address], timeout=3.0, attempts=2,
                            own_names=("me.test",))
    results = []
    try:
        ask(resolver, results.append)
        for _ in range(500):
            loop.run_once(block=False)
            if server.serve():
                continue
            if results and not resolver.pending:
                break
            deadline = loop.next_deadline()
            if deadline is not None:
                clock.advance(max(0.0, deadline - clock.monotonic()))
        for _ in range(3):
            loop.run_once(block=False)
        assert errors == []
        assert resolver.pending == {} and loop.next_deadline() is None
        assert len(loop.selector.get_map()) == 0
        return results
    finally:
        server.close()
        loop.close()


@fuzz_settings(weight=3)
@given(st.data())
def test_the_resolver_answers_any_reply_exactly_once(data):
    def answer(qid, name, qtype):
        return data.draw(st.one_of(good_responses(qid, name, qtype),
                                   good_responses(qid, name, qtype),
                                   responses(qid, name, qtype),
                                   mutated(responses(qid, name, qtype)),
                                   st.binary(max_size=40)))
    mx = resolve(answer, lambda resolver, done: resolver.resolve_mx("example.test", done))
    assert len(mx) == 1 and isinstance(mx[0], MXResult)
    result = mx[0]
    event("MX: %s" % (result.error.status if result.error else "%d host(s)" % len(result.hosts)))
    assert (result.error is None) == bool(result.hosts)
    for host, addresses in result.hosts:
        assert isinstance(host, str) and all(isinstance(a, str) for a in addresses)
    hosts = resolve(answer, lambda resolver, done: resolver.addresses(NAME, done))
    assert len(hosts) == 1 and isinstance(hosts[0], dns.HostResult)
