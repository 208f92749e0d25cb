#!/usr/bin/env python3
"""Measure the queue index's memory: bytes per waiting message, with 50,000 messages queued.

Prints figures; asserts nothing. Run: `python3 tools/bench_index.py` (or `make bench`).

A spool under /var/tmp is filled with N messages of 2 KB as the SMTP server queues them
(sender, one recipient, client address, HELO name, protocol), then opened again as the
daemon opens it (recovery scan into the index): the growth of VmRSS divided by N, and in a
second pass under tracemalloc, the bytes the index holds divided by N. Twice: every message
to the same recipient from the same sender (a router whose mail goes to a few addresses),
and each message to a recipient of its own. The goal is about 300 bytes per waiting message
(issue 10, "bounded memory").
"""

import gc
import os
import shutil
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from masq.queue.envelope import Envelope         # noqa: E402
from masq.queue.spool import Queue               # noqa: E402

COUNT = 50000
BODY = b"Subject: held\r\n\r\n" + (b"x" * 78 + b"\r\n") * 25


def fill(spool, count, unique):
    """Queue count messages as the SMTP server would."""
    queue = Queue(spool).open("runner")
    try:
        for n in range(count):
            rcpt = "user%d@offline.example" % n if unique else "c@offline.example"
            writer = queue.writer()
            writer.write(BODY)
            writer.commit(Envelope("a@example.org", [rcpt], received=time.time(),
                                   protocol="esmtp", client="192.0.2.7", helo="pc.lan"))
        queue.sync()
    finally:
        queue.close()


def rss_kb():
    """Return this process's VmRSS in kB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure(count, unique):
    """Return (traced bytes per message, RSS growth per message, messages indexed)."""
    spool = tempfile.mkdtemp(prefix="masq-bench-index-", dir="/var/tmp")
    try:
        fill(spool, count, unique)
        gc.collect()
        rss_before = rss_kb()
        queue = Queue(spool).open("runner")
        rss_after = rss_kb()
        indexed = len(queue.live())
        queue.close()
        del queue
        gc.collect()
        tracemalloc.start()
        queue = Queue(spool).open("runner")
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        queue.close()
        return traced / count, (rss_after - rss_before) * 1024 / count, indexed
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def main():
    print("queue index, %d waiting messages of 2 KB (recovery scan into the index)" % COUNT)
    print("  %-44s %14s %14s" % ("", "traced B/msg", "RSS B/msg"))
    for unique, label in ((False, "same sender and recipient"),
                          (True, "a recipient of its own each")):
        traced, rss, indexed = measure(COUNT, unique)
        print("  %-44s %14.0f %14.0f   (%d indexed)" % (label, traced, rss, indexed))
    print("  (goal: about 300 bytes per waiting message)")


if __name__ == "__main__":
    main()
