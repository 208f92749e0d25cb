#!/usr/bin/env python3
"""Measure what the checks in the dialogue cost: accept rate with them on and off, idle memory.

Prints figures (medians of several runs); asserts nothing. Run: `python3 tools/bench_filters.py`.

  accept rate  tools/bench_smtp.py's load (smtp-source: 10 sessions, 2,000 messages of about
               2 KB, a new connection per message) against a fresh daemon per turn, turns
               alternating off / on so that load from elsewhere falls on both alike. The
               client speaks from ::1, outside relay_net (127.0.0.0/8), so it is checked.
               on: `dnsbl 'bl.test=127.0.0.[2..11]*2'`, `dnsbl 'small.test'`,
               `dnswl 'wl.test'`, `check_helo`, against dnsmasq on loopback, where ::1 is
               on no list: the first connection asks, the verdict is kept (60 s at least),
               so the others ask nothing ("answers cached"); and, once the checkout has
               it, greylisting (`greylist`, a delay of 1 s) with the load's one triplet
               passed before the load (a first attempt, 450, and a retry). Both the
               ratio of the medians and the median of each off/on pair's ratio are
               printed: on a loaded machine the pairs, run back to back, say more
  idle memory  tools/bench_idle.py's measure (VmRSS and PSS from smaps_rollup, 2 s after
               the daemon says it listens, nothing connected) of the bench configuration
               with the same options set but never used, against the configuration
               without them; and the modules the configured idle daemon imported that
               the unconfigured one did not (goal: none, and the same RSS)
"""

import os
import shutil
import smtplib
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_idle                                 # noqa: E402
import bench_smtp                                 # noqa: E402
import peers                                      # noqa: E402

sys.path[:0] = [peers.ROOT, os.path.join(peers.ROOT, "tests")]   # masq; the tests' peers
from sinks import Dnsmasq                         # noqa: E402

RUNS = 5
CHECKS = ("\tlist dnsbl 'bl.test=127.0.0.[2..11]*2'\n\tlist dnsbl 'small.test'\n"
          "\tlist dnswl 'wl.test'\n\toption check_helo '1'\n")
GREYLIST_DELAY = 1.0
GREYLIST = "\toption greylist '1'\n\toption greylist_delay '%gs'\n" % GREYLIST_DELAY
SENDER, RCPT = "a@example.org", "b@test.example"      # what bench_smtp's smtp-source sends


def greylisting():
    """Return True if this checkout has greylisting (the `greylist` option)."""
    from masq.config import schema
    return "greylist" in schema.SCHEMA["masq"]


def pass_greylist(port):
    """Get the load's one triplet (::1's /64, SENDER, RCPT) through greylisting: a first
    attempt (450), then a retry after the delay."""
    for attempt in range(2):
        with smtplib.SMTP("::1", port, timeout=30) as client:
            try:
                client.sendmail(SENDER, [RCPT], b"Subject: warm-up\r\n\r\nhi\r\n")
                return
            except smtplib.SMTPRecipientsRefused as refused:
                if refused.recipients[RCPT][0] != 450 or attempt:
                    raise
        time.sleep(GREYLIST_DELAY + 0.5)


def turn(base, extra):
    """Run the load from ::1 against a fresh daemon with extra options; return messages/s."""
    port = peers.free_port()
    extra = "\tlist listen 'smtp://[::1]:%d'\n" % port + extra + bench_smtp.MASQ_EXTRA
    with peers.MasqDaemon(base, peers.free_port(), extra):
        if "greylist" in extra:
            pass_greylist(port)
        rate = bench_smtp.smtp_source(port, host="[::1]")
    shutil.rmtree(base, ignore_errors=True)
    return rate


def accept_rates(base):
    """Return {"off": [rates], "on": [rates]}."""
    rates = {"off": [], "on": []}
    with Dnsmasq(peers.free_port(), ttl=300) as dns:
        checks = CHECKS + "\toption dns_server '127.0.0.1:%d'\n" % dns.port
        if greylisting():
            checks += GREYLIST
        for number in range(RUNS):
            rates["off"].append(turn(os.path.join(base, "off-%d" % number), ""))
            rates["on"].append(turn(os.path.join(base, "on-%d" % number), checks))
    return rates


def idle(root):
    """Print idle memory and modules with the checks configured and not."""
    print("idle daemon, nothing connected (median of %d starts)" % bench_idle.STARTS)
    print("  %-40s %10s %10s" % ("", "VmRSS MB", "PSS MB"))
    configured = CHECKS + (GREYLIST if greylisting() else "")
    for name, more in (("not configured", ""), ("checks configured, unused", configured)):
        runs = bench_idle.idle_memory(root, "bench", more)
        print("  %-40s %10.1f %10.1f" % (name, statistics.median(r for r, _ in runs) / 1024,
                                         statistics.median(p for _, p in runs) / 1024))
    plain = set(bench_idle.idle_modules(root, "bench"))
    extra = sorted(set(bench_idle.idle_modules(root, "bench", configured)) - plain)
    print("  modules the configured idle daemon adds: %s" % (" ".join(extra) or "none"))


def main():
    if shutil.which("smtp-source") is None:
        raise SystemExit("smtp-source (Debian package postfix) is not installed: nothing to run")
    if shutil.which("dnsmasq") is None:
        raise SystemExit("dnsmasq (Debian package dnsmasq-base) is not installed")
    base = peers.fresh_dir("masq-bench-filters-")
    try:
        print("accept rate: smtp-source from ::1, %d sessions, %d messages of ~2 KB, medians "
              "of %d turns" % (bench_smtp.SESSIONS, bench_smtp.MESSAGES, RUNS))
        rates = accept_rates(base)
        off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
        print("  %-40s %10s   %s" % ("", "messages/s", "each turn"))
        on_name = "dnsbl+dnswl+check_helo%s on" % ("+greylist" if greylisting() else "")
        for name, values in (("checks off", rates["off"]), (on_name, rates["on"])):
            print("  %-40s %10.0f   %s" % (name, statistics.median(values),
                                           " ".join("%.0f" % v for v in values)))
        pairs = sorted(100.0 * (a - b) / a for a, b in zip(rates["off"], rates["on"]))
        print("  slower by %.1f %% (medians); by %.1f %% as the median of each pair of turns "
              "(%s)   (goal: <= 10 %%)" % (100.0 * (off - on) / off, statistics.median(pairs),
                                           " ".join("%.0f" % p for p in pairs)))
        idle(peers.ROOT)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
