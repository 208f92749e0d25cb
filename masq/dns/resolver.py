"""The stub resolver: answer DNS questions inside the loop, never blocking.

Owns: the exchanges with the configured name servers (a fresh non-blocking UDP socket with a
kernel-chosen source port and a random 16-bit id per try, retried over servers and attempts,
repeated over TCP when the answer is truncated), following CNAME chains, a small TTL cache
(positive and negative, bounded), and the addresses of a host: first from the hosts file
(`/etc/hosts`, or option `hosts_file`), as the C library's resolver does, then from DNS.
The MX question (ordering,
null MX, implicit MX, the own-host loop rule) is `masq/dns/mx.py`, which builds on this module
(never the other way).
Does not decide what to do with a failure: results carry an error with an enhanced status
code and `temporary`, and the caller defers or bounces. The wire format is `masq/proto/dns.py`.

Hostile input: every datagram that reaches our sockets. A packet whose id or question is not
ours is ignored and the exchange keeps waiting; the sockets are connected to the server's IP
literal, so the kernel drops datagrams from other sources. Names from answers are re-checked
by the codec before they are ever queried. Hostnames never reach `socket` (servers are IP
literals); nothing blocks except reading /etc/resolv.conf and the hosts file, which are
local files (re-read only when they change).

Errors: timeouts, SERVFAIL, REFUSED, malformed answers and network errors are temporary
(4.4.3); NXDOMAIN is permanent (5.1.2); the MX errors are listed in `masq/dns/mx.py`.
Every callback runs exactly once, from the loop, never inside the call that asked.
Idle means idle: with nothing pending, the resolver holds no timer and no socket.
"""

import errno
import ipaddress
import os
import socket

from masq.base import reads
from masq.proto import Factory, frozen, replace
from masq.proto import dns as wire
from masq.proto.dns import A, AAAA, MX
from masq.proto.errors import ProtocolError

__all__ = [
    "A", "AAAA", "MX", "MAX_CNAME", "CACHE_SIZE", "MAX_TTL", "MAX_NEGATIVE_TTL", "DNSError",
    "DNSResult", "HostResult", "temporary", "parse_server", "read_resolv_conf", "read_hosts",
    "address_literal", "Resolver"]

MAX_CNAME = 8
CACHE_SIZE = 256
MAX_TTL = 3600
MAX_NEGATIVE_TTL = 300
_RCODES = {1: "FORMERR", 2: "SERVFAIL", 4: "NOTIMP", 5: "REFUSED"}


@frozen
class DNSError:
    """Why a lookup failed: temporary (defer) or not (bounce), an enhanced code and text."""
    temporary: bool
    status: str
    text: str


@frozen
class DNSResult:
    """One question's answer: records of qtype at the end of any CNAME chain, or an error."""
    name: str
    qtype: int
    records: tuple = ()
    canonical: str = ""
    error: DNSError = None
    ttl: int = 0


@frozen
class HostResult:
    """A host's addresses (IPv4 first, then IPv6), or an error."""
    name: str
    addresses: list = Factory(list)
    error: DNSError = None


def temporary(text):
    """Return a temporary DNS error (4.4.3)."""
    return DNSError(True, "4.4.3", text)


def _not_found(name):
    return DNSError(False, "5.1.2", "Host or domain name not found: %s" % name)


def parse_server(text):
    """Return (ip, port) from '1.2.3.4', '1.2.3.4:5353', '::1' or '[::1]:53'; else ValueError."""
    from masq.config.kinds import parse_ip_port   # one parser: the configuration checks with it
    return parse_ip_port(text, 53)


def read_resolv_conf(path="/etc/resolv.conf"):
    """Return the (ip, 53) name servers listed in a resolv.conf (at most three)."""
    try:
        with open(path, encoding="ascii", errors="replace") as lines:
            words = [line.split() for line in lines]
    except OSError:
        return []
    found = [address_literal(w[1]) for w in words if len(w) >= 2 and w[0] == "nameserver"]
    return [(ip, 53) for ip in found if ip][:3]


