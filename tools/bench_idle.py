#!/usr/bin/env python3
"""Measure an idle daemon's memory: VmRSS and PSS with an empty queue, after start-up.

Prints figures; asserts nothing. Run: `python3 tools/bench_idle.py [--root DIR]` (or
`make bench`); DIR is the checkout to measure (default: this one), so two trees can be
compared in the same run.

Each daemon runs as the installed launcher runs it (`python3 -I -S`, no site-packages),
with its spool under /var/tmp, and is measured two seconds after it logs that it listens
(nothing connects to it: a first client loads the SMTP session's modules),
from /proc/PID/smaps_rollup (Rss, Pss: a shared library page counts once per process
in Rss, a share of it in Pss). Two configurations:

  bench     tools/peers.masq_config: an SMTP listener on loopback, local delivery, no route
  openwrt   the same plus `status_listen` (the status page), as openwrt/masq/files/masq.config

Also printed: a bare `python3 -I -S` waiting in sleep, the floor any Python daemon stands
on, and the modules each idle daemon has imported (from `-X importtime`, a separate start).
"""

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers                                      # noqa: E402

STARTS = 5
SETTLE = 2.0
CONFIGS = ("bench", "openwrt")


def memory(pid):
    """Return {"Rss": kB, "Pss": kB} from /proc/PID/smaps_rollup."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as rollup:
        for line in rollup:
            fields = line.split()
            if len(fields) == 3 and fields[2] == "kB":
                out[fields[0].rstrip(":")] = int(fields[1])
    return out


def config(base, kind, more=""):
    """Write the configuration kind (plus the options in `more`) for a daemon in base;
    return (path, SMTP port)."""
    port = peers.free_port()
    extra = "\tlist listen 'smtp://127.0.0.1:%d'\n" % port + more
    if kind == "openwrt":
        extra += "\toption status_listen '127.0.0.1:%d'\n" % peers.free_port()
    return peers.masq_config(base, extra), port


def start_daemon(root, base, kind, flags=(), more=""):
    """Start a daemon from checkout root; return (process, stderr path)."""
    conf, _ = config(base, kind, more)
    launcher = ("import sys; sys.path.insert(0, %r); from masq.cli import main; "
                "sys.exit(main(['masq'] + sys.argv[1:]))" % root)
    log = os.path.join(base, "daemon.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-I", "-S"] + list(flags) +
                                ["-c", launcher, "-C", conf, "daemon"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, cwd="/")
    wait_listening(proc, log)
    return proc, log


def wait_listening(proc, log, timeout=30.0):
    """Wait until the daemon's log says it listens: connecting to see would make it load
    what its first client needs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, "rb") as lines:
            if b"listening on" in lines.read():
                return
        if proc.poll() is not None:
            raise RuntimeError("masq daemon exited %s; see %s" % (proc.returncode, log))
        time.sleep(0.05)
    raise RuntimeError("masq daemon did not start listening; see %s" % log)


def stop(proc):
    """Stop a daemon and wait for it."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def idle_memory(root, kind, more=""):
    """Return [(Rss kB, Pss kB)] of STARTS fresh idle daemons (`more`: options added)."""
    out = []
    for _ in range(STARTS):
        base = peers.fresh_dir("masq-bench-idle-")
        try:
            proc, _ = start_daemon(root, base, kind, more=more)
            try:
                time.sleep(SETTLE)
                mem = memory(proc.pid)
                out.append((mem["Rss"], mem["Pss"]))
            finally:
                stop(proc)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return out


def idle_modules(root, kind, more=""):
    """Return the names of the modules an idle daemon has imported."""
    base = peers.fresh_dir("masq-bench-idle-")
    try:
        proc, log = start_daemon(root, base, kind, ("-X", "importtime"), more)
        time.sleep(SETTLE)
        stop(proc)
        with open(log) as lines:
            return [line.split("|")[2].strip() for line in lines
                    if line.startswith("import time:") and "imported package" not in line]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def bare_python():
    """Return (Rss kB, Pss kB) of `python3 -I -S` asleep."""
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(SETTLE)
        mem = memory(proc.pid)
        return mem["Rss"], mem["Pss"]
    finally:
        proc.kill()
        proc.wait()


def main():
    root = peers.ROOT
    if sys.argv[1:2] == ["--root"]:
        root = os.path.abspath(sys.argv[2])
    print("idle daemon memory, empty queue (%s; median of %d starts, %.0f s after it "
          "listens)" % (root, STARTS, SETTLE))
    print("  %-40s %10s %10s" % ("", "VmRSS MB", "PSS MB"))
    rss, pss = bare_python()
    print("  %-40s %10.1f %10.1f" % ("python3 -I -S (sleeping)", rss / 1024, pss / 1024))
    for kind in CONFIGS:
        runs = idle_memory(root, kind)
        print("  %-40s %10.1f %10.1f" % ("masq daemon, %s configuration" % kind,
                                         statistics.median(r for r, _ in runs) / 1024,
                                         statistics.median(p for _, p in runs) / 1024))
    print("  (goal: VmRSS <= 12 MB)")
    for kind in CONFIGS:
        names = idle_modules(root, kind)
        own = sorted(n for n in names if n.startswith("masq"))
        other = sorted(n for n in names if not n.startswith("masq"))
        print("  %s configuration: %d modules imported (%d of masq)" % (kind, len(names),
                                                                        len(own)))
        print("    stdlib: %s" % " ".join(other))
        print("    masq:   %s" % " ".join(own))


if __name__ == "__main__":
    main()
