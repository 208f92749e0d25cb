"""Hostile SMTP clients (issue 12 cases 1-3), driven as an attacker would: raw sockets on
loopback against a running daemon with short configured deadlines.

1. TLS handshakes that never start must not hold connection slots forever.
2. Pipelined input is processed without recursion, and replies buffered for a client that
   does not read are bounded.
3. A client trickling DATA one byte at a time is dropped at its deadline, and the
   per-address limit (an IPv6 client counted by its /64) keeps slots for other clients.
No test asserts a duration: each waits (with a generous socket timeout) for what the
server must do, and the old code never did it at all.
"""

import fcntl
import json
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import termios
import threading

import pytest

from fakes import FakeClock
from helpers import ROOT, Daemon, free_port, wait_for, write_config


def start(tmp_path, extra):
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n\tlist local_users 'bob'\n"
                        % port + extra)
    return port, Daemon(conf, wait_port=port).start()


def connect(port, source="127.0.0.1", timeout=15):
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock):
    """Read until the server closes; return everything it sent."""
    data = b""
    while True:
        part = sock.recv(65536)
        if not part:
            return data
        data += part


def read_reply(sock):
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        part = sock.recv(4096)
        if not part:
            break
        data += part
    return data


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    base = tmp_path_factory.mktemp("cert")
    cert, key = str(base / "cert.pem"), str(base / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=localhost", "-days", "2", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


# 1. TLS handshakes have a deadline


def test_silent_smtps_clients_are_dropped_and_new_clients_get_in(tmp_path, cert):
    smtps = free_port()
    port, daemon = start(tmp_path, (
        "\toption tls_cert '%s'\n\toption tls_key '%s'\n\tlist listen 'smtps://127.0.0.1:%d'\n"
        "\toption smtp_timeout '2s'\n\toption max_connections '5'\n"
        "\toption max_connections_per_ip '5'\n" % (cert[0], cert[1], smtps)))
    try:
        wait_for(lambda: not daemon_busy(port))
        silent = [connect(smtps, timeout=20) for _ in range(5)]     # never a ClientHello
        for sock in silent:
            assert read_all(sock) == b""        # closed by the server, nothing in plaintext
            sock.close()
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with context.wrap_socket(connect(smtps), server_hostname="localhost") as tls:
            assert read_reply(tls).startswith(b"220 ")
    finally:
        output = daemon.stop()
    assert "TLS handshake" in output and "timed out" in output


def test_a_stalled_starttls_handshake_is_dropped(tmp_path, cert):
    port, daemon = start(tmp_path, (
        "\toption tls_cert '%s'\n\toption tls_key '%s'\n\toption smtp_timeout '2s'\n"
        % cert))
    try:
        sock = connect(port, timeout=20)
        assert read_reply(sock).startswith(b"220 ")
        sock.sendall(b"EHLO attacker\r\n")
        assert b"STARTTLS" in read_reply(sock)
        sock.sendall(b"STARTTLS\r\n")
        assert read_reply(sock).startswith(b"220 ")
        assert read_all(sock) == b""            # no ClientHello: closed, no plaintext 421
        sock.close()
    finally:
        daemon.stop()


def test_plaintext_pipelined_after_starttls_is_never_executed(tmp_path, cert):
    """More than one slice of plaintext after STARTTLS (CVE-2011-0411's class): none of it
    may reach the engine once TLS is up."""
    port, daemon = start(tmp_path, "\toption tls_cert '%s'\n\toption tls_key '%s'\n" % cert)
    try:
        sock = connect(port)
        assert read_reply(sock).startswith(b"220 ")
        sock.sendall(b"EHLO x\r\nSTARTTLS\r\n" + b"NOOP\r\n" * 3000)
        replies = b""
        while b"220 2.0.0" not in replies:
            replies += sock.recv(4096)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"EHLO x\r\n")
            assert read_reply(tls).startswith(b"250-test.example")
    finally:
        daemon.stop()


def daemon_busy(port):
    """Return True while the readiness probe's connection may still hold a slot."""
    try:
        sock = connect(port, timeout=30)
    except OSError:
        return True
    with sock:
        busy = not read_reply(sock).startswith(b"220 ")
        sock.sendall(b"QUIT\r\n")
        read_all(sock)
    return busy


# 2. Pipelining


def test_400_pipelined_commands_in_one_read_get_400_replies(tmp_path):
    port, daemon = start(tmp_path, "")
    try:
        sock = connect(port)
        assert read_reply(sock).startswith(b"220 ")
        sock.sendall(b"HELO x\r\n" * 400 + b"QUIT\r\n")
        lines = read_all(sock).split(b"\r\n")
        assert lines.count(b"250 test.example") == 400
        assert lines[400].startswith(b"221 ")
    finally:
        output = daemon.stop()
    assert "RecursionError" not in output and "internal error" not in output


