"""Without a configuration file masq runs on built-in defaults, and says so once on
stderr (issue 18 point 8); `-bV` says nothing of it."""

import io
import sys

from helpers import masq

from masq.config import load


def test_defaults_are_announced_once(monkeypatch):
    monkeypatch.setattr(load, "DEFAULT_CONFIGS", ())
    monkeypatch.setattr(load, "_told", [])
    monkeypatch.delenv("MASQ_CONFIG", raising=False)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    cfg = load.load_config()
    load.load_config()
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("masq: no configuration file (-C, $MASQ_CONFIG")
    assert "spool %s" % cfg.main.spool_dir in lines[0]
    assert "mailboxes %s" % cfg.main.mailbox in lines[0]


def test_a_named_file_says_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(load, "_told", [])
    conf = tmp_path / "masq.conf"
    conf.write_text("config masq 'main'\n")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    load.load_config(str(conf))
    assert err.getvalue() == ""


def test_version_says_nothing_about_configuration():
    done = masq("-bV", env={"MASQ_CONFIG": ""})
    assert done.returncode == 0 and done.stdout.startswith(b"masq ")
    assert done.stderr == b""
