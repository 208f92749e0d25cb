"""Fetching by IMAP from a real Dovecot: STARTTLS, implicit TLS, keep, UIDVALIDITY, expunge."""

import os
import re

import pytest

import dovecot
from helpers import Daemon, masq, wait_for, write_config
from masq.proto import imap as I
from masq.proto.errors import ProtocolError

pytestmark = pytest.mark.skipif(not dovecot.available(), reason="dovecot not installed")

USERS = {"i%d" % i: "pw%d" % i for i in range(6)}


@pytest.fixture(scope="module")
def server():
    dv = dovecot.Dovecot(USERS).start()
    yield dv
    dv.stop()


def message(n):
    return (b"From: s%d@example.org\nSubject: imap %d\nMessage-ID: <i%d@test>\n\n"
            b"line\n.dot line\n" % (n, n, n))


def setup(tmp_path, server, user, options="", port="imap"):
    spool = str(tmp_path / "spool")
    fetch = ("config fetch 'box'\n\toption protocol 'imap'\n"
             "\toption server '127.0.0.1:%d'\n\toption tls_ca '%s'\n"
             "\toption user '%s'\n\toption password '%s'\n\toption deliver_to 'mqfetch'\n%s"
             % (server.ports[port], server.ca, user, USERS[user], options))
    return write_config(str(tmp_path / "masq.conf"), spool,
                        extra="\tlist local_users 'mqfetch'\n", routes=fetch)


def ids(tmp_path):
    path = tmp_path / "mail" / "mqfetch"
    text = path.read_bytes() if path.exists() else b""
    return sorted(re.findall(rb"^Message-ID: <(i\d+)@test>", text, re.M | re.I))


def fetch(conf):
    done = masq("fetch", "-C", conf, timeout=120)
    return done.returncode, (done.stdout + done.stderr).decode()


def test_fetch_over_starttls_expunges(tmp_path, server):
    server.clear("i0")
    for n in range(3):
        server.deliver("i0", message(n))
    conf = setup(tmp_path, server, "i0")
    daemon = Daemon(conf).start()
    try:
        code, out = fetch(conf)
        assert code == 0 and "box: 3 taken" in out, out
        assert wait_for(lambda: len(ids(tmp_path)) == 3)
        assert ids(tmp_path) == [b"i0", b"i1", b"i2"]
        assert server.count("i0") == 0
        text = (tmp_path / "mail" / "mqfetch").read_bytes()
        assert b"with IMAP" in text and b"\n.dot line\n" in text.replace(b"\r\n", b"\n")
        assert re.search(r"imap-login: Info: Login: user=<i0>, method=PLAIN.*TLS",
                         server.log_text())
        assert "box: 0 taken" in fetch(conf)[1]
    finally:
        daemon.stop()


def test_keep_and_uidvalidity(tmp_path, server):
    server.clear("i1")
    for n in range(2):
        server.deliver("i1", message(n))
    conf = setup(tmp_path, server, "i1", "\toption keep '1'\n")
    daemon = Daemon(conf).start()
    try:
        assert "box: 2 taken" in fetch(conf)[1]
        assert "box: 0 taken" in fetch(conf)[1]
        assert server.count("i1") == 2
        state = open(os.path.join(str(tmp_path), "spool", "fetch", "box.uids")).read()
        assert re.search(r"^\d+:1$", state, re.M)
        # the folder made anew with a new UIDVALIDITY (given, not left to Dovecot's clock:
        # it takes the time in seconds), so the old keys mean nothing
        old = int(re.search(r"^(\d+):1$", state, re.M).group(1))
        server.clear("i1")
        uidlist = os.path.join(server.maildir("i1"), "dovecot-uidlist")
        with open(uidlist, "w") as out:
            out.write("3 V%d N1\n" % (old + 1))
        os.chown(uidlist, server.nobody.pw_uid, server.nobody.pw_gid)
        server.deliver("i1", message(5))
        assert "box: 1 taken" in fetch(conf)[1]
        assert wait_for(lambda: len(ids(tmp_path)) == 3)
        state = open(os.path.join(str(tmp_path), "spool", "fetch", "box.uids")).read()
        assert re.findall(r"^\d+:\d+$", state, re.M) == ["%d:1" % (old + 1)]
    finally:
        daemon.stop()


