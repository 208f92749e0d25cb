"""A throw-away unprivileged account, and masq run as it, for tests of who may do what.

`LocalUser()` creates an account with a unique name (useradd, no home, no login shell)
and removes it on exit; `user.run(...)` runs `masq ARGS` (or any Python code) with its uid
and gid. `open_dir()` makes a folder the account can enter (pytest's tmp_path is root-only).
Tests that use these need root; they skip elsewhere.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_PYTHON = "/usr/bin/python3"      # root's own interpreter may live under /root


def needs_root():
    """Skip the calling test unless it runs as root with useradd at hand."""
    if os.getuid() != 0 or not shutil.which("useradd") or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root, useradd and %s to act as an unprivileged local user"
                    % SYSTEM_PYTHON)


class LocalUser:
    """An account made for one test; a context manager."""

    def __init__(self):
        self.name = "mqt" + uuid.uuid4().hex[:9]
        self.uid = self.gid = None

    def __enter__(self):
        needs_root()
        _account_tool("useradd", "--no-create-home", "--user-group", "--shell",
                      "/usr/sbin/nologin", self.name)
        account = pwd.getpwnam(self.name)
        self.uid, self.gid = account.pw_uid, account.pw_gid
        probe = self.python("import masq")
        if probe.returncode != 0:
            self.__exit__()
            pytest.skip("an unprivileged user cannot read the checkout at %s" % ROOT)
        return self

    def __exit__(self, *exc):
        _account_tool("userdel", "--force", self.name)

    def _become(self):
        os.setgroups([])
        os.setgid(self.gid)
        os.setuid(self.uid)

    def python(self, code, *args, input=None):
        """Run Python code as this user; return the CompletedProcess (text mode)."""
        return subprocess.run([SYSTEM_PYTHON, "-c", code] + list(args), input=input,
                              capture_output=True, text=True, cwd="/", timeout=120,
                              env={"PYTHONPATH": ROOT, "PATH": os.environ.get("PATH", "")},
                              preexec_fn=self._become)

    def masq(self, *args, input=None):
        """Run `masq ARGS` as this user; return the CompletedProcess (text mode)."""
        return self.python("import sys; from masq.cli import main; "
                           "sys.exit(main(['masq'] + sys.argv[1:]))", *args, input=input)


def _account_tool(*argv):
    """Run useradd/userdel; retry while another process holds the lock on /etc/passwd or
    /etc/group (exit 1 or 10: "cannot lock", "cannot update")."""
    import time
    deadline = time.monotonic() + 120   # a bound on a lock never released, not a timing
    while True:
        done = subprocess.run(list(argv), capture_output=True, text=True)
        if done.returncode not in (1, 10) or time.monotonic() > deadline:
            break
        time.sleep(0.1)             # someone else's useradd: the lock is theirs, not a clock
    if done.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (argv[0], done.returncode,
                                                   done.stderr.strip()))


def open_dir():
    """Return a new folder under /var/tmp that every user may enter (remove it after)."""
    path = tempfile.mkdtemp(dir="/var/tmp", prefix="masq-test-")
    os.chmod(path, 0o755)
    return path
