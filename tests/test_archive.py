"""Archiving (issue 15 part 3, issue 14 point 11's log_user): always_bcc, log_user,
sender_bcc and recipient_bcc give one copy of each message, written in the message's own
COMMIT, so that neither many recipients, nor a retry, nor a restart makes a second; the
copy carries NOTIFY=NEVER: its failure never reaches the sender and it is never named in
a DSN to the sender. Mailboxes are read back with Python's mailbox module; remote
recipients go to an aiosmtpd sink whose `perm-*` and `temp-*` local parts fail."""

import mailbox
import os
import smtplib

import pytest

from fakes import FakeClock, FakeHost
from helpers import Daemon, absent_users, free_port, masq, write_config
from masq.base.logger import Logger
from masq.config import schema
from masq.config.uci import ConfigError
from masq.inbound.fetch_intake import Intake
from masq.policy import archive
from masq.queue.memory import MemoryQueue
from masq.queue.spool import Queue
from sinks import Sink
import qmtp_peer

absent_users("mqarch", "mqsend", "mqrcpt")
BODY = b"Subject: keep me\n\nfor the record\n"


def rules(text):
    return archive.Rules(schema.loads("config masq 'main'\n\toption hostname 'home.lan'\n"
                                      + text).main)


def test_the_maps_look_up_address_then_domain_then_user():
    table = rules("\tlist sender_bcc 'alice@home.lan a-exact'\n"
                  "\tlist sender_bcc '@home.lan a-domain@x.example'\n"
                  "\tlist sender_bcc 'bob b-user@x.example'\n"
                  "\tlist recipient_bcc 'Carol@Else.Example c-copy@x.example'\n")
    assert table.copies("ALICE@home.lan", []) == ["a-exact@home.lan"]
    assert table.copies("bob@home.lan", []) == ["a-domain@x.example"]
    assert table.copies("bob@localhost", []) == ["b-user@x.example"]    # a local domain
    assert table.copies("bob@else.example", []) == []                   # not ours
    assert table.copies("", ["carol@else.example", "d@else.example"]) == ["c-copy@x.example"]


def test_log_user_is_always_bcc_under_masqmails_name():
    both = rules("\toption always_bcc 'arch@x.example'\n\toption log_user 'mqarch'\n")
    assert both.copies("s@x.example", ["r@x.example"]) == ["arch@x.example",
                                                           "mqarch@home.lan"]
    out = both.with_copies("s@x.example", ["r@x.example", "ARCH@x.example"])
    assert [(r.address, r.notify) for r in out] == [
        ("r@x.example", None), ("ARCH@x.example", None), ("mqarch@home.lan", "NEVER")]


def test_one_copy_for_many_recipients_with_the_same_copy_address():
    table = rules("\tlist recipient_bcc '@else.example c@x.example'\n"
                  "\toption always_bcc 'c@x.example'\n")
    out = table.with_copies("s@x.example", ["a@else.example", "b@else.example"])
    assert [r.address for r in out] == ["a@else.example", "b@else.example", "c@x.example"]


@pytest.mark.parametrize("line", [
    "\tlist sender_bcc 'alice@home.lan'\n", "\tlist sender_bcc 'a b c'\n",
    "\tlist recipient_bcc '@ x@y'\n", "\toption always_bcc 'a b@c'\n",
    "\toption always_bcc '<a@b>'\n", "\toption log_user 'a@b@c'\n"])
def test_a_malformed_archive_option_is_a_config_error(line):
    with pytest.raises(ConfigError) as err:
        rules(line)
    assert str(err.value).startswith("<string>:3: ")


def test_nothing_is_copied_unless_configured():
    assert not schema.loads("config masq 'main'\n").copies_wanted()
    assert schema.loads("config masq 'main'\n\toption log_user 'x'\n").copies_wanted()


def site(tmp_path, extra, sink_port, smtp_port=None):
    extra = ("\tlist listen 'smtp://127.0.0.1:%d'\n" % (smtp_port or free_port()) +
             "\tlist local_users 'mqarch'\n\tlist local_users 'mqsend'\n"
             "\tlist local_users 'mqrcpt'\n" + extra)
    routes = ("config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
              "\toption allowed_recipient '*@remote.example'\n" % sink_port)
    return write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=extra,
                        routes=routes)


def box(tmp_path, user):
    path = tmp_path / "mail" / user
    return [m for m in mailbox.mbox(str(path))] if os.path.exists(path) else []