def test_implicit_tls_and_max_size(tmp_path, server):
    server.clear("i2")
    server.deliver("i2", message(0) + b"x" * 4000 + b"\n")
    server.deliver("i2", message(1))
    conf = setup(tmp_path, server, "i2", "\toption tls 'tls'\n\toption max_size '2k'\n",
                 port="imaps")
    daemon = Daemon(conf).start()
    try:
        code, out = fetch(conf)
        assert code == 0 and "box: 1 taken" in out, out
        assert server.count("i2") == 1
        assert wait_for(lambda: ids(tmp_path) == [b"i1"])
    finally:
        daemon.stop()


def test_login_without_tls_when_said(tmp_path, server):
    server.clear("i3")
    server.deliver("i3", message(0))
    conf = setup(tmp_path, server, "i3", "\toption tls 'none'\n")
    daemon = Daemon(conf).start()
    try:
        code, out = fetch(conf)
        assert code == 0 and "box: 1 taken" in out, out
    finally:
        daemon.stop()


def test_wrong_password(tmp_path, server):
    server.clear("i4")
    server.deliver("i4", message(0))
    conf = setup(tmp_path, server, "i4")
    with open(conf) as src:
        text = src.read()
    with open(conf, "w") as out:
        out.write(text.replace("'pw4'", "'bad'"))
    daemon = Daemon(conf).start()
    try:
        code, out = fetch(conf)
        assert code == 75 and "refused the login of i4" in out, out
        assert server.count("i4") == 1
    finally:
        daemon.stop()


# the engine alone


def events(client, data=b""):
    if data:
        client.receive_data(data)
    out = []
    while True:
        event = client.next_event()
        if event is I.NEED_DATA:
            return out
        out.append(event)


def selected():
    client = I.Client()
    events(client, b"* OK [CAPABILITY IMAP4rev1 UIDPLUS AUTH=PLAIN] ready\r\n")
    client.login("a", 'p"w')
    assert client.data_to_send() == b'm1 LOGIN "a" "p\\"w"\r\n'
    events(client, b"m1 OK done\r\n")
    client.select("INBOX")
    events(client, b"* 2 EXISTS\r\n* OK [UIDVALIDITY 77] ok\r\nm2 OK [READ-WRITE] sel\r\n")
    assert client.uidvalidity == 77 and client.exists == 2
    client.data_to_send()
    return client


def test_engine_streams_a_literal_split_anywhere():
    body = b"Subject: x\r\n\r\n" + b"y" * 1000 + b"\r\n"
    wire = b"* 1 FETCH (UID 9 BODY[] {%d}\r\n%s)\r\nm3 OK done\r\n" % (len(body), body)
    for step in (1, 7, 100, len(wire)):
        client = selected()
        client.fetch(9)
        assert client.data_to_send() == b"m3 UID FETCH 9 BODY.PEEK[]\r\n"
        got = []
        for pos in range(0, len(wire), step):
            got += events(client, wire[pos:pos + step])
        assert b"".join(e.data for e in got if isinstance(e, I.MessageText)) == body
        assert I.MessageEnd(9, len(body)) in got and got[-1].command == "FETCH"


def test_engine_refuses_hostile_input():
    for bad in (b"m9 OK who?\r\n", b"garbage\r\n", b"* 1 FETCH (UID 1 BODY[] {99999999999}\r\n"):
        client = selected()
        client.fetch(1)
        with pytest.raises(ProtocolError):
            events(client, bad)
        assert client.state == I.CLOSED
    client = I.Client()
    events(client, b"* OK hi\r\n")
    client.starttls()
    with pytest.raises(ProtocolError):
        events(client, b"m1 OK go\r\n* injected\r\n")


def test_uid_expunge_only_takes_what_masq_took(tmp_path, server):
    """With UIDPLUS, a message another client marked \\Deleted is not expunged by us."""
    import imaplib
    import ssl
    server.clear("i5")
    for n in range(2):
        server.deliver("i5", message(n))
    box = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    box.starttls(ssl.create_default_context(cafile=server.ca))
    box.login("i5", USERS["i5"])
    box.select("INBOX")
    conf = setup(tmp_path, server, "i5", "\toption max_count '1'\n")
    daemon = Daemon(conf).start()
    try:
        box.store("2", "+FLAGS", "(\\Deleted)")    # someone else's decision, not expunged
        code, out = fetch(conf)
        assert code == 0 and "box: 1 taken" in out, out
        box.noop()
        assert server.count("i5") == 1
    finally:
        box.logout()
        daemon.stop()
