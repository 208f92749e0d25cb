"""What a masqmail user relies on (issue 14): envelope fields stripped on receipt, `-bs`
qualifying bare names, rmail's UUCP From line, shell pipes in aliases, masqmail's pipe
environment, and the headers local submission adds. Mailboxes and pipe outputs are read
back with Python's mailbox module; the behaviours are masqmail's (docs/MIGRATING.md)."""

import mailbox
import os
import pwd
import shutil
import tempfile

import pytest

from helpers import masq, write_config, absent_users

USERS = absent_users("mqmmalice", "mqmmbob")


@pytest.fixture
def site(tmp_path):
    """A spool, an mbox folder for the local users, an aliases file and a folder pipes may
    write to (alias pipes run as nobody)."""
    os.chmod(tmp_path, 0o755)
    public = tempfile.mkdtemp(dir="/var/tmp")
    os.chmod(public, 0o1777)
    (tmp_path / "mail").mkdir()
    os.chmod(tmp_path / "mail", 0o1777)
    (tmp_path / "aliases").write_text(
        "shell: \"|(echo 'From x Thu Jan  1 00:00:00 2026'; cat; echo) >> %s/shell.mbox\"\n"
        "env: \"|env > %s/env.txt\"\n" % (public, public))
    extra = ("".join("\tlist local_users '%s'\n" % u for u in USERS) +
             "\toption mailbox 'mbox:%s/mail/%%u'\n"
             "\toption alias_file '%s/aliases'\n" % (tmp_path, tmp_path))
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=extra)
    yield {"base": tmp_path, "conf": conf, "public": public}
    shutil.rmtree(public)


def mbox(path):
    if not os.path.exists(path):
        return []
    return list(mailbox.mbox(str(path)))


def smtp_stdio(conf, *lines):
    """Speak SMTP to `masq -bs` (a local process: no socket on stdin); return its output."""
    script = "\r\n".join(lines).encode() + b"\r\n"
    done = masq("-C", conf, "-bs", input=script)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def deliver(conf):
    done = masq("-C", conf, "-q")
    assert done.returncode == 0, done.stderr


# point 5: incoming Return-Path / Envelope-To

INCOMING = ("Return-Path: <forged@elsewhere.example>", "Envelope-To: list@elsewhere.example",
            "Subject: fetched", "", "body")


def test_smtp_input_loses_return_path_and_envelope_to(site):
    out = smtp_stdio(site["conf"], "HELO me", "MAIL FROM:<alice@remote.example>",
                     "RCPT TO:<mqmmalice@test.example>", "DATA", *INCOMING, ".", "QUIT")
    assert "250 " in out.split("354")[1], out
    deliver(site["conf"])
    [msg] = mbox(site["base"] / "mail" / "mqmmalice")
    assert msg.get_all("Return-Path") == ["<alice@remote.example>"]
    assert msg.get_all("Envelope-To") is None
    assert msg.get_all("X-Orig-Envelope-To") is None
    assert msg["Subject"] == "fetched" and msg.get_payload().strip() == "body"


def test_do_save_envelope_to_keeps_a_copy(site):
    with open(site["conf"]) as f:
        text = f.read()
    with open(site["conf"], "w") as f:
        f.write(text.replace("config masq 'main'\n",
                             "config masq 'main'\n\toption do_save_envelope_to '1'\n"))
    smtp_stdio(site["conf"], "HELO me", "MAIL FROM:<alice@remote.example>",
               "RCPT TO:<mqmmalice@test.example>", "DATA", *INCOMING, ".", "QUIT")
    deliver(site["conf"])
    [msg] = mbox(site["base"] / "mail" / "mqmmalice")
    assert msg.get_all("Return-Path") == ["<alice@remote.example>"]
    assert msg.get_all("X-Orig-Envelope-To") == ["list@elsewhere.example"]
    assert msg.get_all("Envelope-To") is None


def test_sendmail_input_loses_envelope_to(site):
    done = masq("-C", site["conf"], "-f", "alice@remote.example", "mqmmalice",
                input="\n".join(INCOMING).encode() + b"\n")
    assert done.returncode == 0, done.stderr
    [msg] = mbox(site["base"] / "mail" / "mqmmalice")
    assert msg.get_all("Return-Path") == ["<alice@remote.example>"]
    assert msg.get_all("Envelope-To") is None


# point 8: `-bs` qualifies bare names, the network listener does not

def test_bs_qualifies_bare_sender_and_recipient(site):
    out = smtp_stdio(site["conf"], "HELO me", "MAIL FROM:<eve>", "RCPT TO:<mqmmbob>", "DATA",
                     "Subject: from a MUA", "", "hi", ".", "QUIT")
    assert "501" not in out, out
    deliver(site["conf"])
    [msg] = mbox(site["base"] / "mail" / "mqmmbob")
    assert msg.get_all("Return-Path") == ["<eve@test.example>"]
    assert msg.get_from().startswith("eve@test.example ")


def test_network_listener_refuses_bare_names(site):
    import smtplib
    from helpers import Daemon
    with open(site["conf"]) as f:
        port = int(f.read().split("smtp://127.0.0.1:")[1].split("'")[0])
    daemon = Daemon(site["conf"], wait_port=port).start()
    try:
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.helo("me")
            code, _ = client.mail("<eve>")
            assert code == 501
            assert client.mail("<eve@remote.example>")[0] == 250
            code, _ = client.rcpt("<mqmmbob>")
            assert code == 501
    finally:
        daemon.stop()


