"""A daemon that runs as `option user` (the OpenWrt package's `masq` account) still delivers
local mail as each recipient: a helper forked while the daemon was root stays root and runs
only the local delivery agent (masq/outbound/local_helper.py). The daemon itself holds no
capability and no root-owned descriptor; the spool is its own and closed to others.
"""

import os
import shutil
import smtplib
import stat

import pytest

from helpers import Daemon, free_port, wait_for, write_config
from local_user import LocalUser, needs_root, open_dir


@pytest.fixture
def base():
    needs_root()
    path = open_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def proc_status(pid):
    fields = {}
    for line in open("/proc/%d/status" % pid):
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return fields


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def socket_inodes(pid):
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def listening_inode(port):
    for line in open("/proc/net/tcp"):
        parts = line.split()
        if parts[1].endswith(":%04X" % port) and parts[3] == "0A":
            return parts[9]
    return None


def send(port, rcpts, text="Subject: hi\r\n\r\nfor you\r\n"):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("someone@example.org", rcpts, text)


def test_unprivileged_daemon_delivers_as_the_recipient(base):
    port = free_port()
    with LocalUser() as daemon_user, LocalUser() as rcpt:
        conf = write_config(os.path.join(base, "masq.conf"), os.path.join(base, "spool"),
                            extra="\tlist listen 'smtp://127.0.0.1:%d'\n"
                                  "\toption user '%s'\n" % (port, daemon_user.name))
        daemon = Daemon(conf, wait_port=port).start()
        try:
            assert wait_for(lambda: proc_status(daemon.proc.pid)["Uid"][1]
                            == str(daemon_user.uid))
            status = proc_status(daemon.proc.pid)
            assert status["Uid"] == [str(daemon_user.uid)] * 4
            assert status["CapEff"] == ["0000000000000000"]
            assert status["CapPrm"] == ["0000000000000000"]
            helpers = children(daemon.proc.pid)
            assert len(helpers) == 1
            helper = helpers[0]
            assert proc_status(helper)["Uid"][1] == "0"
            assert listening_inode(port) not in socket_inodes(helper)

            send(port, ["%s@test.example" % rcpt.name])
            box = os.path.join(base, "mail", rcpt.name)
            assert wait_for(lambda: os.path.exists(box) and b"for you" in open(box, "rb").read())
            assert os.stat(box).st_uid == rcpt.uid              # written as the recipient
            assert "Delivered-To: %s@test.example" % rcpt.name in open(box).read()

            spool = os.path.join(base, "spool")
            assert os.stat(spool).st_uid == daemon_user.uid
            assert stat.S_IMODE(os.stat(spool).st_mode) & 0o077 == 0
            for name in os.listdir(spool):
                assert os.lstat(os.path.join(spool, name)).st_uid == daemon_user.uid
        finally:
            log = daemon.stop()
        assert "Traceback" not in log, log
        assert wait_for(lambda: not os.path.exists("/proc/%d" % helper)
                        or proc_status(helper).get("State", ["Z"])[0] == "Z")


def test_aliases_forward_and_commands_through_the_helper(base):
    """An alias to a remote address is queued by the daemon (it owns the queue); a
    `|command` alias runs as the aliases file's owner, never as root nor the daemon."""
    port = free_port()
    out = os.path.join(base, "out")
    os.mkdir(out)
    os.chmod(out, 0o1777)
    with LocalUser() as daemon_user, LocalUser() as owner:
        aliases = os.path.join(base, "aliases")
        with open(aliases, "w") as f:
            f.write("far: friend@far.example\n"
                    "cmd: \"|/bin/sh -c 'id -u > %s/uid; grep CapEff /proc/self/status "
                    "> %s/caps'\"\n" % (out, out))
        os.chown(aliases, owner.uid, owner.gid)
        conf = write_config(os.path.join(base, "masq.conf"), os.path.join(base, "spool"),
                            extra="\tlist listen 'smtp://127.0.0.1:%d'\n"
                                  "\toption user '%s'\n\toption alias_file '%s'\n"
                                  % (port, daemon_user.name, aliases))
        daemon = Daemon(conf, wait_port=port).start()
        try:
            send(port, ["cmd@test.example"])
            assert wait_for(lambda: os.path.exists(os.path.join(out, "caps")))
            assert wait_for(lambda: open(os.path.join(out, "uid")).read().strip()
                            == str(owner.uid))
            caps = open(os.path.join(out, "caps")).read().split()
            assert caps[1] == "0000000000000000"
            send(port, ["far@test.example"])
            from helpers import status
            assert wait_for(lambda: any(
                "friend@far.example" in str(m) for m in status(conf)["queue"]))
        finally:
            log = daemon.stop()
        assert "Traceback" not in log, log
