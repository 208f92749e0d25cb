#!/usr/bin/env python3
"""Measure sustained relay: does the spool stay small and the daemon's memory flat under load?

20,000 messages of about 0.4 KB from 4 SMTP clients (Postfix's smtp-source) through a masq
daemon whose only route is always online and leads to Postfix's smtp-sink. While the load
runs, the spool's size on disk and the daemon's VmRSS are sampled every 50 ms.

Prints: messages/s (accepted by masq, end to end of smtp-source), the peak spool size, peak
and final daemon RSS (final: once the queue is empty again), how many compaction steps the
daemon logged while the load ran, and how many messages the sink got. Goals (issue 10):
spool never above 8 MB, RSS never above 24 MB. Asserts nothing.

Run: `python3 tools/bench_sustained.py [MESSAGES]` (or `make bench`).
"""

import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers                                      # noqa: E402

MESSAGES = 20000
CLIENTS = 4
SIZE = 400
ROUTE = """
config route 'sink'
\toption smarthost '127.0.0.1:{port}'
\toption tls 'none'
\toption online 'always'
"""
EXTRA = "\toption max_connections_per_ip '50'\n\toption do_queue '0'\n"


def spool_bytes(spool):
    """Return the bytes the files directly in spool use."""
    total = 0
    try:
        names = os.listdir(spool)
    except OSError:
        return 0
    for name in names:
        try:
            total += os.stat(os.path.join(spool, name)).st_size
        except OSError:
            pass
    return total


class Sampler(threading.Thread):
    """Samples the spool size and the daemon's VmRSS every 50 ms; keeps the peaks."""

    def __init__(self, pid, spool):
        super().__init__(daemon=True)
        self.pid, self.spool = pid, spool
        self.peak_spool = self.peak_rss = 0
        self.running = True

    def run(self):
        while self.running:
            self.peak_spool = max(self.peak_spool, spool_bytes(self.spool))
            try:
                self.peak_rss = max(self.peak_rss, peers.proc_status(self.pid)["VmRSS"])
            except (OSError, KeyError):
                pass
            time.sleep(0.05)


def count_compactions(log_path):
    with open(log_path, errors="replace") as log:
        return sum(1 for line in log if "queue compact" in line)


def main():
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else MESSAGES
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            raise SystemExit("%s (Debian package postfix) is not installed: nothing to run" % tool)
    base = peers.fresh_dir("masq-sustained-")
    try:
        with peers.SmtpSink(os.path.join(base, "sink"), peers.free_port()) as sink:
            daemon = peers.MasqDaemon(os.path.join(base, "masq"), peers.free_port(),
                                      EXTRA + ROUTE.format(port=sink.port))
            spool = os.path.join(daemon.base, "spool")
            with daemon:
                time.sleep(1.0)
                start_rss = peers.proc_status(daemon.pid)["VmRSS"]
                sampler = Sampler(daemon.pid, spool)
                sampler.start()
                cmd = ["smtp-source", "-s", str(CLIENTS), "-m", str(messages), "-l", str(SIZE),
                       "-f", "a@example.org", "-t", "rcpt@dest.example",
                       "127.0.0.1:%d" % daemon.port]
                began = time.perf_counter()
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
                elapsed = time.perf_counter() - began
                if done.returncode != 0:
                    raise SystemExit("smtp-source failed: %s" % done.stderr.strip())
                compactions = count_compactions(daemon.log_path)
                deadline = time.monotonic() + 300
                while sink.counters()["mesg"] < messages and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(2.0)
                sampler.running = False
                sampler.join()
                final_rss = peers.proc_status(daemon.pid)["VmRSS"]
                final_spool = spool_bytes(spool)
                delivered = sink.counters()["mesg"]
    finally:
        print(base) if os.environ.get("KEEP") else shutil.rmtree(base, ignore_errors=True)
    print("sustained relay: %d x %d B from %d smtp-source clients, route always online "
          "to smtp-sink" % (messages, SIZE, CLIENTS))
    print("  accepted       %8.0f messages/s (%.1f s)" % (messages / elapsed, elapsed))
    print("  spool peak     %8.2f MB   (goal <= 8 MB); after: %.2f MB"
          % (sampler.peak_spool / 1e6, final_spool / 1e6))
    print("  daemon RSS     %8.1f MB at start, %.1f MB peak (goal <= 24 MB), %.1f MB final"
          % (start_rss / 1024, sampler.peak_rss / 1024, final_rss / 1024))
    print("  compactions    %8d logged during the load" % compactions)
    print("  delivered      %8d of %d to the sink" % (delivered, messages))


if __name__ == "__main__":
    main()
