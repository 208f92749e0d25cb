"""Short reads leave no holes in memory: message text that reaches masq in reads
alternating long and short (as it does at the end of every BDAT chunk, and all the time on
a loaded machine) comes in by SMTP BDAT, SMTP DATA, QMTP and `sendmail` on a pipe with the
peak RSS growing by less than 2 MB for 16 MB of text.

The client decides where the reads end: after each piece it waits until masq has taken it
(the daemon's socket has nothing left in its receive queue, /proc/net/tcp; the pipe holds
nothing, FIONREAD), so every piece is one read. Before reads went through one reused buffer
(masq/base/reads.py), each short read was a 64 KiB block shrunk in place that pinned the
hole it left: +3.5 MB (BDAT), +3.7 MB (DATA), +6.6 MB (QMTP), +10.7 MB (sendmail)."""

import fcntl
import os
import socket
import struct
import subprocess
import termios
import time

import pytest

from helpers import ROOT, Daemon, free_port, installed, write_config
import qmtp_peer

SIZE = 16 << 20
LINE = b"y" * 78 + b"\r\n"
TEXT = LINE * 1000
HEAD = b"Subject: short reads\r\n\r\n"


def pieces(size):
    """Yield the lengths of the pieces of size octets: per 64 KiB one long and one short,
    the short ones of many sizes (40 to 1,030 octets)."""
    turn = 0
    while size > 0:
        short = 40 + (turn * 24) % 1000
        for length in (65536 - short, short):
            length = min(length, size)
            if length:
                yield length
            size -= length
        turn += 1


def taken(fileno_or_port, peer_port=None, timeout=60):
    """Wait until masq has read everything sent so far: the daemon's socket (its local port,
    the client's port) has an empty receive queue, or the pipe (our read end) is empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer_port is None:
            left = struct.unpack("i", fcntl.ioctl(fileno_or_port, termios.FIONREAD,
                                                  b"\0\0\0\0"))[0]
        else:
            left = _receive_queue(fileno_or_port, peer_port)
        if not left:
            return
        time.sleep(0.0002)
    raise AssertionError("masq did not read what was sent")


def _receive_queue(port, peer_port):
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            if (int(fields[1].rpartition(":")[2], 16) == port
                    and int(fields[2].rpartition(":")[2], 16) == peer_port):
                return int(fields[4].rpartition(":")[2], 16)
    return 0


def memory(pid, name):
    with open("/proc/%d/status" % pid) as status_file:
        for line in status_file:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for %d" % (name, pid))


def reset_peak(pid):
    """Return the VmRSS of pid, its VmHWM reset to that (kernel: clear_refs 5)."""
    rss = memory(pid, "VmRSS")
    with open("/proc/%d/clear_refs" % pid, "w") as refs:
        refs.write("5")
    return rss


class Client:
    """An SMTP or QMTP client sending piece by piece, each one read by the daemon alone
    (unless `lockstep` is False: then as fast as the daemon takes it)."""

    def __init__(self, port, lockstep):
        self.port, self.lockstep = port, lockstep
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.replies = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)
        if self.lockstep:
            taken(self.port, self.sock.getsockname()[1])

    def text(self, size):
        for length in pieces(size):
            self.send(TEXT[:length])

    def reply(self, code=b"2"):
        while True:
            line = self.replies.readline()
            if line[3:4] != b"-":
                assert line[:1] == code, line
                return

    def close(self):
        self.replies.close()
        self.sock.close()


def smtp(port, size, bdat, lockstep=True):
    """Send one message of size octets of text by BDAT (chunks of 1 MiB) or DATA."""
    client = Client(port, lockstep)
    try:
        client.reply()
        for command in (b"EHLO t.example", b"MAIL FROM:<a@example.org>",
                        b"RCPT TO:<mqshort@test.example>"):
            client.send(command + b"\r\n")
            client.reply()
        if bdat:
            client.send(b"BDAT %d\r\n" % len(HEAD) + HEAD)
            client.reply()
        else:
            client.send(b"DATA\r\n")
            client.reply(b"3")
            client.send(HEAD)
        for first in range(0, size, 1 << 20):
            chunk = min(1 << 20, size - first)
            if bdat:
                client.send(b"BDAT %d\r\n" % chunk)
            client.text(chunk)
            if bdat:
                client.reply()
        client.send(b"BDAT 0 LAST\r\n" if bdat else b".\r\n")
        client.reply()
        client.send(b"QUIT\r\n")
    finally:
        client.close()


def qmtp(port, size, lockstep=True):
    """Send one QMTP package with size octets of text (CRLF encoding)."""
    client = Client(port, lockstep)
    try:
        client.send(b"%d:\r" % (1 + len(HEAD) + size) + HEAD)
        client.text(size)
        client.send(b"," + qmtp_peer.ns(b"a@example.org")
                    + qmtp_peer.ns(qmtp_peer.ns(b"mqshort@test.example")))
        answer = client.sock.recv(512)
        assert answer[answer.index(b":") + 1:].startswith(b"K"), answer
    finally:
        client.close()


@pytest.mark.parametrize("how", ["smtp-bdat", "smtp-data", "qmtp"])
def test_short_reads_leave_the_daemon_flat(tmp_path, how):
    port, qport = free_port(), free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=(
        "\tlist listen 'smtp://127.0.0.1:%d'\n\tlist listen 'qmtp://127.0.0.1:%d'\n"
        "\toption max_message_size '100M'\n\toption do_queue '1'\n"
        "\tlist local_users 'mqshort'\n" % (port, qport)))
    daemon = Daemon(conf, wait_port=qport, launcher=installed(str(tmp_path))).start()
    pid = daemon.proc.pid
    send = ((lambda size, lockstep: qmtp(qport, size, lockstep)) if how == "qmtp" else
            (lambda size, lockstep: smtp(port, size, how == "smtp-bdat", lockstep)))
    try:
        send(1 << 20, False)             # the modules get loaded, the read buffer made
        before = reset_peak(pid)
        send(SIZE, True)
        peak = memory(pid, "VmHWM")
    finally:
        daemon.stop()
    assert peak - before < 2048, "peak RSS grew by %d kB" % (peak - before)


def test_short_reads_leave_sendmail_flat(tmp_path):
    """`sendmail` reading stdin from a pipe: its peak RSS over its RSS once it has read
    the header (everything imported, the queue open)."""
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\toption max_message_size '100M'\n")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([installed(str(tmp_path)), "-C", conf, "-i", "-odq", "-f",
                             "a@example.org", "far@example.org"], stdin=read_end, cwd=ROOT)
    try:
        def send(data):
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view):]
            taken(read_end)
        text = TEXT.replace(b"\r\n", b"\n")        # a local program's line ends
        send(HEAD.replace(b"\r\n", b"\n"))
        before = reset_peak(proc.pid)
        for length in pieces(SIZE):
            send(text[:length])
        peak = memory(proc.pid, "VmHWM")
    finally:
        os.close(write_end)
        os.close(read_end)
        assert proc.wait(60) == 0
    assert peak - before < 2048, "peak RSS grew by %d kB" % (peak - before)
