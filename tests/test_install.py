"""`make install`: the launcher and the sendmail-compatible links, each acting on its name."""

import os
import subprocess

import pytest

from helpers import ROOT, write_config


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("prefix")
    done = subprocess.run(["make", "-s", "install", "PREFIX=%s" % prefix, "DESTDIR="],
                          cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr
    return str(prefix)


def run(prefix, name, *args, input=b""):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([os.path.join(prefix, name)] + list(args), input=input,
                          capture_output=True, env=env, cwd="/", timeout=60)


def test_links_exist_and_point_at_masq(prefix):
    for name in ("sendmail", "mailq", "runq", "rmail", "mailrm", "newaliases", "smtpd",
                 "in.smtpd"):
        link = os.path.join(prefix, "sbin", name)
        assert os.readlink(link) == "../bin/masq"
    with open(os.path.join(prefix, "bin", "masq")) as launcher:
        assert launcher.readline().rstrip().endswith(" -IS")


def test_installed_sendmail_queues_and_mailq_lists(prefix, tmp_path):
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"))
    done = run(prefix, "sbin/sendmail", "-C", conf, "-odq", "-t",
               input=b"To: a@example.org\n\nhi\n")
    assert done.returncode == 0, done.stderr
    listing = run(prefix, "sbin/mailq", "-C", conf)
    assert listing.returncode == 0 and b"<a@example.org>" in listing.stdout
    msgid = listing.stdout.split()[0].decode()
    assert run(prefix, "sbin/mailrm", "-C", conf, msgid).returncode == 0
    assert run(prefix, "sbin/mailq", "-C", conf).stdout == b"mail queue is empty\n"


def test_installed_names_dispatch(prefix, tmp_path):
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"))
    assert run(prefix, "bin/masq", "--version").stdout.startswith(b"masq ")
    done = run(prefix, "sbin/smtpd", "-C", conf, input=b"QUIT\r\n")
    assert done.stdout.startswith(b"220 ") and b"221 " in done.stdout
    done = run(prefix, "sbin/newaliases", "-C", conf)
    assert done.returncode == 0


def test_installed_setup_finds_the_board_profiles(prefix, tmp_path):
    """Issue 18 point 6: `masq setup --board` after `make install` (board/ was left out)."""
    conf = str(tmp_path / "masq.conf")
    env_board = os.environ.pop("MASQ_BOARD_DIR", None)
    try:
        listing = run(prefix, "bin/masq", "setup", "--boards")
        assert listing.returncode == 0, listing.stderr
        assert b"quectel-ec2x" in listing.stdout
        done = run(prefix, "bin/masq", "setup", "mobile", "--board", "quectel-ec2x",
                   "--host", "smtp.example.net:587", "-C", conf)
        assert done.returncode == 0, done.stderr
    finally:
        if env_board is not None:
            os.environ["MASQ_BOARD_DIR"] = env_board
    board = open(os.path.join(ROOT, "board", "quectel-ec2x.conf")).read()
    online = next(l.split("=", 1)[1].strip() for l in board.splitlines()
                  if l.startswith("online"))
    assert "\toption online '%s'\n" % online in open(conf).read()


def test_make_clean_keeps_the_try_out(tmp_path):
    """Issue 18 point 12: ./run holds the try-out's queue and mailboxes; only clean-run
    removes it."""
    import shutil
    shutil.copy(os.path.join(ROOT, "Makefile"), str(tmp_path / "Makefile"))
    (tmp_path / "run" / "mail").mkdir(parents=True)
    (tmp_path / "run" / "mail" / "letter").write_text("keep me")
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    done = subprocess.run(["make", "-s", "clean"], cwd=str(tmp_path), capture_output=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "mail" / "letter").read_text() == "keep me"
    assert not (tmp_path / "pkg" / "__pycache__").exists()
    done = subprocess.run(["make", "-s", "clean-run"], cwd=str(tmp_path), capture_output=True)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "run").exists()


def test_installed_modules_have_their_byte_code(prefix):
    """A user who may not write the library would otherwise compile every module `sendmail`
    imports on every run: `make install` writes the byte-code the launcher's Python reads."""
    import importlib.util
    lib = os.path.join(prefix, "lib", "masq", "masq")
    sources = [os.path.join(folder, name) for folder, _, names in os.walk(lib)
               for name in names if name.endswith(".py")]
    assert len(sources) > 50
    missing = [path for path in sources
               if not os.path.exists(importlib.util.cache_from_source(path))]
    assert missing == []
