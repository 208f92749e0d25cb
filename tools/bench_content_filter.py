#!/usr/bin/env python3
"""Measure a `pipe:` content filter on large messages: the daemon's memory stays flat; asserts nothing.

Run: `python3 tools/bench_content_filter.py [SIZE_MB]` (default 100). A masq daemon from this
checkout (tools/peers.py MasqDaemon) with `list filter 'pipe:/bin/cat'` and its only route
offline takes a message of 64 KB, then one of SIZE_MB, by SMTP (tools/bench_large.py's
client); each is filtered (streamed to cat and its output streamed back into the log) and
stays queued. Printed per message: the daemon's VmRSS before and its peak (VmHWM) while
the message came in and was filtered, the seconds from the 250 to the `passed filter`
log line, and MB/s through the filter.
"""

import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers                                      # noqa: E402
from bench_large import BLOCK, Watch, smtp_send, wait        # noqa: E402


def passed(log_path, count):
    with open(log_path, "rb") as log:
        return log.read().count(b"passed filter") >= count


def main():
    size = int(sys.argv[1]) << 20 if len(sys.argv) > 1 else 100 << 20
    base = peers.fresh_dir("masq-bench-filter-")
    port = peers.free_port()
    extra = ("\toption max_message_size '%dM'\n\tlist filter 'pipe:/bin/cat'\n"
             "\toption do_queue '0'\n"
             "\toption filter_timeout '1h'\n\n"
             "config route 'out'\n\toption smarthost '127.0.0.1:9'\n\toption tls 'none'\n"
             "\toption online 'file:%s/up'\n" % (size // (1 << 20) + 16, base))
    print("pipe:/bin/cat content filter, daemon memory (MB) and filter time")
    print("  %-10s %10s %10s %10s %10s" % ("message", "VmRSS", "VmHWM", "filter s", "MB/s"))
    try:
        with peers.MasqDaemon(base, port, extra) as daemon:
            pid = daemon.pid
            for count, octets in enumerate((len(BLOCK), size), 1):
                with Watch(pid) as watch:
                    sent = smtp_send(port, octets)
                    start = time.perf_counter()
                    wait(lambda: passed(daemon.log_path, count), 3600, "the filter",
                         poll=0.05)
                    seconds = time.perf_counter() - start
                print("  %-10s %10.1f %10.1f %10.2f %10.1f" % (
                    "%d KB" % (sent >> 10) if sent < 1 << 20 else "%d MB" % (sent >> 20),
                    watch.rss / 1024, (watch.rss + watch.growth) / 1024, seconds,
                    sent / seconds / 1e6))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
