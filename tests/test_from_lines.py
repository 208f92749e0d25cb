"""From_ lines for pipes and MDAs (issue 14, point 6): masqmail's pipe_fromline,
pipe_fromhack (route pipes and pipe items of the aliases file) and mda_fromline,
mda_fromhack (`mda:` mailboxes, per user too). What the commands received is read back
as written and with Python's mailbox module."""

import mailbox
import os
import shutil
import tempfile

import pytest

from helpers import masq, write_config
from test_delivery import route, send, setup

BODY = b"Subject: quoting\n\nFrom the start of a line\n>From already quoted\nlast line\n"


def pipe_route_output(tmp_path, **options):
    out = tmp_path / "uucp.out"
    conf = setup(tmp_path, route("uucp", pipe='/bin/sh -c "cat >> %s"' % out, **options))
    send(conf, "x@example.org", "y@example.org", sender="alice@test.example", body=BODY)
    done = masq("flush", "-C", conf)
    assert b"2 delivered" in done.stdout, done.stdout + done.stderr
    return out


def test_route_pipe_fromline_and_fromhack_make_an_mbox_stream(tmp_path):
    out = pipe_route_output(tmp_path, pipe_fromline="1", pipe_fromhack="1")
    raw = out.read_bytes()
    assert raw.startswith(b"From alice@test.example ")
    assert b"\r" not in raw                       # LF, as a Unix program reads text
    assert b"\n>From the start of a line\n" in raw
    assert b"\n>From already quoted\n" in raw     # masqmail's quoting: `From ` lines only
    box = mailbox.mbox(str(out))
    assert len(box) == 2                          # the pipe runs once per recipient
    for msg in box:
        assert msg.get_from().startswith("alice@test.example ")
        assert msg["Subject"] == "quoting"
        assert b">From the start of a line\n" in msg.get_payload(decode=True)


def test_route_pipe_without_them_gets_the_message_as_is(tmp_path):
    raw = pipe_route_output(tmp_path).read_bytes()
    assert not raw.startswith(b"From ")
    assert b"\nFrom the start of a line\n" in raw and b"\r" not in raw


def test_fromline_alone_does_not_quote_and_fromhack_alone_adds_no_line(tmp_path):
    line_only = pipe_route_output(tmp_path, pipe_fromline="1").read_bytes()
    assert line_only.startswith(b"From alice@test.example ")
    assert b"\nFrom the start of a line\n" in line_only
    (tmp_path / "spool").rename(tmp_path / "spool.1")
    (tmp_path / "uucp.out").unlink()
    hack_only = pipe_route_output(tmp_path, pipe_fromhack="1").read_bytes()
    assert not hack_only.startswith(b"From ")
    assert b"\n>From the start of a line\n" in hack_only


@pytest.fixture
def local_site(tmp_path):
    """Aliases' pipes run as nobody (a root-owned aliases file): they write to a folder
    anyone may write to; `mda:` commands run as the (local_users) recipient."""
    public = tempfile.mkdtemp(dir="/var/tmp")
    os.chmod(public, 0o1777)
    (tmp_path / "aliases").write_text("gateway: \"|/bin/sh -c 'cat >> %s/piped'\"\n" % public)
    extra = ("\tlist local_users 'mqfromline'\n\tlist local_users 'mqplain'\n"
             "\toption alias_file '%s/aliases'\n"
             "\toption mailbox 'mda:/bin/sh -c \"cat >> %s/mda.%%u\"'\n"
             "\toption pipe_fromline '1'\n\toption pipe_fromhack '1'\n"
             "\toption mda_fromline '1'\n\toption mda_fromhack '1'\n" % (tmp_path, tmp_path))
    users = "config user 'mqplain'\n\toption mda_fromline '0'\n\toption mda_fromhack '0'\n"
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=extra,
                        routes=users)
    yield conf, tmp_path, public
    shutil.rmtree(public)


def test_alias_pipes_and_mdas_get_the_line_and_a_user_may_say_otherwise(local_site):
    conf, base, public = local_site
    done = masq("-C", conf, "-f", "alice@test.example", "gateway@test.example",
                "mqfromline@test.example", "mqplain@test.example", input=BODY)
    assert done.returncode == 0, done.stderr
    for path in (os.path.join(public, "piped"), base / "mda.mqfromline"):
        raw = open(path, "rb").read()
        assert raw.startswith(b"From alice@test.example "), path
        [msg] = mailbox.mbox(str(path))
        assert msg["Subject"] == "quoting" and msg["Return-Path"] == "<alice@test.example>"
        assert b"\n>From the start of a line\n>From already quoted\n" in raw
    plain = (base / "mda.mqplain").read_bytes()
    assert plain.startswith(b"Return-Path: <alice@test.example>\n")
    assert b"\nFrom the start of a line\n" in plain
