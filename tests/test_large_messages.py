"""Large messages leave in flat memory: a 64 MB message goes out by SMTP DATA (to
smtp-sink), by BDAT (to Postfix's smtpd) and by QMTP (to a QMTP server written from the
specification) while the daemon's peak RSS grows by less than 2 MB over its RSS before the
delivery (after a small message by the same route, so the agent's modules are loaded), and
the spool holds the message once.

The peak is the kernel's: VmHWM, reset through /proc/PID/clear_refs just before the
delivery starts, so no sampling can miss it."""

import os
import subprocess

import pytest

from helpers import Daemon, free_port, masq, status, wait_for, wait_port, write_config
from postfix_peer import PostfixSmtpd
import qmtp_peer

SIZE = 64 << 20
LINE = b"x" * 78 + b"\n"


def memory(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as status_file:
        for line in status_file:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields


class Discarding:
    """Postfix's smtp-sink without a dump folder: it reads every message and keeps none."""

    def __init__(self, port):
        self.port = port

    def __enter__(self):
        self.proc = subprocess.Popen(["smtp-sink", "-u", "root", "127.0.0.1:%d" % self.port,
                                      "16"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(5)


class QMTPDiscarding(qmtp_peer.Server):
    """The test's QMTP server, keeping only each package's size."""

    def _session(self, conn):
        self.packages = _Sizes(self.packages)
        super()._session(conn)


class _Sizes(list):
    def append(self, package):
        super().append((len(package[0]), package[1], package[2]))


def peer_for(kind, tmp_path):
    port = free_port()
    if kind == "data":
        return port, "127.0.0.1:%d" % port, Discarding(port)
    if kind == "bdat":
        sink = free_port()
        return port, "127.0.0.1:%d" % port, _Both(Discarding(sink), PostfixSmtpd(port, sink))
    return port, "qmtp:127.0.0.1:%d" % port, QMTPDiscarding(port)


class _Both:
    def __init__(self, *peers):
        self.peers = peers

    def __enter__(self):
        for peer in self.peers:
            peer.__enter__()
        return self.peers[-1]

    def __exit__(self, *exc):
        for peer in reversed(self.peers):
            peer.__exit__(*exc)


def send(conf, size):
    text = b"Subject: large\n\n" + LINE * (size // len(LINE))
    done = masq("-C", conf, "-i", "-f", "me@test.example", "far@example.org", input=text,
                timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("kind", ["data", "bdat", "qmtp"])
def test_a_64_mb_message_leaves_in_flat_memory(tmp_path, kind):
    port, smarthost, peer = peer_for(kind, tmp_path)
    spool = str(tmp_path / "spool")
    conf = write_config(str(tmp_path / "masq.conf"), spool, extra=(
        "\toption max_message_size '100M'\n"), routes=(
        "config route 'out'\n\toption smarthost '%s'\n\toption tls 'none'\n" % smarthost))
    with peer:
        daemon = Daemon(conf).start()
        try:
            send(conf, 4096)                        # the agent's modules get loaded
            assert wait_for(lambda: status(conf)["queue"] == [], timeout=60)
            assert masq("-C", conf, "online", "out", "down").returncode == 0
            send(conf, SIZE)
            log_bytes = sum(os.path.getsize(os.path.join(spool, name))
                            for name in os.listdir(spool) if name.endswith(".log"))
            assert SIZE < log_bytes < SIZE * 1.1 + (1 << 20)    # the spool holds it once
            pid = daemon.proc.pid
            before = memory(pid)["VmRSS"]
            with open("/proc/%d/clear_refs" % pid, "w") as refs:
                refs.write("5")                     # VmHWM := VmRSS
            assert masq("-C", conf, "online", "out", "up").returncode == 0
            assert wait_for(lambda: status(conf)["queue"] == [], timeout=300), \
                daemon.log_so_far()[-2000:]
            peak = memory(pid)["VmHWM"]
            log = daemon.log_so_far()
        finally:
            daemon.stop()
    assert log.count("status=sent") == 2, log[-2000:]
    assert peak - before < 2048, "VmRSS %d kB before, peak %d kB" % (before, peak)


def growth(pid, action):
    """Run action(); return how far the daemon's peak RSS rose above its RSS before (kB)."""
    before = memory(pid)["VmRSS"]
    with open("/proc/%d/clear_refs" % pid, "w") as refs:
        refs.write("5")
    action()
    return memory(pid)["VmHWM"] - before


def smtp_in(port, size, bdat):
    """Send one message of about size octets to 127.0.0.1:port by DATA or BDAT."""
    import socket
    block = LINE.replace(b"\n", b"\r\n") * 800
    with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
        replies = sock.makefile("rb")

        def reply(code=b"2"):
            while True:
                line = replies.readline()
                if line[3:4] != b"-":
                    assert line[:1] == code, line
                    return
        reply()
        for command in (b"EHLO t.example", b"MAIL FROM:<a@example.org>",
                        b"RCPT TO:<mqlarge@test.example>"):
            sock.sendall(command + b"\r\n")
            reply()
        if bdat:
            for _ in range(size // len(block)):
                sock.sendall(b"BDAT %d\r\n" % len(block) + block)
                reply()
            sock.sendall(b"BDAT 0 LAST\r\n")
        else:
            sock.sendall(b"DATA\r\n")
            reply(b"3")
            for _ in range(size // len(block)):
                sock.sendall(block)
            sock.sendall(b".\r\n")
        reply()
        sock.sendall(b"QUIT\r\n")


@pytest.mark.parametrize("how", ["smtp-data", "smtp-bdat", "qmtp"])
def test_a_64_mb_message_comes_in_with_flat_memory(tmp_path, how):
    port, qport = free_port(), free_port()
    spool = str(tmp_path / "spool")
    conf = write_config(str(tmp_path / "masq.conf"), spool, extra=(
        "\tlist listen 'smtp://127.0.0.1:%d'\n\tlist listen 'qmtp://127.0.0.1:%d'\n"
        "\toption max_message_size '100M'\n\toption do_queue '1'\n"
        "\tlist local_users 'mqlarge'\n" % (port, qport)))

    def send(size):
        if how == "qmtp":
            text = b"Subject: large\n\n" + LINE * (size // len(LINE))
            (answer,), = qmtp_peer.send(qport, [(text, b"a@example.org",
                                                 [b"mqlarge@test.example"])])
            assert answer.startswith(b"K"), answer
        else:
            smtp_in(port, size, how == "smtp-bdat")
    daemon = Daemon(conf, wait_port=qport).start()
    try:
        send(4096)                                  # the engines' modules get loaded
        grew = growth(daemon.proc.pid, lambda: send(SIZE))
    finally:
        daemon.stop()
    log_bytes = sum(os.path.getsize(os.path.join(spool, name))
                    for name in os.listdir(spool) if name.endswith(".log"))
    assert log_bytes < SIZE * 1.1 + (1 << 20)       # the spool holds it once
    assert grew < 2048, "peak RSS grew by %d kB" % grew


@pytest.mark.parametrize("where", ["maildir", "mbox", "pipe"])
def test_a_64_mb_message_is_delivered_locally_or_piped_in_flat_memory(tmp_path, where):
    spool = str(tmp_path / "spool")
    out = tmp_path / "out"
    out.mkdir()
    routes = ""
    if where == "pipe":
        routes = ("config route 'out'\n\toption pipe 'sh -c \"cat > %s/piped\"'\n"
                  "\toption online 'file:%s/up'\n" % (out, tmp_path))
        rcpt = "far@example.org"
    else:
        rcpt = "mqlarge@test.example"
    conf = write_config(str(tmp_path / "masq.conf"), spool, routes=routes, extra=(
        "\toption max_message_size '100M'\n\tlist local_users 'mqlarge'\n"
        "\toption mailbox '%s:%s/%%u'\n" % (where if where != "pipe" else "mbox", out)))
    daemon = Daemon(conf).start()
    try:
        def deliver(size):
            up = tmp_path / "up"
            text = b"Subject: large\n\n" + LINE * (size // len(LINE))
            done = masq("-C", conf, "-i", "-odq", "-f", "me@test.example", rcpt, input=text,
                        timeout=300)
            assert done.returncode == 0, done.stderr
            if where == "pipe":
                up.write_text("")
            assert masq("-C", conf, "flush").returncode == 0
            assert wait_for(lambda: status(conf)["queue"] == [], timeout=300), \
                daemon.log_so_far()[-2000:]
            if where == "pipe":
                up.unlink()
        deliver(4096)                               # the agents' modules get loaded
        grew = growth(daemon.proc.pid, lambda: deliver(SIZE))
        log = daemon.log_so_far()
    finally:
        daemon.stop()
    assert log.count("status=sent") == 2, log[-2000:]
    assert grew < 2048, "peak RSS grew by %d kB" % grew
    delivered = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert delivered > SIZE


def test_sendmail_takes_a_64_mb_message_in_flat_memory(tmp_path):
    """`sendmail` is its own process: its peak RSS (ru_maxrss of a child that ran it alone)
    for 64 MB is within 2 MB of its peak for 4 KB."""
    import sys
    from helpers import ROOT
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\toption max_message_size '100M'\n")
    source = tmp_path / "message"
    probe = ("import resource, subprocess, sys\n"
             "with open(sys.argv[1], 'rb') as text:\n"
             "    subprocess.run([sys.executable, '-m', 'masq', '-C', sys.argv[2], '-i', '-odq',"
             " '-f', 'me@test.example', 'far@example.org'], stdin=text, check=True)\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")

    def peak(size):
        source.write_bytes(b"Subject: large\n\n" + LINE * (size // len(LINE)))
        done = subprocess.run([sys.executable, "-c", probe, str(source), conf],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
        assert done.returncode == 0, done.stderr
        return int(done.stdout)
    small, large = peak(4096), peak(SIZE)
    assert large - small < 2048, "sendmail's peak RSS: %d kB for 4 KB, %d kB for 64 MB" % (
        small, large)
