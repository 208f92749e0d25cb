#!/usr/bin/env python3
"""Measure `sendmail -t -oi` submission latency: masq against Postfix, in the same run.

Prints figures (median and 90th percentile of N runs); asserts nothing. Run:
`python3 tools/bench_submit.py` (or `make bench`); Postfix's part needs root.

  masq      installed as `make install` does into a temporary prefix (the `-IS` launcher,
            sbin/sendmail -> ../bin/masq), configured by a temporary file with its spool
            under /var/tmp. Twice: with no daemon (a submission is the queue append and its
            fdatasync; the poke of an absent daemon fails at once), and with a daemon
            running (do_queue: a byte in its pickup FIFO pokes it, sendmail does not wait
            for it to take the message)
  Postfix   Debian's /usr/sbin/sendmail: postdrop writes the message into the maildrop
            queue and fsyncs it. Without a daemon: no master runs, nothing is picked up, and
            the maildrop files this run made are removed at the end. With a daemon: a
            throwaway instance (tools/peers.py, `sendmail -C DIR`) whose pickup takes the
            message on

The two are timed alternately (masq, Postfix, masq, ...) so that load from elsewhere on the
machine falls on both alike, after warm-up runs (the first masq run compiles the .pyc files).
Also printed: masq's start-up alone (`masq -bV`, imports only) beside a bare `python3 -IS`,
and the syncs each submission makes (from strace, when it is installed).
"""

import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers                                      # noqa: E402

ROOT = peers.ROOT
RUNS = 30
DAEMON_RUNS = 200
WARMUP = 3
MESSAGE = b"To: a@example.org\nSubject: x\n\nhi\n"
MAILDROP = "/var/spool/postfix/maildrop"
POSTFIX_MAIN = "/etc/postfix/main.cf"
LABELS = {"masq": "masq sendmail -t -oi", "postfix": "Postfix sendmail -t -oi",
          "masq -bV": "masq -bV (start-up only)",
          "masq+daemon": "masq sendmail -t -oi, daemon running",
          "postfix+daemon": "Postfix sendmail -t -oi, master running"}
MINIMAL_MAIN = "compatibility_level = 3.6\nmydestination =\ninet_interfaces = loopback-only\n"


def install_masq(prefix):
    """Install masq into prefix as `make install PREFIX=prefix` does; return sbin/sendmail."""
    done = subprocess.run(["make", "-s", "-C", ROOT, "install", "PREFIX=" + prefix,
                           "DESTDIR=", "PYTHON=" + sys.executable],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError("make install failed: %s" % (done.stderr or done.stdout))
    return os.path.join(prefix, "sbin", "sendmail")


def postfix_sendmail():
    """Return (path of Postfix's sendmail, None) or (None, why it cannot be measured)."""
    for path in ("/usr/sbin/sendmail.postfix", "/usr/sbin/sendmail"):
        if os.path.isfile(path) and os.access(path, os.X_OK):
            with open(path, "rb") as binary:
                if b"postdrop" in binary.read():
                    return path, None
            return None, "%s is not Postfix's sendmail" % path
    return None, "Postfix is not installed (no /usr/sbin/sendmail)"


def run_once(cmd):
    """Run cmd with the test message on stdin; return its wall time in seconds."""
    start = time.perf_counter()
    done = subprocess.run(cmd, input=MESSAGE, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=60)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(cmd), done.returncode,
                                                 done.stderr.decode(errors="replace")))
    return elapsed


def timed_alternately(commands, runs=RUNS):
    """Time each command runs times, taking turns; return {name: [seconds]}."""
    for _ in range(WARMUP):
        for cmd in commands.values():
            run_once(cmd)
    times = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            times[name].append(run_once(cmd))
    return times


def p90(values):
    """Return the 90th percentile of values."""
    return statistics.quantiles(values, n=10)[8]


def syscalls(cmd):
    """Return {syscall: calls, "total": calls} of one submission (strace -f -c), or None."""
    if shutil.which("strace") is None:
        return None
    out = "/var/tmp/masq-bench-strace.%d" % os.getpid()
    try:
        subprocess.run(["strace", "-f", "-c", "-o", out] + cmd,
                       input=MESSAGE, capture_output=True, timeout=60, check=True)
        counts = {"fsync": 0, "fdatasync": 0}
        with open(out) as table:
            for line in table:
                fields = line.split()
                if len(fields) >= 5 and fields[3].isdigit():
                    counts[fields[-1]] = int(fields[3])
                elif fields and fields[-1] == "total":
                    counts["total"] = int(fields[2])
        return counts
    finally:
        if os.path.exists(out):
            os.unlink(out)