def unread(server_port, client_port):
    """Return the octets the kernel holds for the server's end of the connection from
    client_port that the server has not read (its receive queue), or None if not found."""
    for line in open("/proc/net/tcp").readlines()[1:]:
        parts = line.split()
        if (parts[1].endswith(":%04X" % server_port)
                and parts[2].endswith(":%04X" % client_port)):
            return int(parts[4].split(":")[1], 16)
    return None


def asleep(pid):
    """Return True if process pid is sleeping (not running, not runnable)."""
    with open("/proc/%d/stat" % pid) as stat:
        return stat.read().rpartition(")")[2].split()[0] == "S"


def test_a_client_that_never_reads_its_replies_is_not_buffered_for(tmp_path):
    """The daemon stops reading from a client that does not read its replies. What it has
    read is counted without the kernel's buffers (the receive buffer grows with the
    load, up to tcp_rmem's maximum): what was sent, less what waits in the client's send
    queue and in the server's receive queue. It has stopped reading when it sleeps, its
    socket holds input, and it read nothing meanwhile: a state, not a time."""
    from masq.base.net import HIGH_WATER
    port, daemon = start(tmp_path, "")
    with open("/proc/sys/net/ipv4/tcp_wmem") as wmem:
        kernel_out = int(wmem.read().split()[2])
    limit = HIGH_WATER + kernel_out + (64 << 10)   # no reply is shorter than its NOOP
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        client_port = sock.getsockname()[1]

        def taken():
            waiting = unread(port, client_port)
            unsent = struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0]
            return sent - unsent - waiting, waiting

        chunk, sent, still = b"NOOP\r\n" * 10000, 0, 0
        while still < 3:
            try:
                sent += sock.send(chunk)
                still = 0
                continue
            except BlockingIOError:
                pass
            before, waiting = taken()
            assert before < limit, "the daemon read %d octets" % before
            sleeping = asleep(daemon.proc.pid)
            after, _ = taken()
            still = still + 1 if waiting and sleeping and after == before else 0
            select.select([], [sock], [], 0.2)  # a pause between looks, not a deadline
        assert before < limit
        sock.close()
    finally:
        daemon.stop()


def test_a_client_that_reads_late_still_gets_every_reply(tmp_path):
    port, daemon = start(tmp_path, "")
    count = 200000
    try:
        sock = connect(port, timeout=60)
        sender = threading.Thread(target=sock.sendall, args=(b"NOOP\r\n" * count + b"QUIT\r\n",))
        sender.start()
        sender.join(0.5)                        # the server stops reading meanwhile
        lines = read_all(sock).split(b"\r\n")
        sender.join()
        assert lines[0].startswith(b"220 ")
        assert sum(line.startswith(b"250 ") for line in lines) == count
        assert lines[count + 1].startswith(b"221 ")
    finally:
        daemon.stop()


class Host:
    """What an SMTPServerSession asks of its listener, for a session on a socketpair."""

    def __init__(self, loop):
        self.loop = loop
        self.settings = type("Settings", (), {"min_data_rate": 500, "refuse_bare": False,
                                                "defer_all": False, "save_envelope_to": False,
                                                "greet_delay": 0, "archive": None,
                                                "greylist": None})
        self.log = type("Log", (), {"info": lambda *a: None, "error": lambda *a: None})

    def timeout(self):
        return 300.0

    def session_closed(self, session):
        pass


def held_for_a_client_that_never_reads(wire, max_size):
    """Feed wire to a session on a socketpair whose client never reads (small socket
    buffers), as far as the session takes it in 200 loop turns; return (octets the server
    took, octets of replies and input it holds)."""
    from masq.inbound.session import SMTPServerSession
    from masq.base.loop import Loop
    from masq.base.net import Stream
    from masq.proto.smtp_server import SMTPServer
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    loop = Loop()
    try:
        transport = Stream(loop, ours, None, None)
        session = SMTPServerSession(Host(loop), transport, None,
                                    SMTPServer("mx.test", max_size=max_size))
        transport.on_data, transport.on_close = session.on_data, session.on_close
        session.start()
        theirs.setblocking(False)
        sent = 0
        for _ in range(200):
            try:
                sent += theirs.send(wire[sent:sent + 65536])
            except BlockingIOError:
                pass
            loop.run_once(block=False)
        return sent, transport.unsent() + len(session.out) + len(session.inbox)
    finally:
        loop.close()
        ours.close()
        theirs.close()


