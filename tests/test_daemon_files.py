"""Files the daemon creates as root: never through a symlink, never in a directory another
user may write, and no directory the administrator named is given away (issue 12 case 8).

The attacker is the `option user` account (a throw-away one, tests/local_user.py): it owns
the spool, and before the fix it also got the status file's directory, where the pid file
lives by default, so it could plant a symlink there for root to write through.
"""

import os
import shutil

import pytest

from helpers import Daemon, free_port, masq, wait_for, write_config
from local_user import LocalUser, needs_root, open_dir

VICTIM_TEXT = "root's precious file\n"


@pytest.fixture
def base():
    needs_root()
    path = open_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def victim(base):
    path = os.path.join(base, "victim")
    with open(path, "w") as out:
        out.write(VICTIM_TEXT)
    os.chmod(path, 0o600)
    return path


def config(base, run, extra=""):
    conf = write_config(os.path.join(base, "masq.conf"), os.path.join(base, "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n" % free_port() + extra)
    text = open(conf).read().replace("%s/masq.pid" % base, "%s/masq.pid" % run)
    text = text.replace("%s/status.json" % base, "%s/status.json" % run)
    with open(conf, "w") as out:
        out.write(text)
    return conf


def run_daemon(conf):
    return Daemon(conf).start()


def uid_of(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("Uid:"):
            return int(line.split()[2])


def settled(daemon, path=None, uid=None):
    """Wait until the daemon wrote path (if given) and runs as uid (if given)."""
    assert wait_for(lambda: (path is None or os.path.exists(path))
                    and (uid is None or uid_of(daemon.proc.pid) == uid))


def test_the_status_directory_is_not_given_to_the_daemon_user(base):
    run = os.path.join(base, "run")
    os.mkdir(run, 0o755)
    with LocalUser() as user:
        conf = config(base, run, "\toption user '%s'\n" % user.name)
        daemon = run_daemon(conf)
        try:
            settled(daemon, os.path.join(run, "masq.pid"), user.uid)
            assert os.stat(run).st_uid == 0                 # was chowned to the user
            pid = open(os.path.join(run, "masq.pid")).read().strip()
            assert pid == str(daemon.proc.pid)
        finally:
            log = daemon.stop()
        assert "Traceback" not in log, log
        assert "may not write in %s" % run in log            # said, not fixed by chown


def test_the_pid_file_is_never_written_through_a_symlink(base):
    run = os.path.join(base, "run")
    os.mkdir(run, 0o755)
    target = victim(base)
    os.symlink(target, os.path.join(run, "masq.pid"))
    daemon = run_daemon(config(base, run))
    try:
        settled(daemon, os.path.join(run, "status.json"))
        assert open(target).read() == VICTIM_TEXT
        assert not os.path.islink(os.path.join(run, "masq.pid"))
        assert open(os.path.join(run, "masq.pid")).read().strip() == str(daemon.proc.pid)
    finally:
        daemon.stop()


def test_no_pid_file_in_a_directory_another_user_may_write(base):
    run = os.path.join(base, "run")
    os.mkdir(run, 0o755)
    target = victim(base)
    with LocalUser() as user:
        os.chown(run, user.uid, user.gid)                   # as the old daemon left it
        os.symlink(target, os.path.join(run, "masq.pid"))   # planted by that user
        daemon = run_daemon(config(base, run))
        try:
            settled(daemon, os.path.join(run, "status.json"))
            assert open(target).read() == VICTIM_TEXT
        finally:
            log = daemon.stop()
        assert "belongs to uid %d" % user.uid in log


def test_the_status_file_is_never_written_through_a_planted_temporary(base):
    run = os.path.join(base, "run")
    os.mkdir(run, 0o755)
    target = victim(base)
    os.symlink(target, os.path.join(run, "status.json.tmp"))
    daemon = run_daemon(config(base, run))
    try:
        status = os.path.join(run, "status.json")
        settled(daemon, status)
        assert open(target).read() == VICTIM_TEXT
        assert '"hostname"' in open(status).read()
    finally:
        daemon.stop()


def test_a_spool_that_is_not_the_daemon_users_is_refused_not_chowned(base):
    run = os.path.join(base, "run")
    os.mkdir(run, 0o755)
    spool = os.path.join(base, "spool")
    os.mkdir(spool, 0o700)
    with LocalUser() as user:
        done = masq("-C", config(base, run, "\toption user '%s'\n" % user.name), "daemon")
        assert done.returncode == 78, done.stderr
        assert b"belongs to uid 0, not to user %s" % user.name.encode() in done.stderr
        assert os.stat(spool).st_uid == 0


def test_a_missing_spool_is_made_for_the_daemon_user_who_owns_what_is_in_it(base):
    run = os.path.join(base, "run")
    os.mkdir(run, 0o755)
    with LocalUser() as user:
        daemon = run_daemon(config(base, run, "\toption user '%s'\n" % user.name))
        try:
            settled(daemon, uid=user.uid)
            spool = os.path.join(base, "spool")
            owners = {os.lstat(os.path.join(spool, name)).st_uid
                      for name in os.listdir(spool)} | {os.stat(spool).st_uid}
            assert owners == {user.uid}                     # root wrote nothing there
        finally:
            daemon.stop()


def test_repairing_a_spool_never_writes_through_a_planted_corrupt_folder(tmp_path):
    """Root repairing the daemon user's spool (`masq flush` with no daemon) copies damaged
    bytes into corrupt/: never into the directory a planted symlink points at."""
    from test_queue_recovery import build_log, newest, oracle
    from masq.queue.spool import Queue
    spool = str(tmp_path / "spool")
    os.mkdir(spool)
    ids = build_log(spool)
    rows = oracle(spool)
    body_end = next(end for (_, end), kind, msgid, _ in rows
                    if kind == "BODY" and msgid == ids[1])
    with open(newest(spool), "r+b") as log:
        log.seek(body_end - 100)
        log.write(b"\xff\xfe")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), os.path.join(spool, "corrupt"))    # planted
    queue = Queue(spool).open("runner")
    try:
        assert ids[1] not in {m.id for m in queue.live()}          # still quarantined
    finally:
        queue.close()
    assert os.listdir(str(elsewhere)) == []
