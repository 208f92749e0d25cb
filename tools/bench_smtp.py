#!/usr/bin/env python3
"""Measure SMTP accept rate: masq against Postfix and aiosmtpd, in the same run; masq's memory.

Prints figures (medians of several runs); asserts nothing. Run: `python3 tools/bench_smtp.py`
(or `make bench`); the Postfix peer needs root. Everything listens on 127.0.0.1.

  load        Postfix's smtp-source: 10 concurrent sessions, 2,000 messages of about 2 KB,
              a new connection per message, timed end to end (messages/s). smtp-source
              stops with an error unless every message gets a 2xx reply. The peers take
              turns (masq, Postfix, aiosmtpd, masq, ...) so that load from elsewhere on the
              machine falls on all alike, and each turn starts from an empty store
  masq        a daemon from this checkout, a fresh one with an empty spool (/var/tmp) each
              turn: relay_net 127.0.0.0/8, b@test.example a local user (maildir under the
              temporary folder), do_queue set, no route out
  Postfix     a throwaway instance (tools/peers.py): smtpd, cleanup's fsync, then qmgr hands
              each message to the discard transport; the next turn waits for its queue to
              drain, so its deliveries do not slow the other peers
  aiosmtpd    each message written to its own file and fsync'ed before the 250
  router      the router's case: a route whose link is down (`file:` detector, the file
              absent), no do_queue, mail for a remote domain that only that route serves; a
              fresh masq with 0, 10,000 and 50,000 messages already waiting for it (written
              into the spool before the daemon starts), and Postfix's rate beside each,
              after one unmeasured warm-up turn of each; masq's VmRSS idle with them
              waiting, before the load
  memory      masq's VmRSS idle before and after a turn's load; the growth while it accepts
              one 50 MB message streamed in 64 KB chunks (a fresh daemon, sampled every 20 ms)
  syncs       fdatasync and fsync calls per accepted message, from `strace -f -c` around a
              separate daemon, children included (strace slows it, which changes how many
              messages share a group commit); without strace: reported as not measured
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers                                      # noqa: E402

RUNS = 3
MESSAGES = 2000
SESSIONS = 10
WAITING = (0, 10000, 50000)
REMOTE = "c@offline.example"
STRACE_MESSAGES = 1000
BIG_SIZE = 50 * 1024 * 1024
LINE = b"x" * 78 + b"\r\n"
CHUNK = LINE * (65536 // len(LINE))
# Postfix's own default client limit (50 connections per client) for a like-for-like load.
MASQ_EXTRA = ("\toption max_connections_per_ip '50'\n"
              "\toption max_message_size '60M'\n")
# The router: queue_only off, one route out whose link is down (the flag file never exists).
ROUTER_EXTRA = (MASQ_EXTRA + "\toption do_queue '0'\n\n"
                "config route 'uplink'\n\toption online 'file:{base}/uplink-is-up'\n"
                "\toption smarthost '127.0.0.1:9'\n\toption tls 'none'\n")


def smtp_source(port, messages=MESSAGES, rcpt="b@test.example", host="127.0.0.1"):
    """Send messages with smtp-source to host:port (an IPv6 host in brackets); return
    messages per second."""
    cmd = ["smtp-source", "-s", str(SESSIONS), "-m", str(messages), "-l", "2048",
           "-f", "a@example.org", "-t", rcpt, "%s:%d" % (host, port)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError("smtp-source to port %d failed: %s" % (port, done.stderr.strip()))
    return messages / elapsed


def rss_mb(pid, field="VmRSS"):
    """Return a /proc/PID/status memory field in MB."""
    return peers.proc_status(pid)[field] / 1024


def settled_rss(pid):
    """Return VmRSS in MB after the daemon has been left alone for a second."""
    time.sleep(1.0)
    return rss_mb(pid)


def masq_turn(base, messages=MESSAGES):
    """Run the load against a fresh masq daemon on base; return (rate, RSS before, after)."""
    with peers.MasqDaemon(base, peers.free_port(), MASQ_EXTRA) as daemon:
        before = settled_rss(daemon.pid)
        rate = smtp_source(daemon.port, messages)
        after = settled_rss(daemon.pid)
    shutil.rmtree(base, ignore_errors=True)
    return rate, before, after


def postfix_turn(postfix, timeout=120, rcpt="b@test.example"):
    """Run the load against Postfix, then wait until its queue has drained; return the rate."""
    rate = smtp_source(postfix.port, rcpt=rcpt)
    deadline = time.monotonic() + timeout
    while postfix.queue_size() and time.monotonic() < deadline:
        time.sleep(0.1)
    return rate


def prefill(base, count):
    """Queue count messages for the offline route's domain into the spool of base."""
    spool = os.path.join(base, "spool")
    peers.masq_config(base)
    sys.path.insert(0, peers.ROOT)
    from masq.queue.envelope import Envelope
    from masq.queue.spool import Queue
    body = b"Subject: held\r\n\r\n" + LINE * 25
    queue = Queue(spool).open("runner")
    try:
        for _ in range(count):
            writer = queue.writer()
            writer.write(body)
            writer.commit(Envelope("a@example.org", [REMOTE], received=time.time()))
        queue.sync()
    finally:
        queue.close()