def test_replies_held_for_a_client_that_never_reads_stay_bounded():
    """HELP makes 16 times its size in replies: one read (64 KiB) answered at once would
    be 1 MiB held per connection; the session answers one slice at a time."""
    sent, held = held_for_a_client_that_never_reads(b"HELP\r\n" * 2200000, 1000)
    assert sent >= 65536                         # the server did read a whole read's worth
    assert held <= 256 * 1024, held             # it was 1 MiB and more


def test_replies_to_commands_pipelined_behind_a_chunk_stay_bounded():
    """Message text goes to the engine in whole reads (it makes no replies), but only as
    far as it is text: a BDAT chunk refused out of sequence (no MAIL: its octets are
    skipped, and no event stops the engine at its end), then HELP after HELP in the same
    read, is still answered one slice at a time."""
    wire = b"BDAT 9000\r\n" + b"x" * 9000 + b"HELP\r\n" * 20000
    sent, held = held_for_a_client_that_never_reads(wire, 1 << 20)
    assert sent >= 65536                         # the server did read a whole read's worth
    assert held <= 256 * 1024, held


def test_one_error_puts_a_bounded_line_in_the_log():
    from masq.base.logger import Logger, MAX_LINE
    log = Logger("stderr", "info")
    log.error("internal error: %s", "Traceback\n" + "  frame\n" * 20000 + "RecursionError")
    line = log.recent[-1]
    assert len(line) < MAX_LINE + 100
    assert "Traceback" in line and line.endswith("RecursionError")


# 3. Per-address limits: an IPv6 client is one /64


IPV6_CLIENTS = r"""
import json, socket, subprocess, sys
sys.path.insert(0, "tests")
from helpers import Daemon, write_config
for cmd in ("ip link set lo up", "ip -6 addr add fd00::1/64 dev lo nodad",
            "ip -6 addr add fd00::2/64 dev lo nodad", "ip -6 addr add fd00::3/64 dev lo nodad",
            "ip -6 addr add fd00:0:0:1::1/64 dev lo nodad"):
    subprocess.run(cmd.split(), check=True)
base = sys.argv[1]
conf = write_config(base + "/masq.conf", base + "/spool", extra=(
    "\tlist listen 'smtp://[fd00::1]:2525'\n\tlist listen 'smtp://127.0.0.1:2526'\n"
    "\toption max_connections_per_ip '2'\n"))
daemon = Daemon(conf, wait_port=2526).start()
socks, greetings = [], []
try:
    for source in ("fd00::2", "fd00::3", "fd00::1", "fd00:0:0:1::1"):
        sock = socket.socket(socket.AF_INET6)
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("fd00::1", 2525))
        greetings.append(sock.recv(200).decode()[:9])
        socks.append(sock)
finally:
    daemon.stop()
print(json.dumps(greetings))
"""


