"""A SIGHUP (logrotate's postrotate) while the daemon starts is a reload, not its death.

The daemon used to install its signal handlers last in start(), after the listeners were
bound and the pid file written: a SIGHUP in between took the default action and killed it.
strace holds the pid file's rename for two seconds, so the signal lands in that window.
"""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from helpers import ROOT, free_port, wait_for, write_config

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
RENAMES = "rename,renameat,renameat2"


def daemon_pid(tracer):
    """Return the pid of the daemon strace runs (its only child)."""
    try:
        with open("/proc/%d/task/%d/children" % (tracer.pid, tracer.pid)) as children:
            found = children.read().split()
    except OSError:
        return None
    return int(found[0]) if found else None


def test_sighup_while_the_daemon_starts_is_a_reload(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    conf = write_config(str(tmp_path / "masq.conf"), str(spool),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n" % free_port())
    path = tmp_path / "daemon.log"
    environ = dict(os.environ, PYTHONPATH=ROOT)
    environ.pop("MASQ_CONFIG", None)
    with open(path, "wb") as log:
        tracer = subprocess.Popen(
            ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=" + RENAMES,
             "-e", "inject=%s:delay_enter=2000000" % RENAMES,
             sys.executable, "-m", "masq", "-C", conf, "daemon"],
            stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=ROOT)
    text = lambda: path.read_text(errors="replace")
    try:
        assert wait_for(lambda: "listening on" in text() or tracer.poll() is not None, 60)
        pid = daemon_pid(tracer)
        assert pid is not None and not (tmp_path / "masq.pid").exists(), text()
        os.kill(pid, signal.SIGHUP)             # while the pid file's rename is held
        assert wait_for(lambda: "configuration reloaded" in text()
                        or tracer.poll() is not None, 60)
        assert tracer.poll() is None and "configuration reloaded" in text(), text()
    finally:
        pid = daemon_pid(tracer)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        try:
            tracer.wait(timeout=60)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