# point 7: rmail takes the sender from the UUCP From line

@pytest.mark.parametrize("line, sender", [
    ("From alice Thu Dec  3 10:00:00 2026 remote from hosta", "alice@hosta"),
    ("From alice Thu Dec  3 10:00:00 2026", "alice@test.example"),
])
def test_rmail_sender_comes_from_the_uucp_from_line(site, line, sender):
    text = "%s\nSubject: over uucp\n\n.\nbody\n" % line
    done = masq("-C", site["conf"], "mqmmbob", input=text.encode(), argv0="rmail")
    assert done.returncode == 0, done.stderr
    [msg] = mbox(site["base"] / "mail" / "mqmmbob")
    assert msg.get_all("Return-Path") == ["<%s>" % sender]
    assert msg["Subject"] == "over uucp"
    assert msg.get_payload() == ".\nbody\n"      # -i: a lone dot does not end the text


# point 9: alias pipes with shell syntax run through /bin/sh -c

def test_alias_pipe_with_shell_syntax_runs_in_a_shell(site):
    done = masq("-C", site["conf"], "-f", "alice@remote.example", "shell",
                input=b"Subject: to a shell\n\nline\n")
    assert done.returncode == 0, done.stderr
    [msg] = mbox(os.path.join(site["public"], "shell.mbox"))
    assert msg["Subject"] == "to a shell" and msg.get_payload().strip() == "line"
    assert msg.get_all("Return-Path") == ["<alice@remote.example>"]
    assert msg.get_all("Delivered-To") == ["shell@test.example"]


# point 10: masqmail's pipe environment

def test_pipe_environment_has_masqmail_names(site):
    done = masq("-C", site["conf"], "-v", "-f", "alice@remote.example", "env",
                input=b"Subject: env\n\n$(touch /tmp/never)\n")
    assert done.returncode == 0, done.stderr
    with open(os.path.join(site["public"], "env.txt")) as f:
        env = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
    assert env["LOCAL_PART"] == "env" and env["DOMAIN"] == "test.example"
    assert env["RETURN_PATH"] == env["SENDER"] == "alice@remote.example"
    assert env["SENDER_LOCAL"] == "alice" and env["SENDER_DOMAIN"] == "remote.example"
    assert env["QUALIFY_DOMAIN"] == "test.example"
    assert env["RECIPIENT"] == "env@test.example" and env["LOCAL"] == "env"
    assert "masq: %s queued for env@" % env["MESSAGE_ID"] in done.stderr.decode()
    assert not os.path.exists("/tmp/never")     # nothing of the message reached a shell


# point 13: headers local submission adds

def test_submission_adds_undisclosed_recipients_and_a_plain_from(site):
    done = masq("-C", site["conf"], "-f", "x@remote.example", "mqmmbob",
                input=b"Subject: no headers\n\nbody\n")
    assert done.returncode == 0, done.stderr
    done = masq("-C", site["conf"], "-f", "alice@remote.example", "-F", "Alice Example",
                "mqmmbob", input=b"Subject: named\nCc: mqmmalice@test.example\n\nbody\n")
    assert done.returncode == 0, done.stderr
    first, second = mbox(site["base"] / "mail" / "mqmmbob")
    assert first.get_all("From") == ["x@remote.example"]      # not the invoker's name
    assert first.get_all("To") == ["undisclosed-recipients:;"]
    assert second.get_all("From") == ["Alice Example <alice@remote.example>"]
    assert second.get_all("To") is None                           # a Cc is enough


# point 14: masqmail's mailq lines

def test_queue_listing_in_masqmail_format(site):
    import re
    done = masq("-C", site["conf"], "queue", "--format", "masqmail")
    assert (done.returncode, done.stdout) == (0, b"mail queue is empty.\n")
    done = masq("-C", site["conf"], "-odq", "-f", "alice@remote.example",
                "someone@remote.example", "mqmmbob", input=b"Subject: waits\n\nbody\n")
    assert done.returncode == 0, done.stderr
    for argv, argv0 in ((("queue", "--format", "masqmail"), None), (("-v",), "mailq")):
        done = masq("-C", site["conf"], *argv, argv0=argv0)
        assert done.returncode == 0, done.stderr
        head, *rcpts = done.stdout.decode().strip().split("\n")
        me = pwd.getpwuid(os.getuid()).pw_name
        assert re.fullmatch(r"\w+ <= <alice@remote\.example> size=\d+ age=\d+s ident=%s"
                            % re.escape(me), head), head
        assert rcpts == ["== <someone@remote.example>", "== <mqmmbob@test.example>"]


# point 11: defer_all

def test_defer_all_refuses_everything_for_now(site):
    with open(site["conf"]) as f:
        text = f.read()
    with open(site["conf"], "w") as f:
        f.write(text.replace("config masq 'main'\n",
                             "config masq 'main'\n\toption defer_all '1'\n"))
    out = smtp_stdio(site["conf"], "HELO me", "MAIL FROM:<a@remote.example>", "QUIT")
    assert out.startswith("421 4.3.2 ") and out.count("\r\n") == 1, out
    done = masq("-C", site["conf"], "mqmmbob", input=b"Subject: later\n\nbody\n")
    assert done.returncode == 75 and b"defer_all" in done.stderr
    listed = masq("-C", site["conf"], "queue", "--format", "masqmail")
    assert listed.stdout == b"mail queue is empty.\n"
