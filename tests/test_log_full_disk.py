"""Logging never takes the daemon down (issue 10 case 7): a real daemon whose stderr, or
whose `option log` file, is on a full tmpfs keeps answering SMTP with 250, keeps running,
and logs again (saying how many lines it lost) once space is freed."""

import os
import smtplib
import subprocess
import sys

import pytest

from helpers import ROOT, fill_disk, free_port, small_tmpfs, wait_for, wait_port, write_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def full():
    """A 64 KB tmpfs filled to the last byte; yields (its path, a function that frees it)."""
    with small_tmpfs("64k", prefix="masq-full-") as path:
        for name in ("stderr", "maillog"):
            (path / name).write_bytes(b"")
        filler = fill_disk(path)
        yield path, lambda: os.unlink(filler)


def send(port, rcpt):
    with smtplib.SMTP("127.0.0.1", port) as client:
        refused = client.sendmail("writer@example.org", [rcpt], b"Subject: x\r\n\r\nx\r\n")
        return refused, client.noop()[0]


@pytest.mark.parametrize("where", ["stderr", "file"])
def test_daemon_survives_its_log_on_a_full_disk(tmp_path, full, where):
    mount, free = full
    port = free_port()
    log_path = mount / ("stderr" if where == "stderr" else "maillog")
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n\toption do_queue '1'\n"
                        % port)
    if where == "file":
        text = open(conf).read().replace("option log 'stderr'", "option log '%s'" % log_path)
        open(conf, "w").write(text)
    err = open(log_path if where == "stderr" else os.devnull, "ab", buffering=0)
    proc = subprocess.Popen([sys.executable, "-m", "masq", "-C", conf, "daemon"],
                            stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    err.close()
    try:
        wait_port(port, proc=proc)
        for n in range(3):
            assert send(port, "far%d@example.org" % n) == ({}, 250)
        assert proc.poll() is None
        free()
        assert send(port, "after@example.org") == ({}, 250)
        assert wait_for(lambda: b"nrcpt=1" in log_path.read_bytes())
        text = log_path.read_text()
        assert "log line(s) lost: could not write the log" in text
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode in (0, -15)
