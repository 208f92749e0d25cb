"""End to end: a veth link coming up makes the daemon send its held mail, then fetch.

A real veth pair (unique names, deleted in a finally) is the `iface:` route's link; the
route's smarthost is an aiosmtpd sink and its `config fetch` source a test-started Dovecot
(POP3 with STLS and the test CA). While the link is down mail waits in the queue and the
mailbox is left alone; `ip link set up` alone sends the queued mail to the sink and takes
the Dovecot message into the test's local mailbox, the flush started before the fetch.
"""

import mailbox
import os
import socket

import pytest

import dovecot
from helpers import Daemon, free_port, masq, status, wait_for, write_config
from sinks import Sink
from test_netlink import sh, unique

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not hasattr(socket, "AF_NETLINK"),
                       reason="needs root and Linux netlink"),
    pytest.mark.skipif(not dovecot.available(), reason="dovecot not installed")]

USER, PASSWORD = "vethuser", "vethpw"
INCOMING = (b"From: remote@example.org\nTo: vethuser@example.org\nSubject: from the isp box\n"
            b"Return-Path: <remote@example.org>\n\nfetched over the veth route\n")


@pytest.fixture
def server():
    dv = dovecot.Dovecot({USER: PASSWORD}).start()
    yield dv
    dv.stop()


@pytest.fixture
def link():
    """A veth pair with an address, its masq end down; deleted after the test."""
    name, peer = unique("mq"), unique("mp")
    sh("ip link add %s type veth peer name %s" % (name, peer))
    try:
        sh("ip addr add 10.231.11.1/24 dev %s" % name)
        sh("ip link set %s up && ip link set %s down" % (peer, name))
        yield name
    finally:
        os.system("ip link del %s 2>/dev/null" % name)


def config(tmp_path, link, server, port):
    routes = ("config route 'isp'\n"
              "\toption online 'iface:%s'\n"
              "\toption smarthost '127.0.0.1:%d'\n"
              "\toption tls 'none'\n\n"
              "config fetch 'box'\n"
              "\toption server '127.0.0.1:%d'\n"
              "\toption tls_ca '%s'\n"
              "\toption user '%s'\n"
              "\toption password '%s'\n"
              "\toption route 'isp'\n"
              "\toption deliver_to 'mqveth'\n\n"
              % (link, port, server.ports["pop3"], server.ca, USER, PASSWORD))
    return write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist local_users 'mqveth'\n", routes=routes)


def local_mail(tmp_path):
    path = tmp_path / "mail" / "mqveth"
    if not path.exists():
        return []
    box = mailbox.mbox(str(path), create=False)
    try:
        return [message for message in box]
    finally:
        box.close()


def route_online(conf):
    return [r["online"] for r in status(conf)["routes"] if r["name"] == "isp"]


def test_link_up_sends_held_mail_then_fetches(tmp_path, link, server):
    server.clear(USER)
    server.deliver(USER, INCOMING)
    port = free_port()
    conf = config(tmp_path, link, server, port)
    daemon = Daemon(conf).start()
    try:
        with Sink(port) as sink:
            assert wait_for(lambda: route_online(conf) == [False], timeout=60)
            done = masq("-C", conf, "far@example.org", input=b"Subject: out\n\nheld mail\n")
            assert done.returncode == 0, done.stderr
            # link down: the mail stays queued, the mailbox is left alone
            queue = masq("queue", "-C", conf).stdout.decode()
            assert "far@example.org" in queue
            done = masq("fetch", "-C", conf)
            assert "no fetch source is online" in (done.stdout + done.stderr).decode()
            assert server.count(USER) == 1
            assert sink.messages == [] and local_mail(tmp_path) == []

            sh("ip link set %s up" % link)

            [(sender, rcpts, text)] = sink.wait(1, timeout=60)
            assert rcpts == ["far@example.org"] and b"held mail" in text
            assert wait_for(lambda: server.count(USER) == 0, timeout=60)
            assert wait_for(lambda: len(local_mail(tmp_path)) == 1, timeout=60)
            [fetched] = local_mail(tmp_path)
            assert fetched["Subject"] == "from the isp box"
            assert b"fetched over the veth route" in fetched.as_bytes()
            assert "with POP3" in fetched["Received"]
            assert wait_for(lambda: "fetch box: 1 message(s) taken" in daemon.log_so_far(),
                            timeout=60)
    finally:
        log = daemon.stop()
    lines = log.splitlines()

    def first(text):
        return next(i for i, line in enumerate(lines) if text in line)
    online = first("route isp is online: flushing")
    outgoing = first("to=<far@example.org>")
    fetched_in = first("client=127.0.0.1[127.0.0.1]")
    # the route's flush was started before the fetch took anything in
    assert online < fetched_in and online < first("fetch box: 1 message(s) taken"), log
    assert "status=sent" in lines[outgoing], log
