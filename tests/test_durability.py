"""Durability by killing: SIGKILL sendmail and the daemon mid-submission, fill the disk,
fail fdatasync. Whatever was acknowledged (exit 0, or 250) is in the queue afterwards."""

import errno
import os
import random
import signal
import smtplib
import subprocess
import sys
import time

import pytest

from helpers import ROOT, Daemon, free_port, masq, small_tmpfs, write_config
from masq.queue import log as log_mod
from masq.queue.envelope import Envelope
from masq.queue.log import LogError
from masq.queue.spool import Queue


def tokens_in_queue(spool):
    """Return the set of X-Token header values of the messages in the queue."""
    queue = Queue(spool, volatile_ok=True).open("read")
    try:
        found = set()
        for msg in queue.live():
            text = b"".join(queue.body(msg.id))
            for line in text.split(b"\r\n"):
                if line.startswith(b"X-Token: "):
                    found.add(line[9:].decode())
        return found
    finally:
        queue.close()


def submit(conf, token, size):
    body = b"X-Token: %s\nSubject: kill test\n\n" % token.encode() + b"y" * size + b"\n"
    environ = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "masq", "-C", conf, "a@example.org"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=environ, cwd=ROOT)
    try:
        proc.stdin.write(body)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    return proc


def test_sigkill_sendmail_and_daemon_at_random_moments(tmp_path):
    assert kill_at_random(tmp_path, 60, 1234) >= 30


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(5))
def test_sigkill_soak(tmp_path, seed):
    assert kill_at_random(tmp_path, 600, seed) >= 300


def kill_at_random(tmp_path, count, seed):
    """Submit count messages, SIGKILL a quarter of the submissions and the daemon."""
    rng = random.Random(seed)
    spool = str(tmp_path / "spool")
    conf = write_config(str(tmp_path / "masq.conf"), spool)
    daemon = Daemon(conf).start()
    acknowledged, running = set(), []
    try:
        for n in range(count):
            token = "t%04d" % n
            running.append((token, submit(conf, token, rng.choice([10, 5000, 200000]))))
            if n % 4 == 3:                       # kill one of the running submissions
                victim = rng.choice(running)[1]
                time.sleep(rng.random() * 0.05)
                victim.send_signal(signal.SIGKILL)
            if n % 30 == 29:                     # and the daemon itself, then restart it
                daemon.stop(signal.SIGKILL)
                daemon = Daemon(conf).start()
            for token_, proc in list(running):
                if proc.poll() is not None:
                    running.remove((token_, proc))
                    if proc.returncode == 0:
                        acknowledged.add(token_)
        for token_, proc in running:
            if proc.wait(timeout=60) == 0:
                acknowledged.add(token_)
    finally:
        daemon.stop(signal.SIGKILL)
    assert len(acknowledged) >= count // 2
    assert acknowledged <= tokens_in_queue(spool)
    runner = Queue(spool).open("runner")     # recovery after the kills is clean
    assert len(runner.live()) >= len(acknowledged)
    runner.close()
    return len(acknowledged)


@pytest.fixture
def tiny_disk():
    """A 2 MiB tmpfs for the spool (root only)."""
    with small_tmpfs("2m") as mount:
        yield str(mount)


def test_disk_full_exits_75_and_the_queue_stays_usable(tmp_path, tiny_disk):
    spool = os.path.join(tiny_disk, "spool")
    conf = write_config(str(tmp_path / "masq.conf"), spool,
                        extra="\toption volatile_spool '1'\n\toption max_message_size '20M'\n")
    first = masq("-C", conf, "a@example.org", input=b"X-Token: small1\n\nhi\n")
    assert first.returncode == 0, first.stderr
    big = masq("-C", conf, "a@example.org", input=b"X-Token: big\n\n" + b"z" * 3000000 + b"\n")
    assert big.returncode == 75
    assert big.stderr.count(b"\n") == 1 and b"No space left" in big.stderr
    after = masq("-C", conf, "a@example.org", input=b"X-Token: small2\n\nhi\n")
    assert after.returncode == 0, after.stderr
    assert tokens_in_queue(spool) == {"small1", "small2"}
    runner = Queue(spool, volatile_ok=True).open("runner")
    assert runner.store.damage == []
    runner.close()


def test_tmpfs_spool_is_refused_without_volatile_spool(tmp_path, tiny_disk):
    conf = write_config(str(tmp_path / "masq.conf"), os.path.join(tiny_disk, "spool"))
    done = masq("-C", conf, "a@example.org", input=b"\nhi\n")
    assert done.returncode == 78
    assert b"volatile_spool" in done.stderr


def test_smtp_disk_full_gives_452_at_mail_and_451_during_data(tmp_path, tiny_disk):
    port = free_port()
    spool = os.path.join(tiny_disk, "spool")
    conf = write_config(str(tmp_path / "masq.conf"), spool, extra=(
        "\toption volatile_spool '1'\n\toption max_message_size '%s'\n"
        "\toption do_queue '1'\n"                 # queued only: the oracle is the queue
        "\tlist listen 'smtp://127.0.0.1:%d'\n\tlist local_users 'a'\n" % ("3M", port)))
    daemon = Daemon(conf, wait_port=port).start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("x")
            assert smtp.mail("b@example.org")[0] == 250      # 1.5 MB free is needed
            smtp.rset()
            filler = os.path.join(tiny_disk, "filler")
            subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=64k", "count=20"],
                           capture_output=True)
            code, text = smtp.mail("b@example.org")
            assert (code, text[:5]) == (452, b"4.3.1")
            os.unlink(filler)
            subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=64k", "count=6"],
                           capture_output=True)           # room for MAIL, not for the text
            assert smtp.mail("b@example.org")[0] == 250
            assert smtp.rcpt("a@test.example")[0] == 250
            code, text = smtp.data(b"X-Token: lost\r\n\r\n" + (b"w" * 998 + b"\r\n") * 1900)
            assert (code, text[:5]) == (451, b"4.3.0")
            os.unlink(filler)
            smtp.sendmail("b@example.org", ["a@test.example"], b"X-Token: kept\r\n\r\nok\r\n")
    finally:
        daemon.stop()
    assert tokens_in_queue(spool) == {"kept"}


def test_fdatasync_error_is_never_trusted(spool, monkeypatch):
    queue = Queue(spool).open("runner")
    writer = queue.writer()
    writer.write(b"Subject: x\r\n\r\nhi\r\n")
    writer.commit(Envelope("a@b", ["c@d"]))

    def failing(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(log_mod.os, "fdatasync", failing)
    results = []
    queue.want_sync(results.append)
    queue.sync_now()
    assert isinstance(results[0], LogError) and results[0].temporary
    monkeypatch.undo()
    queue.close()


def test_bad_spool_paths_are_config_errors(tmp_path):
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"))
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "queue.log").mkdir()
    done = masq("-C", conf, "a@example.org", input=b"\nhi\n")
    assert done.returncode == 78 and b"queue.log is not a regular file" in done.stderr
    (tmp_path / "spool" / "queue.log").rmdir()
    (tmp_path / "spool").rmdir()
    (tmp_path / "spool").write_text("a file")
    done = masq("-C", conf, "a@example.org", input=b"\nhi\n")
    assert done.returncode == 78 and b"not a directory" in done.stderr
