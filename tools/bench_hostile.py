#!/usr/bin/env python3
"""Measure what hostile SMTP clients cost masq (issue 12 cases 2-4); prints figures, asserts
nothing. Run: `python3 tools/bench_hostile.py [TREE]` (TREE: a masq checkout, default this
one, so an older tree can be measured the same way). Everything listens on 127.0.0.1.

  data        one 20 MB message through DATA (1000-octet CRLF lines; then the same with
              bare LF line ends, which masq turns into CRLF): seconds from the first octet
              of text to the 250, median of 3
  no-reader   5 clients, each sending up to 2 MiB of pipelined HELP (16 times its size in
              replies) and never reading: how much of it the daemon took, and the growth of
              its VmRSS (the kernel's socket buffers, up to tcp_wmem's maximum per socket,
              are not in it)
"""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TREE = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BIG = 20 * 1000 * 1000
CLIENTS = 5
FLOOD = 2 << 20


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(base):
    """Start a daemon of TREE on a fresh spool under base; return (process, port)."""
    port = free_port()
    conf = os.path.join(base, "masq.conf")
    with open(conf, "w") as out:
        out.write("config masq 'main'\n\toption hostname 'bench.example'\n"
                  "\toption spool_dir '%s/spool'\n\toption pid_file '%s/masq.pid'\n"
                  "\toption status_file '%s/status.json'\n\toption log 'stderr'\n"
                  "\toption log_level 'warning'\n\toption do_queue '1'\n"
                  "\toption max_message_size '100M'\n\toption max_connections '60'\n"
                  "\toption max_connections_per_ip '50'\n"
                  "\tlist listen 'smtp://127.0.0.1:%d'\n" % (base, base, base, port))
    proc = subprocess.Popen([sys.executable, "-m", "masq", "-C", conf, "daemon"], cwd=TREE,
                            env=dict(os.environ, PYTHONPATH=TREE),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("daemon did not start")


def reply(sock, code):
    data = b""
    while code not in data:
        part = sock.recv(65536)
        if not part:
            raise RuntimeError("closed; got %r" % data[-200:])
        data += part


def data_seconds(port, line_end):
    line = b"x" * (1000 - len(line_end)) + line_end
    text = line * (BIG // len(line)) + b"\r\n.\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reply(sock, b"220 ")
        sock.sendall(b"EHLO b\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.org>\r\n"
                     b"DATA\r\n")
        reply(sock, b"354 ")
        started = time.perf_counter()
        sock.sendall(text)
        reply(sock, b"250 2.0.0")
        return time.perf_counter() - started


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def no_reader(proc, port):
    """Return (MB the clients got the daemon to take, MB its VmRSS grew)."""
    before, taken, socks = rss_kb(proc.pid), 0, []
    flood = b"HELP\r\n" * (FLOOD // 6)
    for _ in range(CLIENTS):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.settimeout(3)
        sent = 0
        try:
            while sent < len(flood):
                sent += sock.send(flood[sent:])
        except socket.timeout:
            pass                            # the server stopped reading: that is the point
        taken += sent
        socks.append(sock)
    after, last = rss_kb(proc.pid), -1
    for _ in range(40):                     # until the daemon has done what it will do
        if after == last:
            break
        time.sleep(0.5)
        last, after = after, rss_kb(proc.pid)
    for sock in socks:
        sock.close()
    return taken / 1e6, (after - before) / 1024


def main():
    with tempfile.TemporaryDirectory(dir="/var/tmp") as base:
        proc, port = start(base)
        try:
            crlf = statistics.median(data_seconds(port, b"\r\n") for _ in range(3))
            bare = statistics.median(data_seconds(port, b"\n") for _ in range(3))
            taken, growth = no_reader(proc, port)
        finally:
            proc.terminate()
            proc.wait()
    print("tree: %s" % TREE)
    print("data: 20 MB CRLF text %.2f s (%.0f MB/s); bare LF text %.2f s (%.0f MB/s)"
          % (crlf, 20 / crlf, bare, 20 / bare))
    print("no-reader: %d clients x up to 2 MiB of HELP, never reading: %.1f MB taken, "
          "VmRSS +%.1f MB" % (CLIENTS, taken, growth))


if __name__ == "__main__":
    main()