def syncs_per_message(base):
    """Return (fdatasync, fsync) per accepted message under strace, or None without strace."""
    if shutil.which("strace") is None:
        return None
    out = os.path.join(base, "strace.txt")
    wrapper = ["strace", "-f", "-c", "-o", out, "-e", "trace=fdatasync,fsync"]
    with peers.MasqDaemon(base, peers.free_port(), MASQ_EXTRA, wrapper=wrapper) as daemon:
        smtp_source(daemon.port, STRACE_MESSAGES)
    counts = {"fdatasync": 0, "fsync": 0}
    with open(out) as table:
        for line in table:
            fields = line.split()
            if fields and fields[-1] in counts:
                counts[fields[-1]] = int(fields[3])
    return counts["fdatasync"] / STRACE_MESSAGES, counts["fsync"] / STRACE_MESSAGES


class Sampler(threading.Thread):
    """Samples a process's VmRSS every 20 ms and keeps the largest."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self.done.wait(0.02)


def send_big(port, size=BIG_SIZE):
    """Stream one message of about size bytes over SMTP; return (bytes sent, final reply)."""
    chunks = -(-size // len(CHUNK))
    with socket.create_connection(("127.0.0.1", port), 60) as sock:
        replies = sock.makefile("rb")

        def command(line):
            if line:
                sock.sendall(line + b"\r\n")
            while True:
                reply = replies.readline()
                if reply[3:4] != b"-":
                    return reply.decode("ascii", "replace").strip()

        command(b"")
        command(b"EHLO bench.example")
        command(b"MAIL FROM:<a@example.org> SIZE=%d" % (chunks * len(CHUNK) + 30))
        command(b"RCPT TO:<b@test.example>")
        start = command(b"DATA")
        if not start.startswith("354"):
            raise RuntimeError("DATA refused: %s" % start)
        sock.sendall(b"Subject: big\r\n\r\n")
        for _ in range(chunks):
            sock.sendall(CHUNK)
        final = command(b".")
        command(b"QUIT")
    return chunks * len(CHUNK), final


def big_message(base):
    """Return {figure: value} for one ~50 MB message accepted by a fresh daemon."""
    with peers.MasqDaemon(base, peers.free_port(), MASQ_EXTRA) as daemon:
        time.sleep(0.5)
        before = peers.proc_status(daemon.pid)
        sampler = Sampler(daemon.pid)
        sampler.start()
        try:
            sent, reply = send_big(daemon.port)
        finally:
            sampler.done.set()
            sampler.join()
        time.sleep(0.5)
        after = peers.proc_status(daemon.pid)
    peak = sampler.peak
    if after["VmHWM"] > before["VmHWM"]:      # a new high-water mark: set by this message
        peak = max(peak, after["VmHWM"] / 1024)
    return {"sent": sent, "reply": reply,
            "rss_before": before["VmRSS"] / 1024, "rss_after": after["VmRSS"] / 1024,
            "peak": peak, "hwm_growth": (after["VmHWM"] - before["VmHWM"]) / 1024,
            "growth": peak - before["VmRSS"] / 1024}


def start_optional(stack, make, missing, name):
    """Enter make() on stack; on failure note why in missing and return None."""
    try:
        return stack.enter_context(make())
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        missing.append("%s: %s" % (name, str(exc).splitlines()[0]))
        return None


def accept_rates(base, missing):
    """Run the turns; return ({peer: [messages/s]}, [(RSS before, after)] of masq's turns)."""
    rates, memory = {"masq": [], "Postfix": [], "aiosmtpd": []}, []
    with ExitStack() as stack:
        postfix = start_optional(stack, lambda: peers.PostfixInstance(
            os.path.join(base, "postfix"), peers.free_port()), missing, "Postfix")
        aio = start_optional(stack, lambda: peers.AioSmtpd(
            os.path.join(base, "aiosmtpd"), peers.free_port()), missing, "aiosmtpd")
        for turn in range(RUNS):
            rate, before, after = masq_turn(os.path.join(base, "masq-%d" % turn))
            rates["masq"].append(rate)
            memory.append((before, after))
            if postfix:
                rates["Postfix"].append(postfix_turn(postfix))
            if aio:
                rates["aiosmtpd"].append(smtp_source(aio.port))
    return {name: values for name, values in rates.items() if values}, memory


def router_turn(base, waiting):
    """Return (rate, RSS with `waiting` messages queued, RSS after) behind an offline route."""
    prefill(base, waiting)
    extra = ROUTER_EXTRA.format(base=base)
    with peers.MasqDaemon(base, peers.free_port(), extra) as daemon:
        before = settled_rss(daemon.pid)
        rate = smtp_source(daemon.port, rcpt=REMOTE)
        after = settled_rss(daemon.pid)
    shutil.rmtree(base, ignore_errors=True)
    return rate, before, after


def router_rates(base, missing):
    """Print the router's accept rates with 0, 10,000 and 50,000 waiting, Postfix beside."""
    peers.START_TIMEOUT = 300          # recovery of 50,000 messages on a loaded machine
    print("behind an offline route (not do_queue; %d messages to %s)" % (MESSAGES, REMOTE))
    print("  %-34s %10s %12s %12s %12s" % ("", "messages/s", "Postfix", "VmRSS idle",
                                            "VmRSS after"))
    with ExitStack() as stack:
        postfix = start_optional(stack, lambda: peers.PostfixInstance(
            os.path.join(base, "postfix"), peers.free_port()), missing, "Postfix (router)")
        router_turn(os.path.join(base, "warm-up"), 0)        # the first turn of a run is
        if postfix:                                          # slower for both: not counted
            postfix_turn(postfix, rcpt=REMOTE)
        for waiting in WAITING:
            rate, before, after = router_turn(os.path.join(base, "w%d" % waiting), waiting)
            other = postfix_turn(postfix, rcpt=REMOTE) if postfix else None
            print("  %-34s %10.0f %12s %9.1f MB %9.1f MB" % (
                "masq, %d messages waiting" % waiting, rate,
                "%.0f" % other if other else "-", before, after))
    print("  (goals: the three rates within 10 %, each >= 1.5 x Postfix; "
          "VmRSS with 50,000 waiting <= 32 MB)")


def main():
    if shutil.which("smtp-source") is None:
        raise SystemExit("smtp-source (Debian package postfix) is not installed: nothing to run")
    base = peers.fresh_dir("masq-bench-smtp-")
    missing = []
    try:
        print("SMTP accept rate: smtp-source, %d sessions, %d messages of ~2 KB, medians of "
              "%d turns (spool on /var/tmp)" % (SESSIONS, MESSAGES, RUNS))
        rates, memory = accept_rates(base, missing)
        print("  %-34s %10s   %s" % ("peer", "messages/s", "each turn"))
        for name, values in rates.items():
            print("  %-34s %10.0f   %s" % (name, statistics.median(values),
                                           " ".join("%.0f" % v for v in values)))
        router_rates(os.path.join(base, "router"), missing)
        print("masq daemon")
        print("  VmRSS idle: %.1f MB before the load, %.1f MB after %d messages (medians)" % (
            statistics.median(m[0] for m in memory), statistics.median(m[1] for m in memory),
            MESSAGES))
        syncs = syncs_per_message(os.path.join(base, "strace"))
        if syncs:
            print("  syncs per accepted message (strace -f, %d messages): %.3f fdatasync "
                  "(queue log), %.3f fsync (everything else)" % ((STRACE_MESSAGES,) + syncs))
        else:
            missing.append("syncs per message: strace is not installed (apt-get install strace)")
        big = big_message(os.path.join(base, "big"))
        print("  one %.1f MB message: %s" % (big["sent"] / 1e6, big["reply"]))
        print("    VmRSS %.1f MB before, peak %.1f MB while accepting, %.1f MB after; "
              "VmHWM +%.1f MB" % (big["rss_before"], big["peak"], big["rss_after"],
                                  big["hwm_growth"]))
        print("    growth: %.1f MB   (goal: under 2 MB)" % big["growth"])
        for why in missing:
            print("  not measured: %s" % why)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
