#!/usr/bin/env python3
"""Measure fetching: 1,000 x 10 KB messages from Dovecot over POP3 with STLS and over IMAP
with STARTTLS, masq against fetchmail, in the same run.

Prints figures (medians of the turns); asserts nothing. Run as root (Dovecot starts as
root): `python3 tools/bench_fetch.py [--messages N] [--turns N]`. Everything listens on
127.0.0.1; Dovecot, spools and mailboxes are fresh folders under /tmp, removed at the end.

  Dovecot    tests/dovecot.py: a test-started Dovecot with its own configuration, a test
             CA, passwd-file users; before every turn the user's Maildir is filled anew
             (untimed) with N messages of about 10 KB
  masq       `masq daemon` with a fetch section (STLS, certificate verified against the
             test CA, do_queue '1': fetched mail is queued, durably, not delivered);
             a first fetch of one message (untimed) loads ssl and the fetch modules;
             timed: `masq fetch box` from start to exit (the control request returns when
             the run has QUIT). RSS: the daemon's VmRSS idle and after the first fetch,
             and its VmHWM over the timed run (reset through /proc/PID/clear_refs)
  fetchmail  `fetchmail -f RC` (STLS/STARTTLS with sslcertck against the same CA, `fetchall
             nokeep`), handing every message to Postfix's smtp-sink over SMTP (which
             throws it away: nothing durable); timed: start to exit. RSS: its ru_maxrss

msg/s is N over the timed span. The turns alternate (masq, fetchmail; POP3, IMAP).
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import dovecot                                    # noqa: E402
from helpers import Daemon, free_port, write_config   # noqa: E402

USER, PASSWORD = "bench", "benchpw"


def fill(server, count):
    """Give the user count messages of about 10 KB (written straight into the Maildir)."""
    server.clear(USER)
    body = b"".join(b"line %04d of the benchmark message, some text to fill it up ..\n" % i
                    for i in range(150))
    for n in range(count):
        server.deliver(USER, b"From: sender@example.org\nTo: bench@example.org\n"
                       b"Subject: bench %d\nMessage-ID: <bench%d@example.org>\n\n%s"
                       % (n, n, body))


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as src:
        for line in src:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def masq_turn(server, count, folder, protocol):
    spool = os.path.join(folder, "spool")
    conf = write_config(os.path.join(folder, "masq.conf"), spool,
                        extra="\toption do_queue '1'\n\toption log '%s/masq.log'\n" % folder,
                        routes="config fetch 'box'\n\toption server '127.0.0.1:%d'\n"
                        "\toption protocol '%s'\n"
                        "\toption tls_ca '%s'\n\toption user '%s'\n\toption password '%s'\n"
                        "\toption deliver_to 'root'\n" % (server.ports[protocol], protocol,
                                                          server.ca, USER, PASSWORD))
    os.chmod(conf, 0o600)
    daemon = Daemon(conf).start()
    env = dict(os.environ, PYTHONPATH=ROOT)

    def fetch(expect):
        done = subprocess.run([sys.executable, "-m", "masq", "fetch", "-C", conf],
                              capture_output=True, env=env, cwd=ROOT)
        out = (done.stdout + done.stderr).decode().strip()
        if done.returncode != 0 or "%d taken" % expect not in out:
            raise RuntimeError("masq fetch: %s" % out)
    try:
        pid = daemon.proc.pid
        cold = status_kb(pid, "VmRSS")
        fill(server, 1)
        fetch(1)                                # loads ssl, the engine, the resolver
        warm = status_kb(pid, "VmRSS")
        with open("/proc/%d/clear_refs" % pid, "w") as out:
            out.write("5")                      # VmHWM starts again from VmRSS
        fill(server, count)
        start = time.perf_counter()
        fetch(count)
        span = time.perf_counter() - start
        peak = status_kb(pid, "VmHWM")
    finally:
        daemon.stop()
    return span, cold, warm, peak


def fetchmail_turn(server, count, folder, protocol):
    port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "root", "127.0.0.1:%d" % port, "128"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        rc = os.path.join(folder, "fetchmailrc")
        with open(rc, "w") as out:
            out.write("set no bouncemail\nset no syslog\n"
                      "poll 127.0.0.1 service %d protocol %s auth password\n"
                      "  user \"%s\" password \"%s\" is \"root\" here\n"
                      "  sslproto 'TLS1.2+' sslcertck sslcommonname localhost\n"
                      "  sslcertfile \"%s\"\n"
                      "  smtphost \"127.0.0.1/%d\" fetchall nokeep\n"
                      % (server.ports[protocol], protocol, USER, PASSWORD, server.ca, port))
        os.chmod(rc, 0o600)
        env = dict(os.environ, HOME=folder, FETCHMAILHOME=folder)
        start = time.perf_counter()
        proc = subprocess.Popen(["fetchmail", "-f", rc, "--nodetach", "-s"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        span = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or server.count(USER) != 0:
            raise RuntimeError("fetchmail exited %d: %s" % (proc.returncode,
                                                            output.decode()[-2000:]))
    finally:
        sink.terminate()
        sink.wait(5)
    return span, usage.ru_maxrss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    if not dovecot.available() or not shutil.which("fetchmail"):
        sys.exit("bench_fetch: needs dovecot-pop3d, dovecot-imapd and fetchmail "
                 "(tools/install-test-deps)")
    server = dovecot.Dovecot({USER: PASSWORD}).start()
    work = tempfile.mkdtemp(prefix="masq-bench-fetch-")
    runs = {}
    try:
        for turn in range(args.turns):
            for protocol in ("pop3", "imap"):
                for who, measure in (("masq", masq_turn), ("fetchmail", fetchmail_turn)):
                    fill(server, args.messages)
                    folder = os.path.join(work, "%s-%s-%d" % (who, protocol, turn))
                    os.makedirs(folder)
                    runs.setdefault((who, protocol), []).append(
                        measure(server, args.messages, folder, protocol))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    n = args.messages
    for protocol, label in (("pop3", "POP3+STLS"), ("imap", "IMAP+STARTTLS")):
        masq_runs, fm_runs = runs[("masq", protocol)], runs[("fetchmail", protocol)]
        span = statistics.median(r[0] for r in masq_runs)

        def mb(index):
            return statistics.median(r[index] for r in masq_runs) / 1024
        print("%s, %d x ~10 KB from Dovecot, median of %d turns" % (label, n, args.turns))
        print("  masq       %7.0f msg/s  (%.2f s)  daemon RSS: %.1f MB idle, %.1f MB after "
              "a first fetch (ssl, engine), peak %.1f MB in the run: growth %.1f MB"
              % (n / span, span, mb(1), mb(2), mb(3), mb(3) - mb(2)))
        span = statistics.median(r[0] for r in fm_runs)
        print("  fetchmail  %7.0f msg/s  (%.2f s)  peak RSS %.1f MB (into smtp-sink)"
              % (n / span, span, statistics.median(r[1] for r in fm_runs) / 1024))

if __name__ == "__main__":
    main()
