#!/usr/bin/env python3
"""Measure large messages and QMTP: masq beside Postfix, in the same run; asserts nothing.

Run: `python3 tools/bench_large.py [SIZE_MB]` (default 1024; root, for the Postfix peer and
/proc of the daemons). Everything listens on 127.0.0.1; files go under /var/tmp (on disk).

  large      one message of SIZE_MB (lines of 78 octets) in by SMTP DATA from a client in
             this process, then out by SMTP to Postfix's smtp-sink (which throws it away):
             MB/s each way (in: first byte to the 250 after the final dot, which masq sends
             only once the message is synced; out: the route brought online to the message
             gone from the queue), the daemon's VmRSS before and its peak (VmHWM) during each
             way, and the bytes the daemon wrote (/proc/PID/io write_bytes) per message byte;
             after a warm-up message of 64 KB in and out, so that the modules of both ways
             are loaded before the measurement.
  Postfix    the same message into a throwaway Postfix (tools/peers.py RelayingPostfix: its
             smtp transport held) and out, once released, to the same smtp-sink: MB/s each
             way (out: release to its queue empty).
  qmtp       2,000 messages of about 2 KB between two masq daemons: A holds them (queued
             directly into its spool, route offline), then its route to B comes online; B
             takes them over SMTP or over QMTP and keeps them (do_queue). Messages/s (online
             to A's queue empty) and the CPU seconds A and B used meanwhile (utime + stime).
"""

import os
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers                                      # noqa: E402

