#!/usr/bin/env python3
"""Measure the cost of deciding which addresses are local, and of a hostile glob pattern.

Prints figures; asserts nothing. Run: `python3 tools/bench_locality.py` (or `make bench`).

Locality.is_local (masq/policy/local.py) runs for every recipient at RCPT, in the scheduler
and in listings: with the default local domains (exact names, a set lookup) and with five
glob patterns plus local_addresses/not_local_addresses (each pattern tried in turn). Then
the worst shape for the matcher (masq/mail/glob.py): `*a*a*a*a*a*b` against 250 `a`s,
which backtracking to the last `*` keeps at O(pattern x text). Best of three runs each.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from masq.mail import glob                                     # noqa: E402
from masq.policy.local import Locality                         # noqa: E402

N = 100000


def per_call(function, count):
    best = None
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            function()
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return best / count


def main():
    plain = Locality(["router.lan", "localhost"], "router.lan")
    globs = Locality(["router.lan", "localhost", "*.sub.example", "mail[0-9].lan",
                      "*.home.arpa"], "router.lan", ["bob@isp.example", "*@pop.example"],
                     ["alice@router.lan"])
    cases = [
        ("default domains, local", lambda: plain.is_local("bob@router.lan"), N),
        ("default domains, remote", lambda: plain.is_local("bob@far.example"), N),
        ("5 globs, local by *.sub.example", lambda: globs.is_local("bob@x.y.sub.example"), N),
        ("5 globs + lists, remote", lambda: globs.is_local("someone@far.example"), N),
        ("*a*a*a*a*a*b against 250 a", lambda: glob.match_whole("*a*a*a*a*a*b", "a" * 250),
         100),
    ]
    for name, function, count in cases:
        print("%-36s %9.2f us per call" % (name, per_call(function, count) * 1e6))


if __name__ == "__main__":
    main()
