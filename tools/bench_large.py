#!/usr/bin/env python3
"""Measure one large message on every path in and out of masq, beside Postfix; asserts nothing.

Run: `python3 tools/bench_large.py [--size MB] [--dir DIR] [--only PATH,...] [--no-postfix]
[--no-relay]` (root, for the Postfix peers and /proc of the daemons). Defaults: 1024 MB,
files under /var/tmp (on disk; the run needs about three times the size free there: the
message file, the spool and one delivered copy at a time). Everything listens on 127.0.0.1.

Each path runs in a daemon of its own, after a warm-up message of 64 KB by the same path
(so that its modules are loaded), and prints MB/s, the daemon's RSS growth (its peak,
VmHWM reset through /proc/PID/clear_refs just before, over its VmRSS then) and the bytes
the daemon (with the children it reaped) wrote to disk per message byte (/proc/PID/io), and
the CPU seconds per GB of message of the daemon and the children it reaped (/proc/PID/stat,
in clock ticks: use 1 GB; a figure the other processes on a loaded machine disturb less
than MB/s).

  in   smtp-data   SMTP DATA from a client in this process: first byte to the 250 after the
                   final dot (sent only once the message is synced)
       smtp-bdat   SMTP BDAT in chunks of 1 MiB, each answered before the next
       sendmail    `masq -i` reading a file on stdin (its own process: peak RSS over its
                   peak for 64 KB, its writes from getrusage), start to exit
       qmtp        QMTP from a client in this process, to the K answer
  out  smtp-data   SMTP to Postfix's smtp-sink (no CHUNKING): route online to queue empty
       smtp-bdat   SMTP BDAT to Postfix's smtpd (tests/postfix_peer.py, no relay in front)
                   in front of smtp-sink (smtpd, not masq, may be the limit: see the next)
       bdat-sink   SMTP BDAT to a server in this process that offers CHUNKING and throws
                   the chunks away (Postfix's smtp-sink does not offer CHUNKING)
       qmtp        QMTP to a discarding server in this process
       pipe        a pipe route to `cat > /dev/null`
       maildir     local delivery into a maildir (`masq flush` to queue empty)
                   (each out path: the message queued by this process first, as sendmail
                   would, then the route brought online / the flush, to queue empty)
       mbox        local delivery into an mbox
  Postfix          the same message into a throwaway Postfix (tools/peers.py RelayingPostfix:
                   its smtp transport held) and out, once released, to smtp-sink: MB/s each way.
  relay            2,000 messages of about 2 KB between two masq daemons by SMTP and by QMTP
                   (messages/s, CPU seconds of each daemon).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))

import peers                                      # noqa: E402

LINE = b"y" * 76 + b"\r\n"
BLOCK = LINE * (65536 // len(LINE))
WARM = len(BLOCK)
SMALL = 2000
SMALL_BODY = b"Subject: small\r\n\r\n" + LINE * 25
IN_PATHS = ("smtp-data", "smtp-bdat", "sendmail", "qmtp")
OUT_PATHS = ("smtp-data", "smtp-bdat", "bdat-sink", "qmtp", "pipe", "maildir", "mbox")
FAR = "far@example.org"
LOCAL = "b@test.example"


def masq(conf, *args, stdin=None):
    """Run `masq -C conf ARGS` from this checkout; return its output (RuntimeError if it fails)."""
    done = subprocess.run([sys.executable, "-m", "masq", "-C", conf] + list(args),
                          capture_output=True, cwd=peers.ROOT, timeout=3600, stdin=stdin)
    if done.returncode != 0:
        raise RuntimeError("masq %s: %s" % (" ".join(args), done.stderr.decode().strip()))
    return done.stdout.decode()


def queue_empty(conf):
    return json.loads(masq(conf, "status", "--json"))["queue"] == []


def wait(predicate, timeout, what, poll=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise RuntimeError("timed out waiting for " + what)


def written(pid):
    with open("/proc/%d/io" % pid) as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """Return the user and system CPU seconds of pid and of the children it reaped."""
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rpartition(")")[2].split()
    return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class Watch:
    """The daemon's RSS before, its peak, its disk writes and CPU time while `with` runs."""

    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        time.sleep(0.5)
        self.rss = peers.proc_status(self.pid)["VmRSS"]
        with open("/proc/%d/clear_refs" % self.pid, "w") as refs:
            refs.write("5")
        self.wrote = written(self.pid)
        self.cpu = cpu_seconds(self.pid)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.wrote = written(self.pid) - self.wrote
        self.cpu = cpu_seconds(self.pid) - self.cpu
        self.growth = peers.proc_status(self.pid)["VmHWM"] - self.rss

    def row(self, octets):
        return {"mbs": octets / self.seconds / 1e6, "growth": self.growth / 1024,
                "written": self.wrote / octets, "cpu": self.cpu / octets * (1 << 30)}


