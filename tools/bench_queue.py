#!/usr/bin/env python3
"""Measure the queue: commit rate, fdatasyncs and bytes per message, recovery time.

Prints figures (medians of several runs); asserts nothing. Run: `python3 tools/bench_queue.py`
(or `make bench`). The spool is a fresh folder under /var/tmp (on disk, as on a router's
flash; not tmpfs, where fdatasync costs nothing).

  single writer      each message committed and fdatasync'ed on its own (sendmail)
  10 writers, group  10 sessions finishing in the same loop turn share one fdatasync (daemon)
  10 processes       10 sendmail-like processes appending concurrently, each syncing
  recovery           scan of a 10,000-message log by a starting daemon
"""

import os
import shutil
import statistics
import sys
import tempfile
import time
from multiprocessing import Process

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from masq.queue import log as log_mod            # noqa: E402
from masq.queue.envelope import Envelope         # noqa: E402
from masq.queue.spool import Queue       # noqa: E402

BODY = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: bench\r\n\r\n"
        + (b"x" * 76 + b"\r\n") * 25)        # about 2 KB
RUNS = 5


class SyncCounter:
    """Counts fdatasync calls made through the queue's log module."""

    def __init__(self):
        self.calls = 0
        self.real = os.fdatasync

    def __call__(self, fd):
        self.calls += 1
        self.real(fd)


def fresh_spool():
    return tempfile.mkdtemp(prefix="masq-bench-", dir="/var/tmp")


def commit_one(queue):
    writer = queue.writer()
    writer.write(BODY)
    writer.commit(Envelope("a@example.org", ["b@example.org"], received=time.time()))


def single_writer(count=300):
    spool = fresh_spool()
    queue = Queue(spool).open("runner")
    counter = SyncCounter()
    log_mod.os.fdatasync = counter
    start_size = queue.log_size()
    start = time.perf_counter()
    for _ in range(count):
        commit_one(queue)
        queue.sync()
    elapsed = time.perf_counter() - start
    log_mod.os.fdatasync = counter.real
    written = queue.log_size() - start_size
    queue.close()
    shutil.rmtree(spool)
    return count / elapsed, counter.calls / count, written / count


def group_commit(count=1000, sessions=10):
    spool = fresh_spool()
    queue = Queue(spool).open("runner")
    counter = SyncCounter()
    log_mod.os.fdatasync = counter
    start = time.perf_counter()
    for _ in range(count // sessions):
        for _ in range(sessions):          # one loop turn: 10 sessions reach end of data
            commit_one(queue)
            queue.want_sync(lambda error: None)
        queue.sync_now()             # the turn ends: one fdatasync for all
    elapsed = time.perf_counter() - start
    log_mod.os.fdatasync = counter.real
    queue.close()
    shutil.rmtree(spool)
    return count / elapsed, counter.calls / count


def _appender(spool, count):
    queue = Queue(spool).open("append")
    for _ in range(count):
        commit_one(queue)
        queue.sync()
    queue.close()


def processes(count=100, writers=10):
    spool = fresh_spool()
    Queue(spool).open("append").close()
    procs = [Process(target=_appender, args=(spool, count)) for _ in range(writers)]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - start
    queue = Queue(spool).open("read")
    found = len(queue.live())
    queue.close()
    shutil.rmtree(spool)
    return found / elapsed, found


def recovery(count=10000):
    spool = fresh_spool()
    queue = Queue(spool).open("runner")
    for n in range(count):
        commit_one(queue)
        if n % 500 == 0:
            queue.sync()
    queue.sync()
    size = queue.log_size()
    queue.close()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        queue = Queue(spool).open("runner")
        times.append(time.perf_counter() - start)
        assert len(queue.live()) == count
        queue.close()
    shutil.rmtree(spool)
    return statistics.median(times), size


def median_of(func, runs=RUNS):
    results = [func() for _ in range(runs)]
    return [statistics.median(column) for column in zip(*results)]


def main():
    print("masq queue benchmark (2 KB messages, medians of %d runs, spool on %s)"
          % (RUNS, "/var/tmp"))
    rate, syncs, written = median_of(single_writer)
    print("  single writer:        %8.0f commits/s   %.2f fdatasync/msg   %.0f bytes/msg "
          "(message %d bytes: %.3f x size + %d)"
          % (rate, syncs, written, len(BODY), written / len(BODY), written - len(BODY)))
    rate, syncs = median_of(group_commit)
    print("  10 writers, group:    %8.0f commits/s   %.2f fdatasync/msg" % (rate, syncs))
    rate, found = median_of(processes)
    print("  10 processes:         %8.0f commits/s   (%d messages, each process syncing)"
          % (rate, found))
    seconds, size = recovery()
    print("  recovery of 10,000 messages: %.3f s (log %.1f MB)" % (seconds, size / 1e6))


if __name__ == "__main__":
    main()
