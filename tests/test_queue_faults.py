"""The queue's faults done to real processes: a torn tail before each kind of appender,
strace-injected fdatasync and write errors in `sendmail` and the daemon, SIGKILL of the
daemon at compaction's system calls, sustained relay through a daemon.

Whatever was acknowledged (exit 0, or 250) is delivered or listed afterwards; nothing is
listed forever that was never acknowledged.
"""

import glob
import os
import shutil
import smtplib
import subprocess
import sys
import threading
import time

import pytest

from helpers import ROOT, Daemon, free_port, masq, wait_for, write_config
from sinks import Sink

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


def newest_log(spool):
    """Return the path of the log file appended to last (any naming of the log files)."""
    return max(glob.glob(os.path.join(spool, "queue*.log")), key=os.path.getmtime)


def submit(conf, token, *wrapper, rcpt="x@remote.example"):
    body = b"X-Token: %s\nSubject: faults\n\nhello\n" % token.encode()
    environ = dict(os.environ, PYTHONPATH=ROOT)
    environ.pop("MASQ_CONFIG", None)
    return subprocess.run(list(wrapper) + [sys.executable, "-m", "masq", "-C", conf, "-odq",
                                           rcpt], input=body, capture_output=True,
                          env=environ, cwd=ROOT, timeout=120)


def listing(conf):
    done = masq("-C", conf, "-bp")
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def ids_in(text):
    return {line.split()[0] for line in text.splitlines()
            if line and not line.startswith(" ") and len(line.split()[0]) == 14}


def tear_tail(spool, msgid):
    """Append the first bytes of a RESULT record for msgid: a writer killed mid-write."""
    with open(newest_log(spool), "ab") as out:
        out.write(b"Mq" + b"R" + b"\x01" + b"\x00\x00\x00\x30" + msgid.encode() + b'{"a":"x@r')


def bs_session(conf, token):
    script = ("EHLO client.example\r\nMAIL FROM:<a@test.example>\r\n"
              "RCPT TO:<x@remote.example>\r\nDATA\r\nX-Token: %s\r\n\r\nhi\r\n.\r\nQUIT\r\n"
              % token).encode()
    return masq("-C", conf, "-bs", input=script)


@pytest.mark.parametrize("appender", ["sendmail", "bs", "daemon"])
def test_a_torn_tail_is_cut_before_any_appender_writes(tmp_path, appender):
    spool = str(tmp_path / "spool")
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), spool,
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n" % port)
    assert submit(conf, "first").returncode == 0
    (first,) = ids_in(listing(conf))
    tear_tail(spool, first)
    if appender == "sendmail":
        assert submit(conf, "second").returncode == 0
    elif appender == "bs":
        done = bs_session(conf, "second")
        assert b"250 2.0.0" in done.stdout, done.stdout
    else:
        daemon = Daemon(conf, wait_port=port).start()
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.sendmail("a@test.example", ["x@remote.example"], b"X-Token: second\r\n\r\nhi\r\n")
        finally:
            daemon.stop()
    text = listing(conf)
    assert "QUARANTINED" not in text, text
    assert first in ids_in(text) and len(ids_in(text)) == 2, text
    assert os.listdir(os.path.join(spool, "corrupt"))       # the torn bytes were kept


def test_sendmail_with_a_failing_fdatasync_exits_75_and_leaves_nothing_listed(tmp_path):
    spool = str(tmp_path / "spool")
    conf = write_config(str(tmp_path / "masq.conf"), spool)
    assert submit(conf, "before").returncode == 0
    done = submit(conf, "failed", "strace", "-f", "-qq", "-o", "/dev/null",
                  "-e", "trace=fdatasync", "-e", "inject=fdatasync:error=EIO:when=1")
    assert done.returncode == 75, done.stderr
    assert done.stderr.count(b"\n") == 1
    text = listing(conf)
    assert "QUARANTINED" not in text and len(ids_in(text)) == 1, text
    assert submit(conf, "after").returncode == 0
    assert len(ids_in(listing(conf))) == 2


def test_sendmail_with_a_full_disk_exits_75_and_the_queue_stays_whole(tmp_path):
    spool = str(tmp_path / "spool")
    conf = write_config(str(tmp_path / "masq.conf"), spool)
    assert submit(conf, "before").returncode == 0
    done = submit(conf, "failed", "strace", "-f", "-qq", "-o", "/dev/null",
                  "-P", newest_log(spool), "-e", "trace=write",
                  "-e", "inject=write:error=ENOSPC")
    assert done.returncode == 75, done.stderr
    assert b"No space left" in done.stderr and done.stderr.count(b"\n") == 1
    assert submit(conf, "after").returncode == 0
    text = listing(conf)
    assert "QUARANTINED" not in text and len(ids_in(text)) == 2, text


def test_daemon_with_a_failing_fdatasync_answers_451_and_keeps_no_unacknowledged_mail(tmp_path):
    spool = str(tmp_path / "spool")
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), spool,
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n" % port)
    assert submit(conf, "before").returncode == 0      # the log exists: -P can name it
    environ = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-P", newest_log(spool),
         "-e", "trace=fdatasync", "-e", "inject=fdatasync:error=EIO:when=1",
         sys.executable, "-m", "masq", "-C", conf, "daemon"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environ, cwd=ROOT)
    try:
        assert wait_for(lambda: _answers(port), 30)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo("x")
            smtp.mail("a@test.example")
            smtp.rcpt("x@remote.example")
            code, text = smtp.data(b"X-Token: failed\r\n\r\nhi\r\n")
            assert (code, text[:5]) == (451, b"4.3.0")
            smtp.rset()
            smtp.sendmail("a@test.example", ["x@remote.example"], b"X-Token: kept\r\n\r\nok\r\n")
        text = listing(conf)
    finally:
        stop_traced(proc, tmp_path)
    assert "QUARANTINED" not in text and len(ids_in(text)) == 2, text


