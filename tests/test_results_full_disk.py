"""Delivery results that cannot be written (issue 10): a real daemon whose spool is on a
tmpfs that fills up after the mail was queued delivers each message once, pauses while
the results cannot be recorded (a flush then starts nothing), and records them once space
is freed, without delivering anything again."""

import os

import pytest

from helpers import Daemon, fill_disk, free_port, masq, small_tmpfs, wait_for, write_config
from sinks import Sink

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

COUNT = 40         # their RESULT records outgrow the slack in the log's last page


@pytest.fixture
def spool_fs():
    """A 1 MB tmpfs for the spool (outside tmp_path, see test_log_full_disk.py)."""
    with small_tmpfs("1m", prefix="masq-results-") as path:
        yield path


def live(conf):
    done = masq("queue", "-C", conf)
    return done.stdout.count(b"@example.org")


def test_full_disk_pauses_deliveries_and_nothing_is_delivered_twice(tmp_path, spool_fs):
    port, online = free_port(), tmp_path / "online"
    routes = ("config route 'isp'\n\toption online 'file:%s'\n\toption smarthost '127.0.0.1:%d'\n"
              "\toption tls 'none'\n" % (online, port))
    conf = write_config(str(tmp_path / "masq.conf"), str(spool_fs / "spool"), routes=routes,
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n\toption volatile_spool '1'\n"
                        "\toption status_file '%s/status.json'\n\toption log '%s/maillog'\n"
                        % (free_port(), tmp_path, tmp_path))
    log = tmp_path / "maillog"
    for n in range(COUNT):
        done = masq("-C", conf, "-odq", "r%d@example.org" % n, input=b"Subject: t\n\nx\n")
        assert done.returncode == 0, done.stderr
    daemon = Daemon(conf).start()
    try:
        with Sink(port) as sink:
            filler = fill_disk(spool_fs)
            online.write_text("isp\n")
            assert len(sink.wait(COUNT, timeout=60)) == COUNT
            assert wait_for(lambda: "cannot record delivery results" in read(log), timeout=30)
            masq("flush", "-C", conf)               # paused: starts nothing
            os.unlink(filler)
            assert wait_for(lambda: live(conf) == 0, timeout=40)
            masq("flush", "-C", conf)
            assert len(sink.messages) == COUNT      # each message delivered exactly once
    finally:
        daemon.stop()
    assert "resume" in read(log)


def read(path):
    return path.read_text() if path.exists() else ""
