#!/usr/bin/env python3
"""Count the syncs and the spool writes of one large message received by SMTP; asserts nothing.

Run: `python3 tools/bench_sync.py [--size MB ...] [--dir DIR] [--data]` (root: /proc/PID/io).
Defaults: 256 and 1024 MB, files under /var/tmp (on disk), BDAT in 1 MiB chunks (`--data`:
DATA). For each size, a fresh masq daemon runs under `strace -f -ttt -e
trace=fsync,fdatasync` (no route out: the message stays queued); after a warm-up message of
64 KB, one message of the size is sent and the script prints:

  segments    segment files the message made
  before      fsync/fdatasync calls from the first text byte until the last one was sent
  at commit   those from the last text byte until the 250 (the group commit)
  written     bytes the daemon wrote to disk (/proc/PID/io write_bytes) per message byte
  spool       bytes the spool holds afterwards per message byte
"""

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_large                                # noqa: E402
import peers                                      # noqa: E402


def syncs_between(log_path, start, end):
    """Return (fsync, fdatasync) calls in the strace log with a time in [start, end)."""
    counts = {"fsync": 0, "fdatasync": 0}
    with open(log_path) as log:
        for line in log:
            fields = line.split(None, 2)
            if len(fields) < 3 or "(" not in fields[2]:
                continue
            name = fields[2].split("(", 1)[0]
            if name in counts and start <= float(fields[1]) < end:
                counts[name] += 1
    return counts["fsync"], counts["fdatasync"]


def spool_bytes(spool):
    return sum(os.path.getsize(os.path.join(spool, name)) for name in os.listdir(spool)
               if name.startswith("queue.") and name.endswith(".log"))


def segments(spool):
    return {name for name in os.listdir(spool)
            if name.startswith("queue.") and name.endswith(".log")}


def bench(size, bdat, folder):
    peers.BASE_DIR = folder
    base = peers.fresh_dir("masq-bench-sync-")
    trace = os.path.join(base, "strace.log")
    port = peers.free_port()
    extra = "\toption max_message_size '%dM'\n" % (size // (1 << 20) + 16)
    wrapper = ("strace", "-f", "-qq", "-ttt", "-e", "trace=fsync,fdatasync", "-o", trace)
    spool = os.path.join(base, "spool")
    try:
        with peers.MasqDaemon(base, port, extra, wrapper) as daemon:
            bench_large.smtp_send(port, bench_large.WARM, bdat)
            time.sleep(0.5)
            made = segments(spool)
            used = spool_bytes(spool)
            wrote = bench_large.written(daemon.pid)
            moments = {}
            start = time.time()
            octets = bench_large.smtp_send(port, size, bdat,
                                           before_end=lambda: moments.setdefault("last",
                                                                                 time.time()))
            end = time.time()
            wrote = bench_large.written(daemon.pid) - wrote
            time.sleep(0.5)                          # strace writes its log as it goes
            before = syncs_between(trace, start, moments["last"])
            commit = syncs_between(trace, moments["last"], end)
            return {"segments": len(segments(spool) - made), "before": before,
                    "commit": commit, "written": wrote / octets,
                    "spool": (spool_bytes(spool) - used) / octets}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="*", default=[256, 1024], help="MB")
    parser.add_argument("--dir", default="/var/tmp", help="where the spool goes (on disk)")
    parser.add_argument("--data", action="store_true", help="DATA instead of BDAT")
    args = parser.parse_args()
    print("%6s %9s %22s %22s %8s %8s" % ("MB", "segments", "before (fsync, fdatasync)",
                                          "at commit", "written", "spool"))
    for size in args.size:
        row = bench(size << 20, not args.data, args.dir)
        print("%6d %9d %22s %22s %8.3f %8.3f" % (size, row["segments"], row["before"],
                                                 row["commit"], row["written"], row["spool"]))


if __name__ == "__main__":
    main()
