"""QMTP out (`smarthost 'qmtp:HOST[:PORT]'`): against an independent QMTP server written from
the specification (tests/qmtp_peer.py), each recipient's K, Z or D response becomes
delivered, deferred or bounced, and the text arrives exactly as queued; and between two masq
daemons, one relaying to the other's `qmtp://` listener."""

import pytest

from masq.queue.spool import Queue

from helpers import Daemon, free_port, masq, status, wait_for, write_config
import qmtp_peer

TEXT = b"Subject: qmtp out\n\n.a dot first\n" + b"line of the body\n" * 5000 + b"end\n"


def test_responses_map_to_outcomes_and_the_text_arrives_as_queued(tmp_path):
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), routes=(
        "config route 'q'\n\toption smarthost 'qmtp:127.0.0.1:%d'\n" % port))
    with qmtp_peer.Server(port) as server:
        daemon = Daemon(conf).start()
        try:
            done = masq("-C", conf, "-i", "-f", "me@test.example", "ok@example.org",
                        "z-later@example.org", "d-gone@example.org", input=TEXT)
            assert done.returncode == 0, done.stderr
            states = wait_for(lambda: _states(conf), timeout=30)
            log = daemon.log_so_far()
        finally:
            daemon.stop()
    assert states == {"ok@example.org": "delivered", "z-later@example.org": "deferred",
                      "d-gone@example.org": "bounced"}, log
    assert "to=<ok@example.org>, relay=127.0.0.1[127.0.0.1]:%d" % port in log
    assert "dsn=5.1.1, status=bounced" in log and "dsn=4.2.0" in log
    (body, sender, rcpts), = server.packages
    assert sender == b"me@test.example"
    assert rcpts == [b"ok@example.org", b"z-later@example.org", b"d-gone@example.org"]
    assert body.endswith(b"\n\n.a dot first\n" + b"line of the body\n" * 5000 + b"end\n")


def _states(conf):
    """Return {address: state} of the queued recipients once nothing is queued or in
    flight any more (the bounce to me@test.example is local and leaves at once)."""
    doc = status(conf)
    rcpts = {r["address"]: r["state"] for m in doc["queue"] for r in m["recipients"]}
    return rcpts if rcpts and "queued" not in rcpts.values() else None


def test_masq_relays_to_masq_over_qmtp(tmp_path):
    qport = free_port()
    b_conf = write_config(str(tmp_path / "b.conf"), str(tmp_path / "b" / "spool"), extra=(
        "\tlist listen 'qmtp://127.0.0.1:%d'\n\toption do_queue '1'\n" % qport))
    a_conf = write_config(str(tmp_path / "a.conf"), str(tmp_path / "a" / "spool"), routes=(
        "config route 'q'\n\toption smarthost 'qmtp:127.0.0.1:%d'\n" % qport))
    b = Daemon(b_conf, wait_port=qport).start()
    a = Daemon(a_conf).start()
    try:
        done = masq("-C", a_conf, "-i", "-f", "me@test.example", "far@example.org",
                    input=TEXT)
        assert done.returncode == 0, done.stderr
        assert wait_for(lambda: status(a_conf)["queue"] == [], timeout=30), a.log_so_far()
    finally:
        a.stop()
        b.stop()
    queue = Queue(str(tmp_path / "b" / "spool")).open("read")
    try:
        (msg,) = queue.live()
        body = b"".join(queue.body(msg.id))
    finally:
        queue.close()
    assert [r.address for r in msg.envelope.recipients] == ["far@example.org"]
    assert msg.envelope.protocol == "qmtp" and msg.envelope.crlf
    assert body.endswith(TEXT.split(b"\n\n", 1)[1].replace(b"\n", b"\r\n"))
    assert body.count(b"Received: ") == 2           # masq a's, then masq b's (QMTP)


def test_the_smarthost_may_name_qmtp():
    from masq.config import schema as config
    base = "config masq 'main'\n\toption hostname 'h.example'\nconfig route 'q'\n"
    for good in ("qmtp:relay.example", "qmtp:relay.example:2209", "qmtp:[192.0.2.1]:209"):
        cfg = config.loads(base + "\toption smarthost '%s'\n" % good, path="t.conf")
        assert cfg.route("q").smarthost == good
    for bad in ("qmtp:", "qmtp:relay.example:x", "smtp:relay.example"):
        with pytest.raises(config.ConfigError):
            config.loads(base + "\toption smarthost '%s'\n" % bad, path="t.conf")


def test_queued_messages_go_over_one_connection(tmp_path):
    """The QMTP agent carries a batch of packages over one connection, also behind the
    wrapper every non-SMTP agent gets for BINARYMIME texts (outbound/binary.py)."""
    port = free_port()
    folder = tmp_path / "online"
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), routes=(
        "config route 'q'\n\toption smarthost 'qmtp:127.0.0.1:%d'\n"
        "\toption online 'file:%s'\n" % (port, folder)))
    with qmtp_peer.Server(port) as server:
        daemon = Daemon(conf).start()
        try:
            for n in range(3):
                done = masq("-C", conf, "-i", "-f", "me@test.example", "r%d@example.org" % n,
                            input=b"Subject: %d\n\nbody\n" % n)
                assert done.returncode == 0, done.stderr
            assert masq("online", "q", "up", "-C", conf).returncode == 0
            assert wait_for(lambda: len(server.packages) == 3, timeout=60), \
                daemon.log_so_far()
        finally:
            daemon.stop()
    assert server.connections == 1
