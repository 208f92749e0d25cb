#!/usr/bin/env python3
"""Measure flushing a backlog: 2,000 queued ~2 KB messages to smtp-sink, masq against Postfix.

Prints figures (medians of several turns); asserts nothing. Run: `python3 tools/bench_flush.py`
(or `make bench`); the Postfix peer needs root, `--profile` adds a cProfile of masq's one-shot
flush. Everything listens on 127.0.0.1; spools and queues are fresh folders under /var/tmp.

  sink         Postfix's smtp-sink (`-c`): throws mail away and counts messages and SMTP
               sessions itself; a fresh one for every run. Sessions are read once the
               client has closed every connection to it (Postfix caches idle ones for 2 s)
  masq runner  a spool filled in-process (masq.queue Writer, one fdatasync) with 2,000
               messages to rcptN@dest.example, a route 'isp' (smarthost the sink, tls none,
               online 'file:/nonexistent': offline, nothing leaves by itself); timed:
               `python3 -m masq -C CONF flush isp` with no daemon, start to exit
  masq daemon  the same spool behind `masq daemon`; timed: from `masq online isp up` until
               the sink has every message and the spool holds none
  Postfix      a throwaway instance (tools/peers.py RelayingPostfix) relaying everything to
               [127.0.0.1]:sink; fed by smtp-source (10 sessions) while defer_transports
               holds the smtp transport; then defer_transports is emptied and Postfix
               reloaded (untimed); timed: from `postqueue -f` until its queue is empty and
               the sink has every message. Postfix's defaults otherwise (concurrency,
               connection cache)
  CPU          user + system seconds of the flushing processes in the timed span
  syncs        fdatasync and fsync calls per delivered message, from a separate run of each
               under `strace -f -c` (masq: the runner, the daemon; Postfix: strace attached
               to its master and children before `postqueue -f`, so flushing only)

The turns alternate (runner, daemon, Postfix, runner, ...) so that load from elsewhere on
the machine falls on all alike. Every process started here is stopped in a finally.
"""

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers                                      # noqa: E402

sys.path.insert(0, peers.ROOT)

from masq.queue.envelope import Envelope          # noqa: E402
from masq.queue.spool import Queue        # noqa: E402

MESSAGES = 2000
RUNS = 5
RUN_TIMEOUT = 180.0
BODY = (b"From: a@example.org\r\nTo: rcpt@dest.example\r\nSubject: flush bench\r\n\r\n"
        + (b"x" * 76 + b"\r\n") * 25)         # about 2 KB
ROUTE = """
config route 'isp'
\toption smarthost '127.0.0.1:{port}'
\toption tls 'none'
\toption online 'file:/nonexistent'
"""
SYNC_CALLS = ("fdatasync", "fsync")
STRACE = ["strace", "-f", "-c", "-e", "trace=" + ",".join(SYNC_CALLS)]
MASQMAIL_NOTE = ("masqmail's -qo flushed about 1,000 messages/s on this kind of machine "
                 "(reference only: no masqmail build is available here)")


class Missing(Exception):
    """A peer or tool is not available: the figure is reported as not measured."""


def masq_env():
    env = dict(os.environ, PYTHONPATH=peers.ROOT)
    env.pop("MASQ_CONFIG", None)
    return env


def masq_cmd(conf, *args):
    return [sys.executable, "-m", "masq", "-C", conf] + list(args)


def fill(spool, count=MESSAGES):
    """Queue count messages to rcptN@dest.example in spool; one fdatasync for all."""
    queue = Queue(spool).open("runner")
    try:
        now = time.time()
        for n in range(count):
            writer = queue.writer()
            writer.write(BODY)
            writer.commit(Envelope("a@example.org", ["rcpt%d@dest.example" % n],
                                   received=now))
        queue.sync()
    finally:
        queue.close()


