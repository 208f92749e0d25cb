"""Who may change the queue: one authority for the control socket and the status page.

Each test acts as a throw-away unprivileged account (tests/local_user.py) against a daemon
run by root: an unprivileged user may ask for a flush but not force a route root set down
(issue 12 case 6), and may not delete or force anything through the status page on
loopback without a password (case 7), while root and the page's password may.
"""

import os
import shutil

import pytest

from helpers import Daemon, free_port, masq, status, write_config
from local_user import LocalUser, needs_root, open_dir
from sinks import Sink


def route(port):
    return ("config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n\n"
            % port)


@pytest.fixture
def world():
    """A root daemon on a folder every user can enter, a route to a sink, a local user."""
    needs_root()
    base = open_dir()
    smtp, web = free_port(), free_port()
    conf = write_config(os.path.join(base, "masq.conf"), os.path.join(base, "spool"),
                        extra="\toption status_listen '127.0.0.1:%d'\n" % web,
                        routes=route(smtp))
    os.chmod(conf, 0o644)
    try:
        with Sink(smtp) as sink, LocalUser() as user:
            daemon = Daemon(conf, wait_port=web).start()
            os.chmod(os.path.join(base, "spool"), 0o755)     # the control socket is 0666
            try:
                yield type("World", (), {"conf": conf, "web": web, "sink": sink,
                                         "user": user, "daemon": daemon})
            finally:
                log = daemon.stop()
                assert "Traceback" not in log and "internal error" not in log, log
    finally:
        shutil.rmtree(base, ignore_errors=True)


def queue_one(conf):
    done = masq("-C", conf, "-odq", "someone@remote.example",
                input=b"Subject: held\n\nheld back\n")
    assert done.returncode == 0, done.stderr
    return status(conf)["queue"][0]["id"]


def test_a_local_user_cannot_force_a_route_root_set_down(world):
    assert masq("-C", world.conf, "online", "isp", "down").returncode == 0
    queue_one(world.conf)
    done = world.user.masq("-C", world.conf, "flush", "isp")
    assert done.returncode == 77, (done.returncode, done.stdout, done.stderr)
    assert "permission denied" in done.stderr and "Traceback" not in done.stderr
    done = world.user.masq("-C", world.conf, "-qo", "isp")      # sendmail's spelling
    assert done.returncode == 77, (done.returncode, done.stdout, done.stderr)
    assert len(status(world.conf)["queue"]) == 1 and world.sink.messages == []
    done = world.user.masq("-C", world.conf, "flush")           # an ordinary flush is fine
    assert done.returncode == 0, done.stderr
    assert len(status(world.conf)["queue"]) == 1 and world.sink.messages == []
    done = masq("-C", world.conf, "flush", "isp")               # root may force it
    assert done.returncode == 0, done.stderr
    assert len(world.sink.wait(1)) == 1