@pytest.mark.parametrize("ip, key", [
    ("192.0.2.7", "192.0.2.7"), ("2001:db8::1", "2001:db8::/64"),
    ("2001:db8::ffff:1:2", "2001:db8::/64"), ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"), ("fe80::1%eth0", "fe80::/64")])
def test_per_client_limits_count_an_ipv6_client_by_its_64(ip, key):
    from masq.base.net import client_key
    assert client_key(ip) == key


def test_an_ipv6_client_cannot_take_more_slots_by_changing_address_in_its_64(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare(1) and ip(8) for a network namespace")
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", IPV6_CLIENTS,
                           str(tmp_path)], capture_output=True, cwd=ROOT, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["220 test.", "220 test.", "421 4.7.0", "220 test."]


# 4. Slowloris in DATA


def trickle(sock, stop):
    """Send one byte of message text every 0.3 s until the server closes or stop is set."""
    try:
        while not stop.wait(0.3):
            sock.send(b"x")
    except OSError:
        pass


def start_trickling(port, stop, threads, timeout):
    """Open a session from 127.0.0.2, bring it into DATA, and trickle its text in a thread."""
    sock = connect(port, source="127.0.0.2", timeout=timeout)
    sock.sendall(b"EHLO slow\r\nMAIL FROM:<a@b.example>\r\n"
                 b"RCPT TO:<bob@test.example>\r\nDATA\r\n")
    reply = b""
    while b"354 " not in reply:
        reply += sock.recv(4096)
    threads.append(threading.Thread(target=trickle, args=(sock, stop)))
    threads[-1].start()
    return sock


def keep_alive(sock, stop):
    """Send NOOP every second and read its reply until stop is set or the server closes."""
    try:
        read_reply(sock)
        while not stop.wait(1.0):
            sock.sendall(b"NOOP\r\n")
            if not read_reply(sock):
                return
    except OSError:
        pass


def test_data_trickled_one_byte_at_a_time_is_dropped_at_its_deadline(tmp_path):
    """The three trickling sessions must all still be there when the fourth client comes:
    smtp_timeout is long enough for a loaded machine to open them one after another."""
    port, daemon = start(tmp_path, (
        "\toption smtp_timeout '8s'\n\toption smtp_min_data_rate '100'\n"
        "\toption max_connections '6'\n\toption max_connections_per_ip '3'\n"))
    stop, threads, socks = threading.Event(), [], []
    try:
        wait_for(lambda: not daemon_busy(port))
        for n in range(3):
            socks.append(start_trickling(port, stop, threads, timeout=30))
        extra = connect(port, source="127.0.0.2")
        assert read_reply(extra).startswith(b"421 4.7.0")     # per-address limit
        extra.close()
        other = connect(port, source="127.0.0.1")               # a slot for someone else
        assert read_reply(other).startswith(b"220 ")
        other.close()
        for sock in socks:
            tail = read_all(sock)                               # the server ends it
            assert b"421 4.4.2" in tail
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for sock in socks:
            sock.close()
        daemon.stop()


def test_sessions_already_trickling_get_the_short_timeout_once_the_server_is_busy(tmp_path):
    """smtp_timeout is long here; at 80% of max_connections every client, including those
    already in DATA, has 10 s plus what its octets bought at smtp_min_data_rate."""
    port, daemon = start(tmp_path, (
        "\toption smtp_timeout '10m'\n\toption max_connections '5'\n"
        "\toption max_connections_per_ip '5'\n\toption smtp_min_data_rate '100000'\n"))
    stop, threads, socks = threading.Event(), [], []
    try:
        wait_for(lambda: not daemon_busy(port))
        for n in range(2):
            socks.append(start_trickling(port, stop, threads, timeout=60))
        busy = [connect(port, source="127.0.0.3") for _ in range(3)]   # 5 of 5: busy
        for sock in busy:                       # clients that make progress stay
            threads.append(threading.Thread(target=keep_alive, args=(sock, stop)))
            threads[-1].start()
        for sock in socks:
            assert b"421 4.4.2" in read_all(sock)
        socks += busy
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for sock in socks:
            sock.close()
        daemon.stop()


# The same class on the status page: the flush of a closing answer has a deadline too


class BigPage:
    """The part of masq.status.web.StatusWeb a masq.status.serve.Connection uses, answering 4 MB to anything."""

    size = 4000000

    def __init__(self, loop, later):
        self.loop, self.later = loop, later
        self.connections = set()

    def handle(self, conn, req):
        from masq.proto import http
        answer = http.Response(200, (("Content-Type", "text/plain"),), b"x" * self.size)
        if self.later:                  # as POST /flush answers, from a later loop turn
            self.loop.call_soon(lambda: conn.answer(answer))
        else:
            conn.answer(answer)


def page_connection(loop, ours, later=False):
    from masq.status import serve
    page = BigPage(loop, later)
    conn = serve.Connection(page, ours, "127.0.0.1")
    page.connections.add(conn)
    conn.start()
    return page, conn


def test_a_closing_status_answer_bigger_than_the_socket_buffer_arrives_whole():
    from masq.base.loop import Loop
    loop = Loop()
    ours, theirs = socket.socketpair()
    try:
        page, conn = page_connection(loop, ours)
        theirs.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        theirs.setblocking(False)
        data = b""
        while True:
            loop.run_once(block=False)
            try:
                part = theirs.recv(1 << 20)
            except BlockingIOError:
                continue
            if not part:
                break
            data += part
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and len(body) == BigPage.size
    finally:
        loop.close()
        ours.close()
        theirs.close()


@pytest.mark.parametrize("later", [False, True])
def test_a_status_page_client_that_never_reads_a_closing_answer_is_dropped(later):
    """`Connection: close` and a reader that never reads: the answer never drains, and the
    connection (one of the page's 32) must still end at the idle deadline."""
    from masq.base.loop import Loop
    from masq.status import serve
    clock = FakeClock()
    loop = Loop(clock)
    ours, theirs = socket.socketpair()
    try:
        page, conn = page_connection(loop, ours, later)
        theirs.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        for _ in range(20):
            loop.run_once(block=False)
        assert conn.stream.out and not conn.stream.closed          # waiting for the reader
        clock.advance(serve.IDLE_TIMEOUT + 1)
        loop.run_once(block=False)
        assert conn.stream.closed and conn not in page.connections
    finally:
        loop.close()
        ours.close()
        theirs.close()
