"""Crashes and full disks during delivery (docs/FAULTS.md 4.2 #39 and #47): a recipient whose
result was not recorded is delivered again (a duplicate), never lost; when results cannot be
written, masq stops starting deliveries instead of repeating them in a storm."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT, free_port, masq, write_config
from sinks import Sink

CRASH_AFTER_250 = """
import os, sys
sys.argv = ["masq"] + sys.argv[1:]
from masq.outbound import results
def crash(*args, **kwargs):          # the remote said 250; we die before the RESULT record
    os._exit(9)
results.record = crash
from masq.cli import main
sys.exit(main())
"""


def setup(tmp_path, port, spool=None, extra=""):
    return write_config(str(tmp_path / "masq.conf"), spool or str(tmp_path / "spool"),
                        extra=extra, routes="config route 'isp'\n\toption smarthost "
                        "'127.0.0.1:%d'\n\toption tls 'none'\n\toption online 'file:/none'\n"
                        % port)


def queued_count(conf):
    done = masq("-C", conf, "-bp")
    return done.stdout.count(b"queued") + done.stdout.count(b"deferred")


def test_fault_39_crash_after_250_before_the_record_delivers_again(tmp_path):
    port = free_port()
    conf = setup(tmp_path, port)
    assert masq("-C", conf, "-odq", "x@example.org", input=b"Subject: once\n\nhi\n").returncode == 0
    with Sink(port) as sink:
        env = dict(os.environ, PYTHONPATH=ROOT)
        crashed = subprocess.run([sys.executable, "-c", CRASH_AFTER_250, "flush", "isp",
                                  "-C", conf], env=env, cwd=ROOT, capture_output=True,
                                 timeout=60)
        assert crashed.returncode == 9
        assert len(sink.wait(1)) == 1                # the remote has it ...
        assert queued_count(conf) == 1               # ... and so do we: not lost
        done = masq("flush", "isp", "-C", conf)
        assert b"1 delivered" in done.stdout
        assert len(sink.wait(2)) == 2                # delivered twice: the allowed outcome
    assert queued_count(conf) == 0


@pytest.fixture
def tiny_disk(tmp_path):
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_fault_47_full_disk_while_delivering_stops_new_deliveries(tmp_path, tiny_disk):
    port = free_port()
    conf = setup(tmp_path, port, spool=str(tiny_disk / "spool"),
                 extra="\toption volatile_spool '1'\n")
    for n in range(150):
        done = masq("-C", conf, "-odq", "r%d@example.org" % n, input=b"Subject: s\n\nhi\n")
        assert done.returncode == 0, done.stderr
    filler = tiny_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", "of=%s" % filler, "bs=4k", "count=1000"],
                   capture_output=True)                    # the disk is full now
    with Sink(port) as sink:
        done = masq("flush", "isp", "-C", conf)
        first = len(sink.wait(150, timeout=3))
        assert first <= 100                                # one batch at most, no storm
        assert b"cannot record delivery results" in done.stderr
        os.unlink(filler)                                  # (tmpfs frees it at once)
        done = masq("flush", "isp", "-C", conf)
        assert b"0 deferred, 0 bounced" in done.stdout, done.stdout + done.stderr
        total = len(sink.wait(150 + first, timeout=10))
    assert total <= 150 + first                            # each message at most twice
    assert queued_count(conf) == 0
