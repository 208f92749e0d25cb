#!/usr/bin/env python3
"""Measure the greylist with 100,000 triplets: its file's size, its memory, the time of a
lookup, and the time to save and to load it.

Prints figures; asserts nothing. Run: `python3 tools/bench_greylist.py [COUNT]`.

A State (masq/policy/greylist_state.py) with a bound above COUNT is filled through the
decision (masq/policy/greylist.py) with COUNT triplets from 1,000 client networks, half of
them retried after the delay (passed); then COUNT lookups of known triplets (as a retry
or a passed sender's next message: the case every accepted RCPT pays for) and COUNT of
new ones are timed per call, the file is saved (one fdatasync) and read back. Memory is
what tracemalloc sees the two tables hold, per triplet.
"""

import gc
import os
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from masq.config import schema                    # noqa: E402
from masq.policy import greylist, greylist_state  # noqa: E402
from masq.policy.relay import Peer                # noqa: E402

T0 = 1_800_000_000


def triplet(n):
    net = n % 1000
    peer = Peer("10.%d.%d.%d" % (net // 256, net % 256, n // 1000 % 250 + 1))
    return peer, "sender%d@example.org" % n, "user%d@home.lan" % (n % 50)


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    main_cfg = schema.loads("config masq 'main'\n\toption greylist '1'\n"
                            "\toption greylist_whitelist_after '1000000'\n"
                            "\toption greylist_max_entries '%d'\n" % (count * 3)).main
    opts = greylist.Settings(main_cfg)
    folder = tempfile.mkdtemp(prefix="masq-bench-greylist-", dir="/var/tmp")
    path = os.path.join(folder, greylist_state.NAME)
    state = greylist_state.State(path, count * 3)
    gc.collect()
    tracemalloc.start()
    for n in range(count):
        peer, sender, rcpt = triplet(n)
        greylist.check(state, opts, peer, sender, rcpt, T0)
        if n % 2:
            greylist.check(state, opts, peer, sender, rcpt, T0 + 400)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print("triplets: %d (%d passed), networks: %d" % (
        len(state.triplets), sum(v & 1 for v in state.triplets.values()),
        len(state.networks)))
    print("memory: %.0f bytes per triplet (tracemalloc, both tables)"
          % (held / len(state.triplets)))

    known = [triplet(n) for n in range(count)]
    start = time.perf_counter()
    for peer, sender, rcpt in known:
        greylist.check(state, opts, peer, sender, rcpt, T0 + 500)
    per_known = (time.perf_counter() - start) / count
    fresh = [(peer, "new-" + sender, rcpt) for peer, sender, rcpt in known]
    state.limit = count * 3
    start = time.perf_counter()
    for peer, sender, rcpt in fresh:
        greylist.check(state, opts, peer, sender, rcpt, T0 + 600)
    per_new = (time.perf_counter() - start) / count
    print("lookup: %.1f us for a known triplet, %.1f us for a new one (greylist.check, "
          "with the /24 and the key)" % (per_known * 1e6, per_new * 1e6))

    keep = greylist_state.State(path, count * 3)       # the newest COUNT triplets
    keep.salt = state.salt
    keep.triplets = dict(list(state.triplets.items())[-count:])
    keep.networks = state.networks
    start = time.perf_counter()
    keep.save()
    saved = time.perf_counter() - start
    size = os.path.getsize(path)
    again = greylist_state.State(path, count * 3)
    start = time.perf_counter()
    again.load()
    loaded = time.perf_counter() - start
    print("file: %d bytes for %d triplets and %d networks (%.1f bytes per entry)"
          % (size, len(keep.triplets), len(keep.networks),
             size / (len(keep.triplets) + len(keep.networks))))
    print("save: %.1f ms (encode, write, one fdatasync, rename); load: %.1f ms"
          % (saved * 1e3, loaded * 1e3))
    os.unlink(path)
    os.rmdir(folder)


if __name__ == "__main__":
    main()