def test_sendmail_to_many_recipients_and_a_retry_make_one_copy(tmp_path):
    port = free_port()
    conf = site(tmp_path, "\toption always_bcc 'mqarch'\n", port)
    with Sink(port) as sink:
        done = masq("-C", conf, "-odq", "-f", "mqsend@test.example", "mqrcpt",
                    "temp-one@remote.example", "perm-two@remote.example",
                    "ok@remote.example", input=BODY)
        assert done.returncode == 0, done.stderr
        for _ in range(3):                    # the temp- recipient is tried again
            assert masq("flush", "-C", conf).returncode == 0
        arrived = sink.wait(1)
    [copy] = box(tmp_path, "mqarch")
    assert copy["Subject"] == "keep me" and "for the record" in copy.get_payload()
    assert "mqarch" not in copy.as_string().split("\n\n")[0].replace(
        "Delivered-To: mqarch", "")           # blind: no header names the archive
    assert len(box(tmp_path, "mqrcpt")) == 1
    assert [m[1] for m in arrived if m[0] not in ("", "<>")] == [["ok@remote.example"]]
    [dsn] = box(tmp_path, "mqsend")           # the perm- recipient's bounce
    text = dsn.as_string()
    assert "perm-two@remote.example" in text and "mqarch" not in text


def test_a_copy_survives_a_restart_once(tmp_path):
    """Accepted over SMTP by a daemon that is killed before delivering; the restarted
    daemon delivers the message and its copy once."""
    port, smtp = free_port(), free_port()
    conf = site(tmp_path, "\toption do_queue '1'\n\tlist recipient_bcc "
                          "'mqrcpt@test.example mqarch'\n", port, smtp)
    daemon = Daemon(conf, wait_port=smtp).start()
    try:
        with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as client:
            client.sendmail("mqsend@test.example", ["mqrcpt@test.example"], BODY)
    finally:
        daemon.stop(9)                        # SIGKILL: nothing delivered yet
    assert box(tmp_path, "mqarch") == []
    daemon = Daemon(conf, wait_port=smtp).start()
    try:
        assert masq("flush", "-C", conf).returncode == 0
    finally:
        daemon.stop()
    assert masq("flush", "-C", conf).returncode == 0
    assert len(box(tmp_path, "mqarch")) == 1 and len(box(tmp_path, "mqrcpt")) == 1


def test_a_failed_copy_is_only_logged(tmp_path):
    port = free_port()
    conf = site(tmp_path, "\tlist sender_bcc '@test.example perm-archive@remote.example'\n",
                port)
    with Sink(port):
        done = masq("-C", conf, "-odq", "-f", "mqsend@test.example", "mqrcpt", input=BODY)
        assert done.returncode == 0, done.stderr
        flush = masq("flush", "-C", conf)
        masq("flush", "-C", conf)
    assert len(box(tmp_path, "mqrcpt")) == 1
    assert box(tmp_path, "mqsend") == []       # no DSN to the sender
    log = flush.stderr.decode()
    assert "perm-archive@remote.example" in log and "bounced" in log, log


def test_qmtp_packages_get_their_copy_in_the_same_commit(tmp_path):
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=(
        "\tlist listen 'qmtp://127.0.0.1:%d'\n\toption do_queue '1'\n"
        "\toption log_user 'mqarch'\n" % port))
    daemon = Daemon(conf, wait_port=port).start()
    try:
        [answers] = qmtp_peer.send(port, [(b"Subject: q\n\nhi\n", b"a@example.org",
                                           [b"far@example.net", b"other@example.net"])])
    finally:
        daemon.stop()
    assert all(a.startswith(b"K") for a in answers)
    queue = Queue(str(tmp_path / "spool")).open("read")
    try:
        [msg] = queue.live()
        rcpts = [(r.address, r.notify) for r in msg.envelope.recipients]
    finally:
        queue.close()
    assert rcpts == [("far@example.net", None), ("other@example.net", None),
                     ("mqarch@test.example", "NEVER")]


def test_fetched_mail_gets_its_copy_too():
    clock = FakeClock()
    cfg = schema.loads("config masq 'main'\n\toption hostname 'home.lan'\n"
                       "\tlist recipient_bcc '@home.lan mqarch'\n")
    host = FakeHost(cfg, Logger("stderr", "info", clock=clock), clock,
                    queue=MemoryQueue(clock=clock))
    source = type("Source", (), {"recipient": "alice@home.lan", "name": "isp"})
    intake = Intake(host, source, "uid-1", ("pop.isp.example", "192.0.2.1"), None, "POP3")
    intake.feed(b"Return-Path: <far@example.net>\r\nSubject: fetched\r\n\r\nhi\r\n")
    envelope = intake.commit(lambda error: None)
    assert envelope.sender == "far@example.net"
    assert [(r.address, r.notify) for r in envelope.recipients] == [
        ("alice@home.lan", None), ("mqarch@home.lan", "NEVER")]
    host.loop.close()
