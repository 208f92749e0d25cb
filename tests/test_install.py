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
