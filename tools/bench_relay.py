#!/usr/bin/env python3
"""Measure relaying end to end: smtp-source (persistent sessions) -> MTA -> smtp-sink.

Prints figures (medians of several turns); asserts nothing. Run: `python3 tools/bench_relay.py`
(the Postfix peer needs root). Everything listens on 127.0.0.1; spools and queues are fresh
folders under /var/tmp.

  load      Postfix's smtp-source: 10 sessions that stay connected (`-d`), 2,000 messages
            of about 2 KB to rcpt@dest.example; timed from its start until the sink has
            counted every message (so the MTA's outgoing side is timed too)
  sink      Postfix's smtp-sink (`-c`), a fresh one each turn
  masq      a daemon from this checkout, empty spool, one always-online route 'isp' to the
            sink (tls none): mail is tried at once as it arrives
  Postfix   a throwaway instance (tools/peers.py RelayingPostfix, nothing deferred)
            relaying everything to [127.0.0.1]:sink with its defaults
  CPU       user + system seconds of the MTA's processes during the turn (Postfix: the
            master and its children)

Turns alternate (masq, Postfix, masq, ...) so that load from elsewhere falls on both alike.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers                                      # noqa: E402
from bench_flush import cpu_seconds, wait_until   # noqa: E402

MESSAGES = 2000
SESSIONS = 10
RUNS = 3
TIMEOUT = 180.0
ROUTE = """
config route 'isp'
\toption smarthost '127.0.0.1:{port}'
\toption tls 'none'
"""
MASQ_EXTRA = "\toption max_connections_per_ip '50'\n\toption do_queue '0'\n"


def load(port, sink, count=MESSAGES):
    """Run smtp-source against port; return seconds until the sink has count messages."""
    before = sink.counters()["mesg"]
    cmd = ["smtp-source", "-d", "-s", str(SESSIONS), "-m", str(count), "-l", "2048",
           "-f", "a@example.org", "-t", "rcpt@dest.example", "127.0.0.1:%d" % port]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError("smtp-source to port %d failed: %s" % (port, done.stderr.strip()))
    if not wait_until(lambda: sink.counters()["mesg"] - before >= count, TIMEOUT):
        raise RuntimeError("the sink got %d of %d messages"
                           % (sink.counters()["mesg"] - before, count))
    return time.perf_counter() - start


def masq_turn(base):
    with peers.SmtpSink(os.path.join(base, "sink"), peers.free_port()) as sink:
        extra = MASQ_EXTRA + ROUTE.format(port=sink.port)
        daemon = peers.MasqDaemon(os.path.join(base, "masq"), peers.free_port(), extra)
        with daemon:
            time.sleep(0.5)
            cpu = cpu_seconds([daemon.pid], [daemon.pid])
            seconds = load(daemon.port, sink)
            cpu = cpu_seconds([daemon.pid], [daemon.pid]) - cpu
    return seconds, cpu


def postfix_turn(base):
    with peers.SmtpSink(os.path.join(base, "sink"), peers.free_port()) as sink:
        with peers.RelayingPostfix(os.path.join(base, "postfix"), peers.free_port(),
                                   sink.port, hold=False) as postfix:
            time.sleep(0.5)
            pids = [postfix._master_pid()]

            def cpu():
                kids = postfix.children()
                return cpu_seconds(pids + kids, pids)
            start_cpu = cpu()
            seconds = load(postfix.port, sink)
            used = cpu() - start_cpu
    return seconds, used


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="timed turns per peer")
    args = parser.parse_args()
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            raise SystemExit("%s (Debian package postfix) is not installed" % tool)
    base = peers.fresh_dir("masq-bench-relay-")
    peers_run = [("masq", "masq daemon (route always online)", masq_turn)]
    if os.geteuid() == 0 and shutil.which("postfix"):
        peers_run.append(("postfix", "Postfix (relayhost the sink)", postfix_turn))
    results = {key: [] for key, _, _ in peers_run}
    try:
        for n in range(args.runs):
            for key, _, run in peers_run:
                results[key].append(run(os.path.join(base, "%s-%d" % (key, n))))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("Relaying %d messages of ~2 KB: smtp-source -d, %d sessions -> MTA -> smtp-sink; "
          "medians of %d turns" % (MESSAGES, SESSIONS, args.runs))
    print("  %-36s %10s %8s %6s" % ("peer", "messages/s", "seconds", "CPU s"))
    for key, name, _ in peers_run:
        runs = results[key]
        seconds = statistics.median(s for s, _ in runs)
        print("  %-36s %10.0f %8.2f %6.2f" % (name, MESSAGES / seconds, seconds,
                                               statistics.median(c for _, c in runs)))
        print("  %-36s each turn: %s messages/s" % (
            "", " ".join("%.0f" % (MESSAGES / s) for s, _ in runs)))


if __name__ == "__main__":
    main()