def read_hosts(path="/etc/hosts"):
    """Return {name: [ip, ...]} from a hosts file: names normalized, IPv4 before IPv6."""
    found = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                words = line.partition("#")[0].split()
                ip = address_literal(words[0]) if len(words) >= 2 and \
                    not words[0].startswith("[") else None
                if ip is None:
                    continue
                for name in words[1:]:
                    ips = found.setdefault(wire.normalize(name), [])
                    if ip not in ips:
                        ips.append(ip)
    except OSError:
        return {}
    for ips in found.values():
        ips.sort(key=lambda ip: ":" in ip)
    return found


def address_literal(text):
    """Return the IP in '1.2.3.4', '[1.2.3.4]' or '[IPv6:::1]', or None if text is a name."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


class _Exchange:
    """One question put to the servers in turn: UDP, TCP when truncated, retries on failure."""

    def __init__(self, resolver, name, qtype, depth):
        self.resolver, self.loop = resolver, resolver.loop
        self.name, self.qtype, self.depth = name, qtype, depth
        self.tries = [s for _ in range(resolver.attempts) for s in resolver.servers()]
        self.callbacks = []
        self.sock = self.timer = self.server = None
        self.qid, self.outgoing, self.buffer = 0, b"", b""
        self.last_error = "no name server"

    def next_try(self, reason=None):
        """Drop the current try and start the next one, or fail when none are left."""
        self.drop()
        self.last_error = reason or self.last_error
        while self.tries:
            self.server = self.tries.pop(0)
            self.qid = int.from_bytes(os.urandom(2), "big")
            try:
                self.sock = _socket(self.server, socket.SOCK_DGRAM)
                self.sock.connect(self.server)
                self.sock.send(wire.build_query(self.qid, self.name, self.qtype))
            except OSError as exc:
                self.drop()
                self.last_error = "%s: %s" % (self.server[0], exc.strerror or exc)
                continue
            self.loop.add_reader(self.sock, self._on_udp)
            self.timer = self.loop.call_later(self.resolver.timeout, self._on_timeout)
            return
        self.resolver.finished(self, None, temporary(
            "DNS lookup of %s failed: %s" % (self.name, self.last_error)))

    def drop(self):
        """Close the socket and cancel the timer of the current try."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sock is not None:
            self.loop.remove_reader(self.sock)
            self.loop.remove_writer(self.sock)
            self.sock.close()
            self.sock = None

    def _failed(self, what, exc=None):
        detail = (exc.strerror or str(exc)) if exc is not None else ""
        self.next_try("%s: %s%s" % (self.server[0], what, detail))

    def _on_timeout(self):
        self.timer = None
        self._failed("timeout")

    def _on_udp(self):
        for _ in range(16):
            try:
                data = reads.for_loop(self.loop).recv(self.sock, 65535)
            except BlockingIOError:
                return
            except OSError as exc:
                return self._failed("", exc)
            try:
                response = wire.parse_response(data, self.qid, self.name, self.qtype)
            except ProtocolError:
                continue
            return self._answer(response)

    def _answer(self, response):
        if response.tc and self.sock.type == socket.SOCK_DGRAM:
            return self._start_tcp()
        if response.tc:
            return self._failed("truncated answer over TCP")
        if response.rcode not in (wire.NOERROR, wire.NXDOMAIN):
            return self._failed(_RCODES.get(response.rcode, "rcode %d" % response.rcode))
        self.drop()
        self.resolver.finished(self, response, None)

    def _start_tcp(self):
        self.drop()
        self.qid = int.from_bytes(os.urandom(2), "big")
        self.outgoing = wire.frame(wire.build_query(self.qid, self.name, self.qtype))
        self.buffer = b""
        try:
            self.sock = _socket(self.server, socket.SOCK_STREAM)
            code = self.sock.connect_ex(self.server)
        except OSError as exc:
            return self._failed("TCP: ", exc)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            return self._failed("TCP: ", OSError(code, os.strerror(code)))
        self.loop.add_writer(self.sock, self._on_tcp_writable)
        self.timer = self.loop.call_later(self.resolver.timeout, self._on_timeout)

    def _on_tcp_writable(self):
        try:
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            sent = self.sock.send(self.outgoing)
        except BlockingIOError:
            return
        except OSError as exc:
            return self._failed("TCP: ", exc)
        self.outgoing = self.outgoing[sent:]
        if not self.outgoing:
            self.loop.remove_writer(self.sock)
            self.loop.add_reader(self.sock, self._on_tcp_readable)

    def _on_tcp_readable(self):
        try:
            data = reads.for_loop(self.loop).recv(self.sock)
        except BlockingIOError:
            return
        except OSError as exc:
            return self._failed("TCP: ", exc)
        if not data:
            return self._failed("TCP connection closed early")
        message, self.buffer = wire.unframe(self.buffer + data)
        if message is None:
            return
        try:
            response = wire.parse_response(message, self.qid, self.name, self.qtype)
        except ProtocolError:
            return self._failed("malformed answer over TCP")
        self._answer(response)


