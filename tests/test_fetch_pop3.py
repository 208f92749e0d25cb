"""Fetching by POP3 from a real Dovecot: STLS, APOP, keep, limits, online routes, status."""

import json
import os
import re

import pytest

import dovecot
from helpers import Daemon, masq, wait_for, write_config

pytestmark = pytest.mark.skipif(not dovecot.available(), reason="dovecot not installed")

USERS = {"u%d" % i: "pw%d" % i for i in range(13)}


@pytest.fixture(scope="module")
def server():
    dv = dovecot.Dovecot(USERS).start()
    yield dv
    dv.stop()


def message(n, extra=b""):
    return (b"From: sender%d@example.org\nTo: u@example.org\nSubject: test %d\n"
            b"Return-Path: <sender%d@example.org>\n\nline one\n.starts with a dot\n%s"
            b"last\n" % (n, n, n, extra))


def setup(tmp_path, server, user, fetch_options="", main="", routes=""):
    spool = str(tmp_path / "spool")
    fetch = ("config fetch 'box'\n"
             "\toption server '127.0.0.1:%d'\n"
             "\toption tls_ca '%s'\n"
             "\toption user '%s'\n"
             "\toption password '%s'\n"
             "\toption deliver_to 'mqfetch'\n%s\n"
             % (server.ports["pop3"], server.ca, user, USERS[user], fetch_options))
    conf = write_config(str(tmp_path / "masq.conf"), spool,
                        extra="\tlist local_users 'mqfetch'\n" + main,
                        routes=routes + fetch)
    return conf, spool


def edit(conf, old, new):
    with open(conf) as src:
        text = src.read()
    assert old in text
    with open(conf, "w") as out:
        out.write(text.replace(old, new))


def mbox(tmp_path):
    path = tmp_path / "mail" / "mqfetch"
    return path.read_bytes() if path.exists() else b""


def delivered(tmp_path):
    return len(re.findall(rb"^From ", mbox(tmp_path), re.M))


def fetch(conf, *args):
    done = masq("fetch", "-C", conf, *args)
    return done.returncode, (done.stdout + done.stderr).decode()


def test_fetch_over_stls_queues_delivers_and_deletes(tmp_path, server):
    server.clear("u0")
    for n in range(3):
        server.deliver("u0", message(n))
    conf, spool = setup(tmp_path, server, "u0")
    daemon = Daemon(conf).start()
    try:
        code, out = fetch(conf)
        assert code == 0, out
        assert "box: 3 taken" in out
        assert wait_for(lambda: delivered(tmp_path) == 3)
        assert server.count("u0") == 0
        text = mbox(tmp_path)
        assert b"\n.starts with a dot\n" in text or b"\n>.starts" in text \
            or b".starts with a dot" in text
        assert re.search(rb"Received: from 127\.0\.0\.1 \(.*\[127\.0\.0\.1\]\)?.*\s+\(using "
                         rb"TLSv1\.[23]", text)
        assert b"with POP3" in text
        doc = json.loads(masq("status", "--json", "-C", conf).stdout)
        [source] = doc["fetch"]
        assert source["name"] == "box" and source["taken"] == 3
        assert source["last_error"] is None and source["last_run"]
        assert "method=PLAIN" in server.log_text() or "method=plain" in server.log_text()
        code, out = fetch(conf)               # nothing new, and the state file is pruned
        assert "box: 0 taken" in out
        state = open(os.path.join(spool, "fetch", "box.uids")).read().splitlines()
        assert len(state) == 1 and state[0].startswith("masq-fetch 1 pop3")
    finally:
        daemon.stop()


def test_sender_comes_from_return_path(tmp_path, server):
    server.clear("u1")
    server.deliver("u1", message(7))
    conf, spool = setup(tmp_path, server, "u1", main="\toption do_queue '1'\n")
    daemon = Daemon(conf).start()
    try:
        assert fetch(conf)[0] == 0
        dump = masq("queue", "-C", conf).stdout.decode()
        assert "sender7@example.org" in dump
    finally:
        daemon.stop()


def test_fetched_envelope_fields_are_not_doubled(tmp_path, server):
    """The mailbox gets one Return-Path (delivery's) and no Envelope-To: (issue 14, point 5)."""
    import mailbox
    server.clear("u11")
    server.deliver("u11", message(8).replace(b"Subject", b"Envelope-To: u@example.org\nSubject"))
    conf, spool = setup(tmp_path, server, "u11")
    daemon = Daemon(conf).start()
    try:
        assert fetch(conf)[0] == 0
        assert wait_for(lambda: delivered(tmp_path) == 1)
    finally:
        daemon.stop()
    [msg] = mailbox.mbox(str(tmp_path / "mail" / "mqfetch"))
    assert msg.get_all("Return-Path") == ["<sender8@example.org>"]
    assert msg.get_all("Envelope-To") is None and msg["Subject"] == "test 8"


