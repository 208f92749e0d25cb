"""Fetching survives crashes and hostile servers: never lose, never fetch twice.

SIGKILL at every fdatasync of a run (the queue's group commit, the UID state file's
append: strace fault injection), SIGKILL in the middle of RETR, Dovecot's connection
dropped mid-message (a proxy in the test cuts it), a server that answers garbage and one
that never answers: afterwards each message is delivered exactly once and the server
keeps what masq did not take.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

import dovecot
from helpers import ROOT, Daemon, masq, wait_for, write_config

pytestmark = pytest.mark.skipif(not dovecot.available(), reason="dovecot not installed")

USERS = {"c%d" % i: "pw%d" % i for i in range(6)}
# Mail is only queued (and delivered by `masq flush` at the end): a local delivery cut by
# a kill or a stop may be made twice (the queue's rule), and these tests count what
# fetching did.
QUEUE_ONLY = "\toption do_queue '1'\n"


@pytest.fixture(scope="module")
def server():
    dv = dovecot.Dovecot(USERS).start()
    yield dv
    dv.stop()


def message(n, size=0):
    filler = b"".join(b"filler line %06d of message %d\n" % (i, n) for i in range(size // 32))
    return (b"From: s%d@example.org\nSubject: crash test %d\nMessage-ID: <m%d@test>\n\n"
            b"text of %d\n%s" % (n, n, n, n, filler))


def setup(tmp_path, user, port, ca, options="", main=""):
    spool = str(tmp_path / "spool")
    fetch = ("config fetch 'box'\n\toption server '127.0.0.1:%d'\n\toption tls_ca '%s'\n"
             "\toption user '%s'\n\toption password '%s'\n\toption deliver_to 'mqfetch'\n%s"
             % (port, ca, user, USERS.get(user, "x"), options))
    return write_config(str(tmp_path / "masq.conf"), spool,
                        extra="\tlist local_users 'mqfetch'\n" + main, routes=fetch)


def delivered_ids(tmp_path):
    path = tmp_path / "mail" / "mqfetch"
    text = path.read_bytes() if path.exists() else b""
    return re.findall(rb"^Message-ID: <(m\d+)@test>", text, re.M | re.I)


def fetch(conf):
    done = masq("fetch", "-C", conf, timeout=120)
    return done.returncode, (done.stdout + done.stderr).decode()


class TracedDaemon(Daemon):
    """The daemon under strace: SIGKILL at its `when`-th fdatasync (or only counting)."""

    def __init__(self, conf, when=None, log=None):
        super().__init__(conf)
        self.when, self.log = when, log

    def start(self):
        import time
        environ = dict(os.environ, PYTHONPATH=ROOT)
        rule = ["-e", "inject=fdatasync:signal=SIGKILL:when=%d" % self.when] if self.when \
            else []
        self.output = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-e", "trace=fdatasync", "-o", self.log or os.devnull]
            + rule + [sys.executable, "-m", "masq", "-C", self.conf, "daemon"],
            stdout=self.output, stderr=subprocess.STDOUT, env=environ, cwd=ROOT,
            start_new_session=True)
        deadline = time.time() + 60             # a bound on a hung start, not a timing
        while time.time() < deadline:
            if self._ready():
                return self
            time.sleep(0.05)
        raise RuntimeError("daemon did not come up: %s" % self._read())

    def stop(self, sig=None):
        """Stop the daemon, not only strace: a signalled strace detaches and leaves masq
        running, so the signal goes to the whole group (strace and the daemon)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig or signal.SIGTERM)
            except ProcessLookupError:
                pass
        out = super().stop(sig)
        return out


def restart(conf):
    """Start a daemon after one was killed (whose control socket file is left behind)."""
    spool = os.path.join(os.path.dirname(conf), "spool")
    try:
        os.unlink(os.path.join(spool, "control.sock"))
    except FileNotFoundError:
        pass
    return Daemon(conf).start()


def fill(server, user, count, size=0):
    server.clear(user)
    for n in range(count):
        server.deliver(user, message(n, size))


@pytest.mark.skipif(not shutil.which("strace"), reason="strace missing")
@pytest.mark.parametrize("protocol,user", [("pop3", "c0"), ("imap", "c4")])
def test_sigkill_at_every_sync_neither_loses_nor_duplicates(tmp_path, server, protocol,
                                                            user):
    options = "\toption protocol '%s'\n" % protocol
    count_log = str(tmp_path / "strace.log")
    fill(server, user, 3)
    conf = setup(tmp_path / "count", user, server.ports[protocol], server.ca, options,
                 main=QUEUE_ONLY)
    daemon = TracedDaemon(conf, log=count_log).start()
    try:
        assert "box: 3 taken" in fetch(conf)[1]
    finally:
        daemon.stop()
    syncs = sum(1 for line in open(count_log) if "fdatasync(" in line)
    assert syncs >= 4            # the queue's and the state file's, for 3 messages
    for when in range(1, syncs + 1):
        base = tmp_path / ("kill%d" % when)
        fill(server, user, 3)
        conf = setup(base, user, server.ports[protocol], server.ca, options, main=QUEUE_ONLY)
        daemon = TracedDaemon(conf, when=when).start()
        try:
            fetch(conf)                            # the daemon dies on the way
            assert daemon.proc.wait(timeout=30) is not None
        finally:
            daemon.stop()
        daemon = restart(conf)                    # recovers, fetches the rest
        try:
            code, out = fetch(conf)
            assert code == 0, (when, out)
            fetch(conf)
            assert masq("flush", "-C", conf).returncode == 0
            assert sorted(delivered_ids(base)) == [b"m0", b"m1", b"m2"], when
            assert server.count(user) == 0, when
        finally:
            daemon.stop()


