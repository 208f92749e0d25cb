"""Local delivery end to end: mail from sendmail and from SMTP reaches maildir, mbox and
procmail as configured; aliases expand to local users, remote addresses, pipes, files and
include files; unknown local users are refused at RCPT. Mailboxes are read back with
Python's mailbox module."""

import mailbox
import os
import pathlib
import shutil
import tempfile
import smtplib

import pytest

from helpers import Daemon, absent_users, free_port, masq, wait_for, write_config

absent_users("mqalice", "mqbob", "mqcarol")
from sinks import Sink


@pytest.fixture
def site(tmp_path):
    """Commands and files named in a root-owned aliases file run as nobody (Postfix's
    default_privs): what they write goes to a folder nobody may write to."""
    base = tmp_path
    os.chmod(base, 0o755)
    public = tempfile.mkdtemp(dir="/var/tmp")
    os.chmod(public, 0o1777)
    (base / "mail").mkdir()
    (base / "include").write_text("mqcarol\n# a comment\nmqalice\n")
    (base / "procmailrc").write_text("DEFAULT=%s/procmail/\nMAILDIR=%s\n" % (base, base))
    sink_port, smtp_port = free_port(), free_port()
    (base / "aliases").write_text(
        "postmaster: mqalice\n"
        "team: mqalice, mqbob,\n  mqcarol\n"
        "everyone: :include:%s/include\n"
        "outside: friend@remote.example\n"
        "logger: \"|/bin/sh -c 'cat >> %s/piped'\"\n"
        "archive: %s/archive.mbox\n" % (base, public, public))
    extra = ("\tlist listen 'smtp://127.0.0.1:%d'\n"
             "\tlist local_users 'mqalice'\n\tlist local_users 'mqbob'\n\tlist local_users 'mqcarol'\n"
             "\toption mailbox 'maildir:%s/mail/%%u'\n"
             "\toption alias_file '%s/aliases'\n" % (smtp_port, base, base))
    users = ("config user 'mqbob'\n\toption mailbox 'mbox:%s/mail/mqbob.mbox'\n\n"
             "config user 'mqcarol'\n\toption mailbox 'mda:/usr/bin/procmail -m %s/procmailrc'\n\n"
             "config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
             % (base, base, sink_port))
    conf = write_config(str(base / "masq.conf"), str(base / "spool"), extra=extra, routes=users)
    yield {"base": base, "conf": conf, "sink": sink_port, "smtp": smtp_port,
           "public": pathlib.Path(public)}
    shutil.rmtree(public)


def maildir_texts(path):
    if not all(os.path.isdir(os.path.join(path, d)) for d in ("new", "cur", "tmp")):
        return []
    return [bytes(m) for m in mailbox.Maildir(str(path), factory=None)]


def mbox_texts(path):
    if not os.path.exists(path):
        return []
    return [bytes(m) for m in mailbox.mbox(str(path))]


@pytest.mark.skipif(not shutil.which("procmail"), reason="procmail is not installed")
def test_sendmail_to_maildir_mbox_and_procmail(site):
    base = site["base"]
    done = masq("-C", site["conf"], "mqalice@test.example", "mqbob", "mqcarol@test.example",
                input=b"Subject: three ways\n\nhello locals\n")
    assert done.returncode == 0, done.stderr
    [mqalice] = maildir_texts(base / "mail" / "mqalice")
    assert b"hello locals" in mqalice
    assert mqalice.startswith(b"Return-Path: <") and b"Delivered-To: mqalice@test.example" in mqalice
    [mqbob] = mbox_texts(base / "mail" / "mqbob.mbox")
    assert b"hello locals" in mqbob
    [mqcarol] = maildir_texts(base / "procmail")
    assert b"hello locals" in mqcarol


def test_smtp_to_local_users_and_unknown_user_refused(site):
    daemon = Daemon(site["conf"], wait_port=site["smtp"]).start()
    try:
        with smtplib.SMTP("127.0.0.1", site["smtp"], timeout=10) as smtp:
            smtp.ehlo("client.example")
            smtp.mail("someone@example.org")
            assert smtp.rcpt("nosuchuser@test.example")[0] == 550
            assert smtp.rcpt("team@test.example")[0] == 250      # an alias is a local user
            assert smtp.rcpt("mqalice@test.example")[0] == 250
            assert smtp.data(b"Subject: over smtp\r\n\r\nvia SMTP\r\n")[0] == 250
        base = site["base"]
        assert wait_for(lambda: len(maildir_texts(base / "mail" / "mqalice")) == 1)
        assert wait_for(lambda: len(mbox_texts(base / "mail" / "mqbob.mbox")) == 1)
    finally:
        daemon.stop()


def test_aliases_expand_to_remote_pipe_file_and_include(site):
    base = site["base"]
    with Sink(site["sink"]) as sink:
        done = masq("-C", site["conf"], "outside", "logger", "archive", "everyone",
                    input=b"Subject: aliases\n\nexpanded\n")
        assert done.returncode == 0, done.stderr
        masq("flush", "-C", site["conf"])
        [(sender, rcpts, text)] = sink.wait(1)
    assert rcpts == ["friend@remote.example"] and b"expanded" in text
    assert b"expanded" in (site["public"] / "piped").read_bytes()
    [archived] = mbox_texts(site["public"] / "archive.mbox")
    assert b"expanded" in archived
    assert len(maildir_texts(base / "mail" / "mqalice")) == 1     # from the include file


def test_newaliases_checks_the_file(site):
    done = masq("-C", site["conf"], "-bi")
    assert done.returncode == 0, done.stderr
    (site["base"] / "aliases").write_text("broken line without colon\n")
    done = masq("-C", site["conf"], argv0="newaliases")
    assert done.returncode != 0
    assert b"aliases:1" in done.stderr