def wait_until(predicate, timeout, poll=0.01):
    """Poll predicate until true; return whether it became true in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def sink_totals(sink, before, timeout=10.0):
    """Wait for the client's connections to the sink to close; return (messages, sessions)."""
    wait_until(lambda: sink.connections() == 0, timeout, 0.05)
    time.sleep(0.1)                       # smtp-sink counts a session when it has ended
    after = sink.counters()
    return after["mesg"] - before["mesg"], after["sess"] - before["sess"]


def cpu_seconds(pids, reaped=()):
    """Return the CPU time (user + system) of pids, plus what reaped pids' children used."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])        # utime, stime
        if pid in reaped:
            total += int(fields[13]) + int(fields[14])    # cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def strace_counts(path):
    """Return {call: count} from a `strace -c -o path` table."""
    counts = dict.fromkeys(SYNC_CALLS, 0)
    with open(path) as table:
        for line in table:
            fields = line.split()
            if fields and fields[-1] in counts and fields[3].isdigit():
                counts[fields[-1]] = int(fields[3])
    return counts


# masq


def masq_runner(base, strace=False):
    """Flush a filled spool with `masq flush isp` (no daemon); return the run's figures."""
    with peers.SmtpSink(os.path.join(base, "sink"), peers.free_port()) as sink:
        conf = peers.masq_config(os.path.join(base, "masq"), ROUTE.format(port=sink.port))
        spool = os.path.join(base, "masq", "spool")
        fill(spool)
        trace = os.path.join(base, "strace.txt")
        wrapper = STRACE + ["-o", trace] if strace else []
        before = sink.counters()
        cpu = children_cpu()
        start = time.perf_counter()
        done = subprocess.run(wrapper + masq_cmd(conf, "flush", "isp"), env=masq_env(),
                              cwd=peers.ROOT, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
        elapsed = time.perf_counter() - start
        cpu = children_cpu() - cpu
        if done.returncode != 0:
            raise RuntimeError("masq flush isp exited %d: %s" % (
                done.returncode, done.stderr.strip()[-500:]))
        delivered, sessions = sink_totals(sink, before)
        left = peers.masq_queued(spool)
    return {"seconds": elapsed, "delivered": delivered, "sessions": sessions, "left": left,
            "cpu": cpu, "syncs": strace_counts(trace) if strace else None,
            "said": done.stdout.strip()}


def masq_daemon(base, strace=False):
    """Start a daemon on a filled spool, `masq online isp up`, time until it is empty."""
    with peers.SmtpSink(os.path.join(base, "sink"), peers.free_port()) as sink:
        trace = os.path.join(base, "strace.txt")
        wrapper = STRACE + ["-o", trace] if strace else []
        daemon = peers.MasqDaemon(os.path.join(base, "masq"), peers.free_port(),
                                  ROUTE.format(port=sink.port), wrapper=wrapper)
        spool = os.path.join(daemon.base, "spool")
        fill(spool)
        with daemon:
            time.sleep(0.5)               # let it settle (status page, detectors)
            before = sink.counters()
            pid = daemon.pid
            cpu = cpu_seconds([pid], [pid])
            start = time.perf_counter()
            done = subprocess.run(masq_cmd(daemon.conf, "online", "isp", "up"),
                                  env=masq_env(), cwd=peers.ROOT, capture_output=True,
                                  text=True, timeout=60)
            if done.returncode != 0:
                raise RuntimeError("masq online isp up exited %d: %s" % (
                    done.returncode, done.stderr.strip()[-500:]))
            wait_until(lambda: sink.counters()["mesg"] - before["mesg"] >= MESSAGES,
                       RUN_TIMEOUT)
            wait_until(lambda: peers.masq_queued(spool) == 0, 30.0, 0.02)
            elapsed = time.perf_counter() - start
            cpu = cpu_seconds([pid], [pid]) - cpu
            delivered, sessions = sink_totals(sink, before)
            left = peers.masq_queued(spool)
    return {"seconds": elapsed, "delivered": delivered, "sessions": sessions, "left": left,
            "cpu": cpu, "syncs": strace_counts(trace) if strace else None}


# Postfix


def smtp_source(port, count=MESSAGES):
    """Submit count ~2 KB messages (10 sessions) to rcpt@dest.example, numbered (-N)."""
    cmd = ["smtp-source", "-s", "10", "-m", str(count), "-l", "2048", "-N",
           "-f", "a@example.org", "-t", "rcpt@dest.example", "127.0.0.1:%d" % port]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError("smtp-source to port %d failed: %s" % (port, done.stderr.strip()))


class Tracer:
    """strace -f -c attached to running processes; stop() returns {call: count}."""

    def __init__(self, pids, path):
        self.path = path
        self.err_path = path + ".err"
        cmd = STRACE + ["-o", path]
        for pid in pids:
            cmd += ["-p", str(pid)]
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)
        self.attached = wait_until(lambda: self._attached() >= len(pids), 10.0, 0.02)

    def _attached(self):
        with open(self.err_path, errors="replace") as err:
            return err.read().count(" attached")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)    # detach, write the table
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return strace_counts(self.path)