class Proxy:
    """Forwards one TCP connection at a time to a port; after `limit` octets from the
    server it calls `on_limit` (kill masq) or, by default, cuts the connection."""

    def __init__(self, port, limit, on_limit=None):
        self.port, self.limit, self.on_limit = port, limit, on_limit
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.listen_port = self.sock.getsockname()[1]
        self.fired = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pump, args=(client, upstream, None),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.limit),
                             daemon=True).start()

    def _pump(self, src, dst, limit):
        passed = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and not self.fired.is_set() and \
                        passed + len(data) > limit:
                    dst.sendall(data[:limit - passed])
                    self.fired.set()
                    if self.on_limit:
                        self.on_limit()
                    break
                dst.sendall(data)
                passed += len(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.sock.close()


def test_sigkill_during_retr(tmp_path, server):
    fill(server, "c1", 2, size=400000)
    conf = setup(tmp_path, "c1", 0, server.ca, "\toption tls 'none'\n", main=QUEUE_ONLY)
    daemons = []
    proxy = Proxy(server.ports["pop3"], 300000,
                  on_limit=lambda: daemons[0].proc.send_signal(signal.SIGKILL))
    edit(conf, "127.0.0.1:0", "127.0.0.1:%d" % proxy.listen_port)
    daemons.append(Daemon(conf).start())
    try:
        fetch(conf)
        assert proxy.fired.is_set()
        assert wait_for(lambda: daemons[0].proc.poll() is not None)
    finally:
        daemons[0].stop()
        proxy.close()
    edit(conf, "127.0.0.1:%d" % proxy.listen_port, "127.0.0.1:%d" % server.ports["pop3"])
    daemon = restart(conf)
    try:
        code, out = fetch(conf)
        assert code == 0, out
        assert masq("flush", "-C", conf).returncode == 0
        assert sorted(delivered_ids(tmp_path)) == [b"m0", b"m1"]
        assert server.count("c1") == 0
        assert masq("queue", "-C", conf).stdout.count(b"mqfetch") == 0
    finally:
        daemon.stop()


def test_server_drops_mid_message(tmp_path, server):
    fill(server, "c2", 2, size=200000)
    conf = setup(tmp_path, "c2", 0, server.ca, "\toption tls 'none'\n", main=QUEUE_ONLY)
    proxy = Proxy(server.ports["pop3"], 300000)      # inside the second message
    edit(conf, "127.0.0.1:0", "127.0.0.1:%d" % proxy.listen_port)
    daemon = Daemon(conf).start()
    try:
        code, out = fetch(conf)
        assert code == 75 and "box: 1 taken" in out, out
        assert server.count("c2") == 2              # no QUIT: nothing was deleted
        edit(conf, "127.0.0.1:%d" % proxy.listen_port, "127.0.0.1:%d" % server.ports["pop3"])
        daemon.stop()
        daemon = Daemon(conf).start()
        code, out = fetch(conf)
        assert code == 0 and "box: 1 taken" in out, out
        assert masq("flush", "-C", conf).returncode == 0
        assert sorted(delivered_ids(tmp_path)) == [b"m0", b"m1"]
        assert server.count("c2") == 0
    finally:
        daemon.stop()
        proxy.close()


def edit(conf, old, new):
    with open(conf) as src:
        text = src.read()
    assert old in text
    with open(conf, "w") as out:
        out.write(text.replace(old, new))


class ScriptedServer:
    """A POP3 'server' that sends `script` (bytes, or a function of the line it got)."""

    def __init__(self, greeting, answer):
        self.greeting, self.answer = greeting, answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.sendall(self.greeting)
                for line in conn.makefile("rb"):
                    reply = self.answer(line)
                    if reply is None:
                        continue
                    conn.sendall(reply)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("greeting,answer,expect", [
    (b"220 smtp.example ESMTP\r\n", lambda line: b"500 what\r\n", "protocol error"),
    (b"+OK hi\r\n", lambda line: b"\x00\xff garbage\r\n" * 3, "protocol error"),
    (b"+OK hi\r\n", lambda line: b"+OK\r\n" + b"A" * 100000, "protocol error"),
    (b"+OK hi\r\n", lambda line: None, "timeout"),
])
def test_hostile_servers_end_the_run_cleanly(tmp_path, greeting, answer, expect):
    fake = ScriptedServer(greeting, answer)
    conf = setup(tmp_path, "c3", fake.port, "/nonexistent",
                 "\toption tls 'none'\n\toption timeout '2s'\n")
    daemon = Daemon(conf).start()
    try:
        code, out = fetch(conf)
        assert code == 75 and expect in out, out
        assert masq("status", "-C", conf).returncode == 0     # the daemon goes on
        code, out = fetch(conf)
        assert code == 75 and expect in out, out
    finally:
        daemon.stop()
        fake.close()