class LogWatch:
    """Whether a daemon's log file has said `what` since this was made: read from where it
    ended then, so that a poll costs a read of the new lines (a `masq status` per poll would
    cost a process start, CPU taken from the daemon being measured)."""

    def __init__(self, path, what):
        self.path, self.what = path, what
        self.offset, self.tail, self.found = os.path.getsize(path), b"", False

    def seen(self):
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            new = log.read()
        self.offset += len(new)
        self.tail += new
        self.found = self.found or self.what in self.tail
        self.tail = self.tail[-len(self.what):]
        return self.found


def message_file(folder, size):
    """Write a message of about size octets (LF line ends, as a local program gives it)."""
    path = os.path.join(folder, "message-%d" % size)
    block = BLOCK.replace(b"\r\n", b"\n")
    with open(path, "wb") as out:
        out.write(b"Subject: large\n\n")
        for _ in range(max(1, size // len(block))):
            out.write(block)
    return path


# clients

def smtp_send(port, size, bdat=False, rcpt=FAR, before_end=None):
    """Send one message of about size octets by SMTP DATA or BDAT; return its octets.
    before_end() is called once the whole text is sent, before its end (`BDAT 0 LAST`,
    the final dot)."""
    blocks = max(1, size // len(BLOCK))
    with socket.create_connection(("127.0.0.1", port), timeout=3600) as sock:
        reader = sock.makefile("rb")

        def reply():
            while True:
                line = reader.readline()
                if not line:
                    raise RuntimeError("server closed the connection")
                if line[3:4] != b"-":
                    if line[:1] not in (b"2", b"3"):
                        raise RuntimeError("server said %r" % line)
                    return line
        reply()
        head = b"Subject: large\r\n\r\n"
        octets = blocks * len(BLOCK) + len(head)
        for command in (b"EHLO bench.example", b"MAIL FROM:<a@example.org> SIZE=%d" % octets,
                        b"RCPT TO:<%s>" % rcpt.encode()):
            sock.sendall(command + b"\r\n")
            reply()
        if bdat:
            per = 16
            sock.sendall(b"BDAT %d\r\n" % len(head) + head)
            reply()
            for first in range(0, blocks, per):
                count = min(per, blocks - first)
                sock.sendall(b"BDAT %d\r\n" % (count * len(BLOCK)))
                for _ in range(count):
                    sock.sendall(BLOCK)
                reply()
            if before_end is not None:
                before_end()
            sock.sendall(b"BDAT 0 LAST\r\n")
        else:
            sock.sendall(b"DATA\r\n")
            reply()
            sock.sendall(head)
            for _ in range(blocks):
                sock.sendall(BLOCK)
            if before_end is not None:
                before_end()
            sock.sendall(b".\r\n")
        reply()
        sock.sendall(b"QUIT\r\n")
        return octets


def netstring(data):
    return b"%d:%s," % (len(data), data)


def qmtp_send(port, size, rcpt=FAR):
    """Send one package (three netstrings: text in encoding #1, CRLF, sender, recipients)
    with one message of about size octets by QMTP, streamed; return its octets."""
    blocks = max(1, size // len(BLOCK))
    head = b"\rSubject: large\r\n\r\n"
    octets = blocks * len(BLOCK) + len(head) - 1
    rest = b"," + netstring(b"a@example.org") + netstring(netstring(rcpt.encode()))
    with socket.create_connection(("127.0.0.1", port), timeout=3600) as sock:
        sock.sendall(b"%d:" % (octets + 1) + head)
        for _ in range(blocks):
            sock.sendall(BLOCK)
        sock.sendall(rest)
        answer = sock.recv(512)
        if not answer[answer.index(b":") + 1:].startswith(b"K"):
            raise RuntimeError("QMTP answer %r" % answer)
    return octets


class QMTPDiscard(threading.Thread):
    """A QMTP server that reads each package and throws its text away (answers K)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._session(conn.makefile("rb"), conn)
                except (OSError, ValueError):
                    pass

    @staticmethod
    def _length(reader):
        digits = b""
        while True:
            c = reader.read(1)
            if not c:
                raise ValueError("closed")
            if c == b":":
                return int(digits)
            digits += c

    def _session(self, reader, conn):
        while True:
            try:
                left = self._length(reader)         # the text
            except ValueError:
                return
            while left:
                left -= len(reader.read(min(left, 1 << 20)))
            reader.read(1)
            reader.read(self._length(reader) + 1)   # sender
            rcpts = reader.read(self._length(reader) + 1)
            for _ in range(max(1, rcpts.count(b":"))):
                conn.sendall(netstring(b"Kthrown away"))

    def close(self):
        self.sock.close()


class BDATDiscard(QMTPDiscard):
    """An SMTP server offering PIPELINING and CHUNKING that reads each BDAT chunk and throws
    it away (250 to everything else; DATA is refused: it is for BDAT)."""

    EHLO = b"250-discard\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-CHUNKING\r\n250 SIZE\r\n"

    def _session(self, reader, conn):
        conn.sendall(b"220 discard ESMTP\r\n")
        for line in iter(reader.readline, b""):
            words = line.split()
            verb = words[0].upper() if words else b""
            if verb == b"BDAT" and len(words) > 1:
                left = int(words[1])
                while left:
                    got = len(reader.read(min(left, 1 << 20)))
                    if not got:
                        return
                    left -= got
                conn.sendall(b"250 2.0.0 %d octets\r\n" % int(words[1]))
            elif verb == b"EHLO":
                conn.sendall(self.EHLO)
            elif verb == b"QUIT":
                return conn.sendall(b"221 2.0.0 bye\r\n")
            elif verb == b"DATA":
                conn.sendall(b"502 5.5.1 BDAT only\r\n")
            else:
                conn.sendall(b"250 2.0.0 ok\r\n")


# the paths

def daemon_for(base, port, extra=""):
    return peers.MasqDaemon(base, port, extra)


def bench_in(path, size, message):
    base = peers.fresh_dir("masq-bench-in-")
    port, qport = peers.free_port(), peers.free_port()
    extra = ("\toption max_message_size '%dM'\n\tlist listen 'qmtp://127.0.0.1:%d'\n"
             % (size // (1 << 20) + 16, qport))
    try:
        if path == "sendmail":
            return sendmail_in(base, extra, size, message)
        with daemon_for(base, port, extra) as daemon:
            if path == "qmtp":
                peers.wait_port(qport, lambda: True, "masq's QMTP listener")
                send = lambda n: qmtp_send(qport, n)   # noqa: E731
            else:
                send = lambda n: smtp_send(port, n, path == "smtp-bdat")   # noqa: E731
            send(WARM)
            with Watch(daemon.pid) as watch:
                octets = send(size)
        return watch.row(octets)
    finally:
        shutil.rmtree(base, ignore_errors=True)


SENDMAIL_PROBE = """\
import resource, subprocess, sys, time
start = time.perf_counter()
with open(sys.argv[1], 'rb') as text:
    subprocess.run([sys.executable, '-m', 'masq', '-C', sys.argv[2], '-i', '-odq',
                    '-f', 'a@example.org', sys.argv[3]], stdin=text, check=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(time.perf_counter() - start, usage.ru_maxrss, usage.ru_oublock * 512,
      usage.ru_utime + usage.ru_stime)
"""


def sendmail_in(base, extra, size, message):
    conf = peers.masq_config(base, extra)
    small = message_file(base, WARM)

    def run(path):
        done = subprocess.run([sys.executable, "-c", SENDMAIL_PROBE, path, conf, FAR],
                              capture_output=True, text=True, timeout=3600, cwd=peers.ROOT,
                              env=dict(os.environ, PYTHONPATH=peers.ROOT))
        if done.returncode != 0:
            raise RuntimeError("sendmail: " + done.stderr.strip())
        seconds, peak, wrote, cpu = done.stdout.split()
        return float(seconds), int(peak), int(wrote), float(cpu)
    _, peak_small, _, _ = run(small)
    seconds, peak, wrote, cpu = run(message)
    octets = os.path.getsize(message)
    return {"mbs": octets / seconds / 1e6, "growth": (peak - peak_small) / 1024,
            "written": wrote / octets, "cpu": cpu / octets * (1 << 30)}


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def bench_out(path, size, sink_port):
    base = peers.fresh_dir("masq-bench-out-")
    port, peer_port = peers.free_port(), peers.free_port()
    route = "\n\nconfig route 'out'\n\toption online 'file:%s/up'\n" % base
    peer = _Nothing()
    rcpt = FAR
    if path == "smtp-data":
        route += "\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n" % sink_port
    elif path == "smtp-bdat":
        from postfix_peer import PostfixSmtpd
        peer = PostfixSmtpd(peer_port, sink_port, tap=False)
        route += "\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n" % peer_port
    elif path == "bdat-sink":
        route += "\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n" % peer_port
    elif path == "qmtp":
        route += "\toption smarthost 'qmtp:127.0.0.1:%d'\n" % peer_port
    elif path == "pipe":
        route += "\toption pipe 'sh -c \"cat > /dev/null\"'\n"
    else:
        route, rcpt = "", LOCAL
    extra = "\toption max_message_size '%dM'\n" % (size // (1 << 20) + 16) + route
    discard = (QMTPDiscard(peer_port) if path == "qmtp" else BDATDiscard(peer_port)
               if path == "bdat-sink" else None)
    daemon = daemon_for(base, port, extra)
    if path == "mbox":
        with open(daemon.conf) as conf:
            text = conf.read().replace("'maildir:", "'mbox:")
        with open(daemon.conf, "w") as conf:
            conf.write(text)
    try:
        with peer, daemon:

            def deliver(octets):
                queue_message(os.path.join(base, "spool"), octets, rcpt)
                done = LogWatch(daemon.log_path, b": removed")
                if path in ("maildir", "mbox"):
                    watch = Watch(daemon.pid).__enter__()
                    masq(daemon.conf, "flush")
                else:
                    watch = Watch(daemon.pid).__enter__()
                    masq(daemon.conf, "online", "out", "up")
                wait(done.seen, 3600, "masq to deliver", poll=0.02)
                watch.__exit__()
                wait(lambda: queue_empty(daemon.conf), 60, "masq's queue to be empty")
                if path not in ("maildir", "mbox"):
                    masq(daemon.conf, "online", "out", "down")
                for folder in ("mail",):
                    shutil.rmtree(os.path.join(base, folder), ignore_errors=True)
                return watch
            deliver(WARM)
            watch = deliver(size)
        return watch.row(max(1, size // len(BLOCK)) * len(BLOCK))
    finally:
        if discard is not None:
            discard.close()
        shutil.rmtree(base, ignore_errors=True)


def queue_message(spool, size, rcpt):
    """Queue one message of about size octets as `sendmail` would, at disk speed (written
    here, so that the submission does not count), and poke the daemon."""
    sys.path.insert(0, peers.ROOT)
    from masq.base import control
    from masq.queue.envelope import Envelope
    from masq.queue.spool import Queue
    queue = Queue(spool).open("append")
    try:
        writer = queue.writer()
        writer.write(b"Subject: large\r\n\r\n")
        for _ in range(max(1, size // len(BLOCK))):
            writer.write(BLOCK)
        writer.commit(Envelope("a@example.org", [rcpt], received=time.time(), crlf=True))
        queue.sync()
    finally:
        queue.close()
    control.poke(spool)


def bench_postfix_large(size, sink_port):
    base = peers.fresh_dir("masq-bench-postfix-")
    port = peers.free_port()
    try:
        with peers.RelayingPostfix(base, port, sink_port) as postfix:
            postfix.postconf("message_size_limit = 0", "mailbox_size_limit = 0")
            postfix._postfix("reload")
            time.sleep(2.0)
            start = time.perf_counter()
            octets = smtp_send(port, size)
            seconds_in = time.perf_counter() - start
            start = time.perf_counter()
            postfix.release()
            postfix.flush()
            wait(lambda: postfix.queue_files() == 0, 3600, "Postfix to deliver", poll=0.1)
            seconds_out = time.perf_counter() - start
        return {"in": octets / seconds_in / 1e6, "out": octets / seconds_out / 1e6}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def prefill(base, count):
    sys.path.insert(0, peers.ROOT)
    from masq.queue.envelope import Envelope
    from masq.queue.spool import Queue
    queue = Queue(os.path.join(base, "spool")).open("runner")
    try:
        for _ in range(count):
            writer = queue.writer()
            writer.write(SMALL_BODY)
            writer.commit(Envelope("a@example.org", [FAR], received=time.time(), crlf=True))
        queue.sync()
    finally:
        queue.close()


def bench_relay(protocol):
    """Relay SMALL messages from masq A to masq B by protocol; return (msgs/s, cpu A, cpu B)."""
    a_base, b_base = peers.fresh_dir("masq-bench-a-"), peers.fresh_dir("masq-bench-b-")
    b_smtp, b_qmtp, a_smtp = peers.free_port(), peers.free_port(), peers.free_port()
    target = ("qmtp:127.0.0.1:%d" % b_qmtp if protocol == "qmtp"
              else "127.0.0.1:%d" % b_smtp)
    a_extra = ("\n\nconfig route 'b'\n\toption smarthost '%s'\n\toption tls 'none'\n"
               "\toption online 'file:%s/up'\n" % (target, a_base))
    try:
        peers.masq_config(a_base, a_extra)
        prefill(a_base, SMALL)
        with peers.MasqDaemon(b_base, b_smtp, "\tlist listen 'qmtp://127.0.0.1:%d'\n"
                              % b_qmtp) as b, peers.MasqDaemon(a_base, a_smtp, a_extra) as a:
            time.sleep(1.0)
            cpu = cpu_seconds(a.pid), cpu_seconds(b.pid)
            start = time.perf_counter()
            masq(a.conf, "online", "b", "up")
            wait(lambda: queue_empty(a.conf), 600, "A to relay", poll=0.05)
            elapsed = time.perf_counter() - start
            return (SMALL / elapsed, cpu_seconds(a.pid) - cpu[0],
                    cpu_seconds(b.pid) - cpu[1])
    finally:
        shutil.rmtree(a_base, ignore_errors=True)
        shutil.rmtree(b_base, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="message size in MB")
    parser.add_argument("--dir", default="/var/tmp", help="where files go (on disk)")
    parser.add_argument("--only", default="", help="paths to run, e.g. in:smtp-data,out:mbox")
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--no-relay", action="store_true")
    args = parser.parse_args()
    size = args.size << 20
    peers.BASE_DIR = args.dir
    free = shutil.disk_usage(args.dir).free
    if free < 3 * size + (256 << 20):
        sys.exit("bench_large: %s has %d MB free; %d MB needs about %d MB"
                 % (args.dir, free >> 20, args.size, (3 * size >> 20) + 256))
    only = set(filter(None, args.only.split(",")))
    folder = peers.fresh_dir("masq-bench-large-")
    sink_base = peers.fresh_dir("masq-bench-sink-")
    sink_port = peers.free_port()
    print("one message of %d MB; MB/s, daemon RSS growth (peak over before), bytes written "
          "per message byte" % args.size)
    try:
        message = message_file(folder, size)
        with peers.SmtpSink(sink_base, sink_port):
            for way, paths, bench in (("in", IN_PATHS, bench_in), ("out", OUT_PATHS, bench_out)):
                for path in paths:
                    if only and "%s:%s" % (way, path) not in only:
                        continue
                    row = (bench(path, size, message) if way == "in"
                           else bench(path, size, sink_port))
                    print("  masq %-3s %-9s %7.1f MB/s  RSS %+6.2f MB  wrote %.3f  CPU %5.2f s/GB"
                          % (way, path, row["mbs"], row["growth"], row["written"], row["cpu"]),
                          flush=True)
            if not args.no_postfix:
                p = bench_postfix_large(size, sink_port)
                print("  Postfix in  smtp-data %7.1f MB/s\n  Postfix out smtp-data %7.1f MB/s"
                      % (p["in"], p["out"]), flush=True)
    finally:
        shutil.rmtree(sink_base, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    if not args.no_relay:
        for protocol in ("smtp", "qmtp"):
            rate, cpu_a, cpu_b = bench_relay(protocol)
            print("%d x 2 KB masq to masq by %s: %6.0f msgs/s, CPU A %.2f s, B %.2f s"
                  % (SMALL, protocol.upper(), rate, cpu_a, cpu_b))


if __name__ == "__main__":
    main()