def _stamp(path):
    """Return what tells whether a file changed (None if it cannot be read)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _socket(server, kind):
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setblocking(False)
    return sock


class Resolver:
    """Ask name servers from inside the loop; every answer comes back through a callback."""

    def __init__(self, loop, servers=None, timeout=3.0, attempts=2, own_names=(),
                 own_addresses=(), resolv_conf="/etc/resolv.conf", hosts_file="/etc/hosts"):
        self.loop, self.timeout, self.attempts = loop, timeout, max(1, attempts)
        self.fixed_servers = list(servers) if servers else None
        self.resolv_conf, self.resolv_stamp, self.resolv_servers = resolv_conf, None, []
        self.hosts_file, self.hosts_stamp, self.hosts = hosts_file, None, {}
        self.own_names = {wire.normalize(n) for n in own_names}
        self.own_addresses = {str(ipaddress.ip_address(a)) for a in own_addresses}
        self.pending = {}
        self.cache = {}
        self.closed = False

    def servers(self):
        """Return the servers to ask: the fixed list, else resolv.conf (re-read when changed)."""
        if self.fixed_servers:
            return self.fixed_servers
        stamp = _stamp(self.resolv_conf)
        if stamp != self.resolv_stamp or not self.resolv_servers:
            self.resolv_stamp = stamp
            self.resolv_servers = read_resolv_conf(self.resolv_conf) or [("127.0.0.1", 53)]
        return self.resolv_servers

    def hosts_entry(self, name):
        """Return the addresses the hosts file gives name (re-read when changed), or None."""
        if not self.hosts_file:
            return None
        stamp = _stamp(self.hosts_file)
        if stamp != self.hosts_stamp:
            self.hosts_stamp, self.hosts = stamp, read_hosts(self.hosts_file)
        return self.hosts.get(wire.normalize(name))

    # single questions

    def query(self, name, qtype, callback):
        """Ask (name, qtype); callback(DNSResult) later, exactly once."""
        self._query(name, qtype, callback, 0)

    def _query(self, name, qtype, callback, depth):
        key = (wire.normalize(name), qtype)
        if self.closed:
            return self._soon(callback, DNSResult(key[0], qtype, error=temporary(
                "resolver closed")))
        try:
            wire.encode_name(key[0])
        except ValueError:
            return self._soon(callback, DNSResult(key[0], qtype, error=DNSError(
                False, "5.1.2", "invalid domain name: %s" % key[0])))
        cached = self.cache.get(key)
        if cached is not None and cached[0] > self.loop.now:
            return self._soon(callback, cached[1])
        exchange = self.pending.get(key)
        if exchange is None:
            exchange = self.pending[key] = _Exchange(self, key[0], qtype, depth)
            exchange.next_try()
        exchange.callbacks.append(callback)

    def finished(self, exchange, response, error):
        """Turn an exchange's response (or error) into a result and deliver it."""
        if self.pending.get((exchange.name, exchange.qtype)) is exchange:
            del self.pending[(exchange.name, exchange.qtype)]
        if error is not None:
            return self._deliver(exchange, DNSResult(exchange.name, exchange.qtype, error=error))
        result, follow = _interpret(exchange.name, exchange.qtype, response)
        if follow is None:
            return self._deliver(exchange, result)
        if exchange.depth >= MAX_CNAME:
            return self._deliver(exchange, replace(result, error=temporary(
                "CNAME chain too long at %s" % exchange.name)))

        def followed(target):
            self._deliver(exchange, replace(target, name=exchange.name,
                                            ttl=min(target.ttl, result.ttl)))
        self._query(follow, exchange.qtype, followed, exchange.depth + 1)

    def _deliver(self, exchange, result):
        self._remember(result)
        for callback in exchange.callbacks:
            self._soon(callback, result)

    def _soon(self, callback, result):
        self.loop.call_soon(lambda: callback(result))

    def _remember(self, result):
        if result.ttl <= 0 or (result.error is not None and result.error.temporary):
            return
        now = self.loop.now
        if len(self.cache) >= CACHE_SIZE:
            self.cache = {key: entry for key, entry in self.cache.items() if entry[0] > now}
        while len(self.cache) >= CACHE_SIZE:
            del self.cache[next(iter(self.cache))]
        self.cache[(result.name, result.qtype)] = (now + result.ttl, result)

    def close(self):
        """Abandon every pending question (their callbacks get a temporary error)."""
        self.closed = True
        for exchange in list(self.pending.values()):
            exchange.tries = []
            exchange.next_try("resolver closed")
        self.pending.clear()
        self.cache.clear()

    # mail routing

    def resolve_host(self, name, callback):
        """Find a host's A and AAAA addresses; callback(HostResult) later, exactly once."""
        literal = address_literal(name)
        if literal is not None:
            return self._soon(callback, HostResult(name, [literal]))
        self.addresses(name, callback)

    def addresses(self, name, callback):
        """Find a name's addresses in the hosts file, else ask for its A and AAAA records;
        callback(HostResult) later, exactly once."""
        listed = self.hosts_entry(name)
        if listed:
            return self._soon(callback, HostResult(name, list(listed)))
        results = {}

        def got(result):
            results[result.qtype] = result
            if len(results) == 2:
                callback(_host_result(name, results[A], results[AAAA]))
        self.query(name, A, got)
        self.query(name, AAAA, got)


def _interpret(name, qtype, response):
    """Return (DNSResult, None) for a final answer, or (partial result, name to follow)."""
    negative = min(wire.negative_ttl(response), MAX_NEGATIVE_TTL)
    if response.rcode == wire.NXDOMAIN:
        return DNSResult(name, qtype, error=_not_found(name), ttl=negative), None
    try:
        records, canonical, ttl = wire.chase(response, name, qtype, MAX_CNAME)
    except ProtocolError as exc:
        return DNSResult(name, qtype, error=temporary(str(exc))), None
    follow = canonical if not records and canonical != name else None
    ttl = min(ttl, MAX_TTL) if records or follow else negative
    return DNSResult(name, qtype, records, canonical, ttl=ttl), follow


def _host_result(name, a_result, aaaa_result):
    addresses = [r.data for r in a_result.records + aaaa_result.records]
    if addresses:
        return HostResult(name, addresses)
    errors = [r.error for r in (a_result, aaaa_result) if r.error is not None]
    errors.sort(key=lambda error: not error.temporary)
    return HostResult(name, error=errors[0] if errors else DNSError(
        False, "5.1.2", "No address for %s" % name))