class LoggedDaemon:
    """A daemon whose log goes to a file (a pipe nobody reads would block it under load)."""

    def __init__(self, conf, base, port, wrapper=()):
        environ = dict(os.environ, PYTHONPATH=ROOT)
        environ.pop("MASQ_CONFIG", None)
        self.base = base
        with open(os.path.join(str(base), "daemon.log"), "ab") as log:
            self.proc = subprocess.Popen(list(wrapper) + [sys.executable, "-m", "masq", "-C",
                                                          conf, "daemon"],
                                         stdout=log, stderr=subprocess.STDOUT, env=environ,
                                         cwd=ROOT)
        if not wait_for(lambda: _answers(port) or self.proc.poll() is not None, 30):
            raise RuntimeError("daemon did not come up")

    def stop(self):
        stop_traced(self.proc, self.base)


def stop_traced(proc, base):
    """SIGTERM the daemon running under strace (its pid file names it), then reap strace."""
    import signal
    try:
        with open(os.path.join(str(base), "masq.pid")) as pid:
            os.kill(int(pid.read()), signal.SIGTERM)
    except (OSError, ValueError):
        proc.kill()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _answers(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


ROUTE = ("\nconfig route 'out'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
         "\toption online 'always'\n")


def relay_config(tmp_path, sink_port, port, segment="16k"):
    return write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=(
        "\tlist listen 'smtp://127.0.0.1:%d'\n\toption queue_segment_size '%s'\n"
        "\toption max_connections_per_ip '50'\n" % (port, segment)), routes=ROUTE % sink_port)


def send_many(port, first, count, acknowledged):
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for n in range(first, first + count):
            token = "t%05d" % n
            try:
                smtp.sendmail("a@test.example", ["rcpt@remote.example"],
                              b"X-Token: %s\r\nSubject: load\r\n\r\n%s\r\n"
                              % (token.encode(), b"z" * 300))
            except smtplib.SMTPException:
                return
            acknowledged.add(token)


def tokens(messages):
    out = set()
    for _, _, data in messages:
        for line in data.split(b"\r\n"):
            if line.startswith(b"X-Token: "):
                out.add(line[9:].decode())
    return out



def spool_bytes(spool):
    """The log's size now; a segment compaction deletes between listing and stat is 0 bytes."""
    total = 0
    for path in glob.glob(os.path.join(spool, "queue*.log")):
        try:
            total += os.path.getsize(path)
        except FileNotFoundError:
            pass
    return total


def test_sustained_relay_compacts_while_the_load_runs(tmp_path):
    """Four clients relay 1,000 messages (about 850 KB of log) without a pause; segments
    are removed while they still send, and once delivered the spool is back to two."""
    spool = str(tmp_path / "spool")
    sink_port = free_port()
    with Sink(sink_port) as recorder:
        port = free_port()
        conf = relay_config(tmp_path, sink_port, port)
        daemon = LoggedDaemon(conf, tmp_path, port)
        acknowledged, peak = set(), [0]
        try:
            threads = [threading.Thread(target=send_many, args=(port, k * 1000, 250, acknowledged))
                       for k in range(4)]
            for thread in threads:
                thread.start()
            removed_during_load = False
            while any(t.is_alive() for t in threads):
                peak[0] = max(peak[0], spool_bytes(spool))
                numbers = sorted(glob.glob(os.path.join(spool, "queue.*.log")))
                removed_during_load |= bool(numbers) and not numbers[0].endswith("00000001.log")
                time.sleep(0.01)
            for thread in threads:
                thread.join()
            assert wait_for(lambda: tokens(recorder.messages) >= acknowledged, 120)
            assert wait_for(lambda: len(glob.glob(os.path.join(spool, "queue.*.log"))) <= 2, 30)
        finally:
            daemon.stop()
    assert len(acknowledged) == 1000
    assert removed_during_load
    assert peak[0] < 1000 * 700                     # less than what was written


@pytest.mark.parametrize("syscall,when", [("unlink", 4), ("unlink", 7), ("link", 3),
                                          ("fdatasync", 60)])
def test_sigkill_at_a_compaction_step_loses_nothing(tmp_path, syscall, when):
    """strace kills the daemon (SIGKILL) at the when-th such system call on the spool while
    mail flows and segments are compacted; restarted, it delivers every acknowledged one."""
    spool = str(tmp_path / "spool")
    sink_port = free_port()
    with Sink(sink_port) as recorder:
        port = free_port()
        conf = relay_config(tmp_path, sink_port, port)
        os.makedirs(spool)
        traced = LoggedDaemon(conf, tmp_path, port, [
            "strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=" + syscall,
            "-e", "inject=%s:signal=KILL:when=%d" % (syscall, when)])
        acknowledged = set()
        try:
            send_many(port, 0, 400, acknowledged)
            traced.proc.wait(timeout=60)
        finally:
            if traced.proc.poll() is None:
                traced.stop()
        assert traced.proc.returncode != 0          # it was killed at the step
        daemon = LoggedDaemon(conf, tmp_path, port)
        try:
            delivered = wait_for(lambda: tokens(recorder.messages) >= acknowledged, 120)
            queued = listing(conf)
        finally:
            daemon.stop()
    assert acknowledged and delivered, queued
    assert "QUARANTINED" not in queued
