#!/usr/bin/env python3
"""Measure what privilege separation costs: the memory of the root-owned local delivery
process beside the daemon that runs as `option user`.

Prints figures; asserts nothing. Needs root and useradd (two throw-away accounts, removed
at the end). Run: `python3 tools/bench_privsep.py [--messages 20]`.

For the daemon and its helper: Rss, Pss and Private_Dirty (/proc/PID/smaps_rollup; a
forked process shares its parent's pages until either writes them, so Private_Dirty is
what the second process really adds) while idle, and again after --messages local
deliveries over SMTP.
"""

import argparse
import os
import shutil
import smtplib
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from helpers import Daemon, free_port, wait_for, write_config  # noqa: E402
from local_user import LocalUser, open_dir  # noqa: E402

FIELDS = ("Rss", "Pss", "Private_Dirty")


def rollup(pid):
    values = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in FIELDS:
                values[key] = int(rest.split()[0])
    return values


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                if f.read().rpartition(")")[2].split()[1] == str(pid):
                    found.append(int(entry))
        except (OSError, IndexError):
            continue
    return found


def show(label, pid):
    print("  %-22s %s" % (label, "  ".join("%s %6d kB" % (k, v)
                                           for k, v in rollup(pid).items())))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args(argv)
    if os.getuid() != 0:
        print("bench_privsep: skipped, needs root (the daemon drops to a throw-away user)")
        return 0
    base = open_dir()
    try:
        with LocalUser() as daemon_user, LocalUser() as rcpt:
            port = free_port()
            conf = write_config(os.path.join(base, "masq.conf"), os.path.join(base, "spool"),
                                extra="\tlist listen 'smtp://127.0.0.1:%d'\n"
                                      "\toption user '%s'\n" % (port, daemon_user.name))
            daemon = Daemon(conf, wait_port=port).start()
            try:
                [helper] = wait_for(lambda: children(daemon.proc.pid))
                print("idle:")
                show("daemon (as the user)", daemon.proc.pid)
                show("helper (root)", helper)
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    for i in range(args.messages):
                        client.sendmail("a@example.org", ["%s@test.example" % rcpt.name],
                                        "Subject: %d\r\n\r\nhello\r\n" % i)
                box = os.path.join(base, "mail", rcpt.name)
                wait_for(lambda: os.path.exists(box) and
                         open(box, "rb").read().count(b"\nhello\n") >= args.messages, 60)
                time.sleep(0.5)
                print("after %d local deliveries:" % args.messages)
                show("daemon (as the user)", daemon.proc.pid)
                show("helper (root)", helper)
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