LINE = b"y" * 76 + b"\r\n"
BLOCK = LINE * (65536 // len(LINE))
SMALL = 2000
SMALL_BODY = b"Subject: small\r\n\r\n" + LINE * 25


def masq(conf, *args):
    """Run `masq -C conf ARGS` from this checkout; return its output (RuntimeError if it fails)."""
    done = subprocess.run([sys.executable, "-m", "masq", "-C", conf] + list(args),
                          capture_output=True, text=True, cwd=peers.ROOT, timeout=600)
    if done.returncode != 0:
        raise RuntimeError("masq %s: %s" % (" ".join(args), done.stderr.strip()))
    return done.stdout


def queue_empty(conf):
    import json
    return json.loads(masq(conf, "status", "--json"))["queue"] == []


def wait(predicate, timeout, what, poll=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise RuntimeError("timed out waiting for " + what)


def written(pid):
    with open("/proc/%d/io" % pid) as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid):
    with open("/proc/%d/clear_refs" % pid, "w") as refs:
        refs.write("5")


def smtp_send(port, size):
    """Send one message of size octets by SMTP DATA; return the seconds to its 250."""
    blocks = max(1, size // len(BLOCK))
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
        reader = sock.makefile("rb")

        def reply():
            while True:
                line = reader.readline()
                if not line:
                    raise RuntimeError("server closed the connection")
                if line[3:4] != b"-":
                    if line[:1] not in (b"2", b"3"):
                        raise RuntimeError("server said %r" % line)
                    return line
        reply()
        sock.sendall(b"EHLO bench.example\r\n")
        reply()
        sock.sendall(b"MAIL FROM:<a@example.org> SIZE=%d\r\n" % (blocks * len(BLOCK) + 20))
        reply()
        sock.sendall(b"RCPT TO:<far@example.org>\r\n")
        reply()
        start = time.perf_counter()
        sock.sendall(b"DATA\r\n")
        reply()
        sock.sendall(b"Subject: large\r\n\r\n")
        for _ in range(blocks):
            sock.sendall(BLOCK)
        sock.sendall(b".\r\n")
        reply()
        elapsed = time.perf_counter() - start
        sock.sendall(b"QUIT\r\n")
        return elapsed, blocks * len(BLOCK)


def bench_masq_large(size, sink_port):
    base = peers.fresh_dir("masq-bench-large-")
    port = peers.free_port()
    extra = ("\toption max_message_size '%dM'\n\n"
             "config route 'out'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
             "\toption online 'file:%s/up'\n" % (size // (1 << 20) + 16, sink_port, base))
    try:
        with peers.MasqDaemon(base, port, extra) as daemon:
            pid = daemon.pid
            smtp_send(port, len(BLOCK))             # warm-up: the modules each way load
            masq(daemon.conf, "online", "out", "up")
            wait(lambda: queue_empty(daemon.conf), 60, "masq to deliver the warm-up")
            masq(daemon.conf, "online", "out", "down")
            time.sleep(1.0)
            rss_in = peers.proc_status(pid)["VmRSS"]
            reset_peak(pid)
            wrote = written(pid)
            seconds_in, octets = smtp_send(port, size)
            wrote = written(pid) - wrote
            peak_in = peers.proc_status(pid)["VmHWM"]
            time.sleep(1.0)
            rss_out = peers.proc_status(pid)["VmRSS"]
            reset_peak(pid)
            start = time.perf_counter()
            masq(daemon.conf, "online", "out", "up")
            wait(lambda: queue_empty(daemon.conf), 3600, "masq to deliver", poll=0.1)
            seconds_out = time.perf_counter() - start
            peak_out = peers.proc_status(pid)["VmHWM"]
        return {"in": octets / seconds_in / 1e6, "out": octets / seconds_out / 1e6,
                "rss_in": rss_in / 1024, "peak_in": peak_in / 1024,
                "rss_out": rss_out / 1024, "peak_out": peak_out / 1024,
                "written": wrote / octets}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def bench_postfix_large(size, sink_port):
    base = peers.fresh_dir("masq-bench-postfix-")
    port = peers.free_port()
    try:
        with peers.RelayingPostfix(base, port, sink_port) as postfix:
            postfix.postconf("message_size_limit = 0", "mailbox_size_limit = 0")
            postfix._postfix("reload")
            time.sleep(2.0)
            seconds_in, octets = smtp_send(port, size)
            start = time.perf_counter()
            postfix.release()
            postfix.flush()
            wait(lambda: postfix.queue_files() == 0, 3600, "Postfix to deliver", poll=0.1)
            seconds_out = time.perf_counter() - start
        return {"in": octets / seconds_in / 1e6, "out": octets / seconds_out / 1e6}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def prefill(base, count):
    sys.path.insert(0, peers.ROOT)
    from masq.queue.envelope import Envelope
    from masq.queue.spool import Queue
    queue = Queue(os.path.join(base, "spool")).open("runner")
    try:
        for _ in range(count):
            writer = queue.writer()
            writer.write(SMALL_BODY)
            writer.commit(Envelope("a@example.org", ["far@example.org"], received=time.time()))
        queue.sync()
    finally:
        queue.close()


def bench_relay(protocol):
    """Relay SMALL messages from masq A to masq B by protocol; return (msgs/s, cpu A, cpu B)."""
    a_base, b_base = peers.fresh_dir("masq-bench-a-"), peers.fresh_dir("masq-bench-b-")
    b_smtp, b_qmtp, a_smtp = peers.free_port(), peers.free_port(), peers.free_port()
    target = ("qmtp:127.0.0.1:%d" % b_qmtp if protocol == "qmtp"
              else "127.0.0.1:%d" % b_smtp)
    a_extra = ("\n\nconfig route 'b'\n\toption smarthost '%s'\n\toption tls 'none'\n"
               "\toption online 'file:%s/up'\n" % (target, a_base))
    try:
        peers.masq_config(a_base, a_extra)
        prefill(a_base, SMALL)
        with peers.MasqDaemon(b_base, b_smtp, "\tlist listen 'qmtp://127.0.0.1:%d'\n"
                              % b_qmtp) as b, peers.MasqDaemon(a_base, a_smtp, a_extra) as a:
            time.sleep(1.0)
            cpu = cpu_seconds(a.pid), cpu_seconds(b.pid)
            start = time.perf_counter()
            masq(a.conf, "online", "b", "up")
            wait(lambda: queue_empty(a.conf), 600, "A to relay", poll=0.05)
            elapsed = time.perf_counter() - start
            return (SMALL / elapsed, cpu_seconds(a.pid) - cpu[0],
                    cpu_seconds(b.pid) - cpu[1])
    finally:
        shutil.rmtree(a_base, ignore_errors=True)
        shutil.rmtree(b_base, ignore_errors=True)


def main():
    size = int(sys.argv[1]) << 20 if len(sys.argv) > 1 else 1 << 30
    sink_base = peers.fresh_dir("masq-bench-sink-")
    sink_port = peers.free_port()
    try:
        with peers.SmtpSink(sink_base, sink_port):
            m = bench_masq_large(size, sink_port)
            p = bench_postfix_large(size, sink_port)
    finally:
        shutil.rmtree(sink_base, ignore_errors=True)
    print("one message of %d MB, SMTP in, SMTP out to smtp-sink" % (size >> 20))
    print("  masq     in %6.1f MB/s  out %6.1f MB/s" % (m["in"], m["out"]))
    print("  Postfix  in %6.1f MB/s  out %6.1f MB/s" % (p["in"], p["out"]))
    print("  masq VmRSS %.1f MB, peak %.1f MB (+%.2f) while receiving; %.1f MB, peak %.1f MB "
          "(+%.2f) while sending" % (m["rss_in"], m["peak_in"], m["peak_in"] - m["rss_in"],
                                     m["rss_out"], m["peak_out"],
                                     m["peak_out"] - m["rss_out"]))
    print("  masq wrote %.3f bytes per message byte while receiving" % m["written"])
    for protocol in ("smtp", "qmtp"):
        rate, cpu_a, cpu_b = bench_relay(protocol)
        print("%d x 2 KB masq to masq by %s: %6.0f msgs/s, CPU A %.2f s, B %.2f s"
              % (SMALL, protocol.upper(), rate, cpu_a, cpu_b))


if __name__ == "__main__":
    main()