def test_a_return_path_with_a_comment_still_names_the_sender(tmp_path, server):
    """Return-Path: is parsed as an address header (comments and folding allowed), not as
    an SMTP path: `<a@b> (comment)` used to make the fetched message's sender `<>`."""
    server.clear("u12")
    server.deliver("u12", message(12).replace(
        b"Return-Path: <sender12@example.org>",
        b"Return-Path: (bounces here)\n <sender12@example.org> (via pop.example)"))
    conf, spool = setup(tmp_path, server, "u12", main="\toption do_queue '1'\n")
    daemon = Daemon(conf).start()
    try:
        assert fetch(conf)[0] == 0
        doc = json.loads(masq("status", "--json", "-C", conf).stdout)
    finally:
        daemon.stop()
    assert [m["sender"] for m in doc["queue"]] == ["sender12@example.org"]


def test_keep_leaves_mail_and_never_fetches_twice(tmp_path, server):
    server.clear("u2")
    for n in range(2):
        server.deliver("u2", message(n))
    conf, spool = setup(tmp_path, server, "u2", "\toption keep '1'\n")
    daemon = Daemon(conf).start()
    try:
        assert "box: 2 taken" in fetch(conf)[1]
        server.deliver("u2", message(9))
        assert "box: 1 taken" in fetch(conf)[1]
        assert "box: 0 taken" in fetch(conf)[1]
        assert wait_for(lambda: delivered(tmp_path) == 3)
        assert server.count("u2") == 3
    finally:
        daemon.stop()
    daemon = Daemon(conf).start()         # the state survives a restart
    try:
        assert "box: 0 taken" in fetch(conf)[1]
    finally:
        daemon.stop()


def test_max_size_and_max_count(tmp_path, server):
    server.clear("u3")
    server.deliver("u3", message(0, b"x" * 5000 + b"\n"))
    for n in range(1, 4):
        server.deliver("u3", message(n))
    conf, spool = setup(tmp_path, server, "u3", "\toption max_size '2k'\n"
                        "\toption max_count '2'\n")
    daemon = Daemon(conf).start()
    try:
        assert "box: 2 taken" in fetch(conf)[1]
        assert server.count("u3") == 2
        assert "box: 1 taken" in fetch(conf)[1]
        assert server.count("u3") == 1          # the big one stays, reported
        doc = json.loads(masq("status", "--json", "-C", conf).stdout)
        assert doc["fetch"][0]["left"] == 1
        assert "larger than max_size" in daemon.log_so_far()
    finally:
        daemon.stop()


def test_apop_without_tls(tmp_path, server):
    server.clear("u4")
    server.deliver("u4", message(1))
    conf, spool = setup(tmp_path, server, "u4", "\toption tls 'none'\n")
    daemon = Daemon(conf).start()
    try:
        assert "box: 1 taken" in fetch(conf)[1]
        assert re.search(r"user=<u4>, method=APOP", server.log_text())
    finally:
        daemon.stop()


def test_implicit_tls(tmp_path, server):
    server.clear("u5")
    server.deliver("u5", message(1))
    conf, spool = setup(tmp_path, server, "u5", "\toption tls 'tls'\n")
    edit(conf, "127.0.0.1:%d" % server.ports["pop3"], "127.0.0.1:%d" % server.ports["pop3s"])
    daemon = Daemon(conf).start()
    try:
        assert "box: 1 taken" in fetch(conf)[1]
    finally:
        daemon.stop()


def test_untrusted_certificate_is_an_error_and_takes_nothing(tmp_path, server):
    server.clear("u6")
    server.deliver("u6", message(1))
    conf, spool = setup(tmp_path, server, "u6")
    edit(conf, "\toption tls_ca '%s'\n" % server.ca, "")
    daemon = Daemon(conf).start()
    try:
        code, out = fetch(conf)
        assert code == 75 and "not trusted" in out
        assert server.count("u6") == 1
        doc = json.loads(masq("status", "--json", "-C", conf).stdout)
        assert "not trusted" in doc["fetch"][0]["last_error"]
    finally:
        daemon.stop()


