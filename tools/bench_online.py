#!/usr/bin/env python3
"""Benchmark the online detectors: idle wake-ups, and link-up-to-delivery latency.

    sudo python3 tools/bench_online.py [--window SECONDS] [--runs N]

1. Idle: a daemon whose routes are all offline (an iface: route on a down veth, a file:
   route whose file is absent, a pipe: route whose command says no) with an empty queue.
   Counts the daemon's voluntary context switches (/proc/PID/status) over the window
   (default 60 s): each is a wake-up. Goal: zero (no route is polled while no mail waits).
2. Latency: mail waits for the iface: route; the veth is set up; the time from just before
   `ip link set up` to the connection (and to the client's first byte) at a raw socket
   sink that speaks just enough SMTP. Goal: median under 200 ms.

Needs root (veth links); prints figures, not pass/fail. Links and files are removed.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RawSink:
    """A TCP sink that timestamps each connection and its first byte, and says 250."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = []               # (accepted, first byte) in time.monotonic()
        self.event = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            conn, _ = self.sock.accept()
            accepted = time.monotonic()
            threading.Thread(target=self._session, args=(conn, accepted), daemon=True).start()

    def _session(self, conn, accepted):
        conn.sendall(b"220 sink ESMTP\r\n")
        first, buffer, in_data = None, b"", False
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                if first is None:
                    first = time.monotonic()
                    self.connections.append((accepted, first))
                    self.event.set()
                buffer += data
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    reply, in_data = self._reply(line, in_data)
                    if reply:
                        conn.sendall(reply)
                    if line.upper() == b"QUIT":
                        return

    @staticmethod
    def _reply(line, in_data):
        if in_data:
            return (b"250 2.0.0 stored\r\n", False) if line == b"." else (b"", True)
        verb = line[:4].upper()
        if verb == b"DATA":
            return b"354 go ahead\r\n", True
        if verb == b"QUIT":
            return b"221 bye\r\n", False
        return b"250 ok\r\n", False


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


def masq(conf, *args, stdin=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "masq", "-C", conf] + list(args),
                          input=stdin, capture_output=True, env=env, cwd=ROOT)


def write_config(folder, link, port):
    spool = os.path.join(folder, "spool")
    listen = socket.socket()
    listen.bind(("127.0.0.1", 0))
    smtp_port = listen.getsockname()[1]
    listen.close()
    query = os.path.join(folder, "query")
    with open(query, "w") as f:
        f.write("#!/bin/sh\nexit 1\n")
    os.chmod(query, 0o755)
    route = ("config route '%s'\n\toption online '%s'\n\toption smarthost '127.0.0.1:%d'\n"
             "\toption tls 'none'\n\n")
    text = ("config masq 'main'\n\toption hostname 'bench.example'\n"
            "\toption spool_dir '%s'\n\toption pid_file '%s/masq.pid'\n"
            "\toption status_file '%s/status.json'\n\toption log 'stderr'\n"
            "\tlist listen 'smtp://127.0.0.1:%d'\n\toption online_check_interval '5'\n\n"
            % (spool, folder, folder, smtp_port))
    text += route % ("link", "iface:" + link, port)
    text += route % ("dialup", "file:" + os.path.join(folder, "absent"), port)
    text += route % ("query", "pipe:" + query, port)
    conf = os.path.join(folder, "masq.conf")
    with open(conf, "w") as f:
        f.write(text)
    return conf, spool


def start_daemon(conf, spool):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "masq", "-C", conf, "daemon"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 15
    while not os.path.exists(os.path.join(spool, "control.sock")):
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit("the daemon did not start")
        time.sleep(0.05)
    return proc


def switches(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def idle(proc, window):
    time.sleep(3.0)                     # let start-up (and IPv6 DAD on the veth) settle
    before = switches(proc.pid)
    time.sleep(window)
    woke = switches(proc.pid) - before
    print("idle, queue empty, 3 routes offline (iface, file, pipe): %d wake-ups in %gs "
          "(%.2f/min; goal 0)" % (woke, window, woke * 60.0 / window))


def latency(conf, link, sink, runs):
    connect, first = [], []
    for _ in range(runs):
        sh("ip", "link", "set", link, "down")
        time.sleep(0.3)
        done = masq(conf, "-odq", "far@example.org", stdin=b"Subject: bench\n\nhello\n")
        if done.returncode != 0:
            raise SystemExit("sendmail failed: %s" % done.stderr.decode())
        time.sleep(0.3)
        sink.event.clear()
        seen = len(sink.connections)
        started = time.monotonic()
        sh("ip", "link", "set", link, "up")
        if not sink.event.wait(5) or len(sink.connections) <= seen:
            print("run: no connection within 5 s")
            continue
        accepted, byte = sink.connections[seen]
        connect.append((accepted - started) * 1000)
        first.append((byte - started) * 1000)
        time.sleep(0.3)                                 # let the delivery finish
    for what, values in (("connection", connect), ("first byte", first)):
        if values:
            print("link up -> %s at the smarthost: median %.1f ms, min %.1f, max %.1f "
                  "(%d runs; goal < 200 ms)" % (what, statistics.median(values), min(values),
                                                max(values), len(values)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--runs", type=int, default=7, help="latency runs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_online: needs root for veth links")
    link, peer = "mqbench%d" % (os.getpid() % 1000), "mqpeer%d" % (os.getpid() % 1000)
    folder = tempfile.mkdtemp(prefix="bench-online-")
    proc = None
    try:
        sh("ip", "link", "add", link, "type", "veth", "peer", "name", peer)
        sh("ip", "addr", "add", "10.233.0.1/24", "dev", link)
        sh("ip", "link", "set", peer, "up")
        sink = RawSink()
        conf, spool = write_config(folder, link, sink.port)
        proc = start_daemon(conf, spool)
        idle(proc, args.window)
        latency(conf, link, sink, args.runs)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        subprocess.run(["ip", "link", "del", link], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