def postfix_run(base, strace=False):
    """Fill a held Postfix queue, release it, time `postqueue -f` until it is empty."""
    with ExitStack() as stack:
        sink = stack.enter_context(peers.SmtpSink(os.path.join(base, "sink"),
                                                  peers.free_port()))
        postfix = stack.enter_context(peers.RelayingPostfix(
            os.path.join(base, "postfix"), peers.free_port(), sink.port, hold=True))
        smtp_source(postfix.port)
        held = wait_until(lambda: postfix.queue_files(("maildrop", "incoming", "active")) == 0
                          and postfix.queue_files(("deferred",)) >= MESSAGES, 60.0, 0.05)
        if not held:
            raise RuntimeError("postfix: %d messages deferred, %d still coming in" % (
                postfix.queue_files(("deferred",)),
                postfix.queue_files(("maildrop", "incoming", "active"))))
        postfix.release()
        tracer = None
        if strace:
            pids = [postfix._master_pid()] + postfix.children()
            tracer = Tracer(pids, os.path.join(base, "strace.txt"))
            stack.callback(tracer.stop)
            if not tracer.attached:
                raise RuntimeError("strace did not attach to Postfix's processes")
        master = postfix._master_pid()
        before = sink.counters()
        cpu = cpu_seconds([master] + postfix.children(), [master])
        start = time.perf_counter()
        postfix.flush()
        wait_until(lambda: sink.counters()["mesg"] - before["mesg"] >= MESSAGES
                   and postfix.queue_files() == 0, RUN_TIMEOUT)
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds([master] + postfix.children(), [master]) - cpu
        delivered, sessions = sink_totals(sink, before)
        left = postfix.queue_files()
        syncs = tracer.stop() if tracer else None
    return {"seconds": elapsed, "delivered": delivered, "sessions": sessions, "left": left,
            "cpu": cpu, "syncs": syncs}


def postfix_version():
    done = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                          text=True)
    return done.stdout.strip() or "?"


# the report


PEERS = (
    ("runner", "masq runner (masq flush isp)", masq_runner),
    ("daemon", "masq daemon (masq online isp up)", masq_daemon),
    ("postfix", "Postfix (postqueue -f)", postfix_run),
)


def available(missing):
    """Return the peer keys that can run here; note why the others cannot."""
    keys = ["runner", "daemon"]
    if shutil.which("postfix") is None:
        missing.append("Postfix: not installed (Debian package postfix)")
    elif os.geteuid() != 0:
        missing.append("Postfix: a throwaway instance needs root")
    else:
        keys.append("postfix")
    return keys


def turn(base, key, run, strace, missing, problems):
    """Run one peer once in base (removed after); return its figures or None."""
    try:
        result = run(base, strace=strace)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        missing.append("%s%s: %s" % (key, " under strace" if strace else "",
                                     str(exc).splitlines()[0] if str(exc) else repr(exc)))
        return None
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if result["delivered"] != MESSAGES or result["left"]:
        problems.append("%s%s: the sink got %d of %d messages, %d left queued" % (
            key, " under strace" if strace else "", result["delivered"], MESSAGES,
            result["left"]))
    return result