def syncs_per_submission(cmd):
    """Return 'N fsync + M fdatasync' one submission makes (strace -f -c), or None."""
    counts = syscalls(cmd)
    return counts and "%(fsync)d fsync + %(fdatasync)d fdatasync" % counts


def syscall_line(cmd):
    """Return 'N system calls (M newfstatat, K openat)' of one submission, or None."""
    counts = syscalls(cmd)
    return counts and "%d system calls (%d newfstatat, %d openat)" % (
        counts.get("total", 0), counts.get("newfstatat", 0), counts.get("openat", 0))


def maildrop_files():
    """Return the names in Postfix's maildrop folder (empty set if unreadable)."""
    try:
        return set(os.listdir(MAILDROP))
    except OSError:
        return set()


def report(times, figures):
    """Print the side-by-side table, then the other figures."""
    print("  %-42s %10s %10s" % ("", "median ms", "p90 ms"))
    for name, values in times.items():
        print("  %-42s %10.1f %10.1f" % (LABELS.get(name, name), statistics.median(values) * 1e3,
                                         p90(values) * 1e3))
    for line in figures:
        print("  " + line)


def other_figures(times, commands, why, spool):
    """Return the lines printed under the table: ratio, syncs, what masq queued."""
    lines = []
    if "postfix" in commands:
        ratio = statistics.median(times["masq"]) / statistics.median(times["postfix"])
        lines.append("masq / Postfix (median): %.2fx   (goal: within 2x)" % ratio)
    else:
        lines.append("Postfix not measured: %s" % why)
    for name, cmd in commands.items():
        syncs = syncs_per_submission(cmd)
        lines.append("%-8s syncs per submission: %s"
                     % (name, syncs or "not measured (strace is not installed)"))
    made = RUNS + WARMUP + (1 if shutil.which("strace") else 0)
    lines.append("masq queued %d messages (%d submissions)" % (peers.masq_queued(spool), made))
    return lines


def with_daemons(base, sendmail, postfix, why):
    """Time masq and Postfix with their daemons running; return (times, figure lines)."""
    lines = []
    with peers.MasqDaemon(os.path.join(base, "daemon"), peers.free_port(),
                          "\toption do_queue '1'\n") as daemon:
        commands = {"masq+daemon": [sendmail, "-C", daemon.conf, "-t", "-oi"]}
        instance = None
        if postfix:
            try:
                instance = peers.PostfixInstance(os.path.join(base, "postfix"),
                                                 peers.free_port()).start()
                commands["postfix+daemon"] = [postfix, "-C", instance.conf_dir, "-t", "-oi"]
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                why = str(exc).splitlines()[0]
        try:
            times = timed_alternately(commands, DAEMON_RUNS)
            if "postfix+daemon" in times:
                ratio = (statistics.median(times["masq+daemon"])
                         / statistics.median(times["postfix+daemon"]))
                lines.append("masq / Postfix with daemons (median): %.2fx   (goal: at most 1x)"
                             % ratio)
            else:
                lines.append("Postfix with a daemon not measured: %s" % why)
            for name, cmd in commands.items():
                lines.append("%-15s per submission: %s" % (
                    name, syscall_line(cmd) or "not measured (strace is not installed)"))
        finally:
            if instance is not None:
                instance.stop()
    return times, lines


def main():
    base = peers.fresh_dir("masq-bench-submit-")
    created_main = False
    before = maildrop_files()
    try:
        sendmail = install_masq(os.path.join(base, "prefix"))
        commands = {"masq": [sendmail, "-C", peers.masq_config(base), "-t", "-oi"]}
        postfix, why = postfix_sendmail()
        if postfix and not os.path.exists(POSTFIX_MAIN):
            with open(POSTFIX_MAIN, "w") as out:
                out.write(MINIMAL_MAIN)
            created_main = True
        if postfix:
            commands["postfix"] = [postfix, "-t", "-oi"]
        print("sendmail -t -oi submission latency (%d runs each, %d with daemons running, "
              "alternating, after %d warm-up; spool on /var/tmp)" % (RUNS, DAEMON_RUNS, WARMUP))
        times = timed_alternately(commands)
        times.update(timed_alternately({
            "masq -bV": [os.path.join(base, "prefix", "bin", "masq"), "-bV"],
            "python3 -IS -c pass": [sys.executable, "-IS", "-c", "pass"]}))
        figures = other_figures(times, commands, why, os.path.join(base, "spool"))
        daemon_times, daemon_lines = with_daemons(base, sendmail, postfix, why)
        times.update(daemon_times)
        report(times, figures + daemon_lines)
    finally:
        made = maildrop_files() - before
        for name in made:
            os.unlink(os.path.join(MAILDROP, name))
        if made:
            print("  removed %d Postfix maildrop files made by this run" % len(made))
        if created_main:
            os.unlink(POSTFIX_MAIN)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