def test_wrong_password_is_reported(tmp_path, server):
    server.clear("u7")
    server.deliver("u7", message(1))
    conf, spool = setup(tmp_path, server, "u7")
    edit(conf, "'pw7'", "'wrong'")
    daemon = Daemon(conf).start()
    try:
        code, out = fetch(conf)
        assert code == 75 and "refused the login of u7" in out
        assert server.count("u7") == 1
    finally:
        daemon.stop()


def test_route_coming_online_fetches(tmp_path, server):
    server.clear("u8")
    server.deliver("u8", message(1))
    flag = tmp_path / "online"
    routes = ("config route 'isp'\n\toption online 'file:%s'\n\toption smarthost "
              "'127.0.0.1:1'\n\n" % flag)
    conf, spool = setup(tmp_path, server, "u8", "\toption route 'isp'\n", routes=routes)
    daemon = Daemon(conf).start()
    try:
        code, out = fetch(conf)
        assert code == 0 and "no fetch source is online" in out
        assert server.count("u8") == 1            # offline: `masq fetch` leaves it
        assert masq("online", "isp", "up", "-C", conf).returncode == 0
        assert wait_for(lambda: server.count("u8") == 0, timeout=30)
        assert wait_for(lambda: delivered(tmp_path) == 1)
    finally:
        daemon.stop()


def test_fetch_interval(tmp_path, server):
    server.clear("u9")
    server.deliver("u9", message(1))
    conf, spool = setup(tmp_path, server, "u9", main="\toption fetch_interval '1s'\n")
    daemon = Daemon(conf).start()
    try:
        assert wait_for(lambda: server.count("u9") == 0, timeout=30)
        server.deliver("u9", message(2))
        assert wait_for(lambda: server.count("u9") == 0, timeout=30)
        assert wait_for(lambda: delivered(tmp_path) == 2)
    finally:
        daemon.stop()


def test_config_errors():
    from masq.config.schema import ConfigError, loads
    base = "config fetch 'x'\n\toption server 'h'\n\toption user 'u'\n"
    with pytest.raises(ConfigError, match="needs option password"):
        loads(base)
    with pytest.raises(ConfigError, match="no route named 'nope'"):
        loads(base + "\toption password 'p'\n\toption route 'nope'\n")
    with pytest.raises(ConfigError, match="pop3_login names no POP3 fetch"):
        loads("config route 'r'\n\toption pop3_login 'x'\n")
    cfg = loads(base + "\toption password 'p'\n")
    assert cfg.fetches[0].tls == "starttls" and cfg.fetches[0].tls_verify


def test_smtp_after_pop(tmp_path, server):
    """A smarthost that relays only for a client that logged into POP3 first (it reads
    Dovecot's log at RCPT time) takes the mail of a route with pop3_login."""
    from helpers import free_port
    from sinks import Recorder, Sink

    class PopBeforeSmtpServer(Recorder):
        async def handle_RCPT(self, server_, session, envelope, address, options):
            if "user=<u10>, method=" not in server.log_text():
                return "554 5.7.1 relaying denied: log into POP3 first"
            return await super().handle_RCPT(server_, session, envelope, address, options)

    server.clear("u10")
    port = free_port()
    sink = Sink(port)
    sink.recorder = PopBeforeSmtpServer()
    sink.controller.handler = sink.recorder
    routes = ("config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
              "\toption pop3_login 'box'\n\n" % port)
    conf, spool = setup(tmp_path, server, "u10", routes=routes)
    with sink as recorder:
        daemon = Daemon(conf).start()
        try:
            done = masq("-C", conf, "someone@remote.example", input=b"Subject: hi\n\nbody\n")
            assert done.returncode == 0, done.stderr
            assert len(recorder.wait(1, timeout=30)) == 1, daemon.log_so_far()
            assert "pop3_login box: logged in and out" in daemon.log_so_far()
            log = server.log_text()
            assert re.search(r"pop3\(u10\).*Logged out top=0/0, retr=0/0, del=0/0", log)
        finally:
            daemon.stop()


def test_check_config_warns_about_a_readable_password(tmp_path, server):
    conf, spool = setup(tmp_path, server, "u11")
    os.chmod(conf, 0o644)
    done = masq("check-config", "-C", conf)
    assert done.returncode == 0
    assert b"holds passwords (fetch box)" in done.stderr and b"chmod 600" in done.stderr
    os.chmod(conf, 0o600)
    done = masq("check-config", "-C", conf)
    assert done.returncode == 0 and b"holds passwords" not in done.stderr