def profile_runner(base):
    """Run one masq flush under cProfile; print the top 25 functions by cumulative time."""
    import pstats
    try:
        with peers.SmtpSink(os.path.join(base, "sink"), peers.free_port()) as sink:
            conf = peers.masq_config(os.path.join(base, "masq"), ROUTE.format(port=sink.port))
            fill(os.path.join(base, "masq", "spool"))
            out = os.path.join(base, "flush.prof")
            cmd = [sys.executable, "-m", "cProfile", "-o", out] + masq_cmd(
                conf, "flush", "isp")[1:]
            start = time.perf_counter()
            subprocess.run(cmd, env=masq_env(), cwd=peers.ROOT, capture_output=True,
                           timeout=RUN_TIMEOUT)
            elapsed = time.perf_counter() - start
        print("cProfile of `masq flush isp` (%d messages, %.2f s under the profiler), top 25 "
              "by cumulative time:" % (MESSAGES, elapsed))
        sys.stdout.flush()
        pstats.Stats(out, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="timed turns per peer")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one masq flush (cProfile, top 25 cumulative)")
    args = parser.parse_args()
    if shutil.which("smtp-sink") is None:
        raise SystemExit("smtp-sink (Debian package postfix) is not installed: nothing to run")
    base = peers.fresh_dir("masq-bench-flush-")
    missing, problems = [], []
    try:
        keys = available(missing)
        print("Flushing %d queued messages of ~%d bytes to smtp-sink on 127.0.0.1: medians of "
              "%d turns (spool and queue on /var/tmp)" % (MESSAGES, len(BODY), args.runs))
        results = {key: [] for key in keys}
        for n in range(args.runs):
            for key, _, run in PEERS:
                if key in keys:
                    got = turn(os.path.join(base, "%s-%d" % (key, n)), key, run, False,
                               missing, problems)
                    if got:
                        results[key].append(got)
        syncs = {}
        if shutil.which("strace") is None:
            missing.append("syncs per message: strace is not installed (apt-get install strace)")
        else:
            for key, _, run in PEERS:
                if key in keys:
                    got = turn(os.path.join(base, "%s-strace" % key), key, run, True,
                               missing, problems)
                    if got and got["delivered"]:
                        syncs[key] = {call: count / got["delivered"]
                                      for call, count in got["syncs"].items()}
        print("  %-36s %10s %8s %6s %14s %14s %10s" % (
            "peer", "messages/s", "seconds", "CPU s", "SMTP sessions", "fdatasync/msg",
            "fsync/msg"))
        for key, name, _ in PEERS:
            runs = results.get(key)
            if not runs:
                continue
            if key == "postfix":
                name = "Postfix %s (postqueue -f)" % postfix_version()
            seconds = statistics.median(r["seconds"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            sessions = statistics.median(r["sessions"] for r in runs)
            sync = syncs.get(key)
            print("  %-36s %10.0f %8.2f %6.2f %14s %14s %10s" % (
                name, MESSAGES / seconds, seconds, cpu, "%g" % sessions,
                "%.3f" % sync["fdatasync"] if sync else "-",
                "%.3f" % sync["fsync"] if sync else "-"))
            print("  %-36s %10s   each turn: %s messages/s; %s sessions" % (
                "", "", " ".join("%.0f" % (MESSAGES / r["seconds"]) for r in runs),
                " ".join(str(r["sessions"]) for r in runs)))
        for run in results.get("runner", [])[:1]:
            print("  masq flush isp said: %s" % run["said"])
        print("  reference: %s" % MASQMAIL_NOTE)
        print("  seconds: masq runner from process start to exit (start-up, queue scan "
              "included); masq daemon from `masq online isp up` to an empty spool; Postfix "
              "from `postqueue -f` to an empty queue")
        print("  CPU s: user + system time over that span (masq: the process; Postfix: "
              "master and all its children); syncs: one run each under strace -f")
        for why in problems:
            print("  check failed: %s" % why)
        for why in missing:
            print("  not measured: %s" % why)
        if args.profile:
            profile_runner(os.path.join(base, "profile"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
