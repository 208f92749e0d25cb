"""QMTP in (`listen qmtp://`): packages from an independent client (tests/qmtp_peer.py),
both message encodings, pipelined, are queued once synced and answered per recipient
with the same relay policy and limits as SMTP."""


from masq.queue.spool import Queue

from helpers import Daemon, free_port, write_config
import qmtp_peer


def stored(spool):
    queue = Queue(spool).open("read")
    try:
        return sorted((m.envelope.sender, [r.address for r in m.envelope.recipients],
                       b"".join(queue.body(m.id))) for m in queue.live())
    finally:
        queue.close()


def daemon_conf(tmp_path, port, extra=""):
    return write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=(
        "\tlist listen 'qmtp://127.0.0.1:%d'\n\toption do_queue '1'\n"
        "\tlist local_users 'mqqmtp'\n" % port + extra))


def test_packages_are_queued_and_answered_per_recipient(tmp_path):
    port = free_port()
    conf = daemon_conf(tmp_path, port)
    text = b"Subject: over qmtp\n\nline one\n.line with a dot\nno end"
    daemon = Daemon(conf, wait_port=port).start()
    try:
        answers = qmtp_peer.send(port, [
            (text, b"a@example.org", [b"far@example.net", b"mqnoqmtp@test.example",
                                      b"mqqmtp@test.example"]),
            (text, b"", [b"other@example.net"], True)])
    finally:
        daemon.stop()
    first, second = answers
    assert first[0].startswith(b"KMessage queued as ") and first[2] == first[0]
    assert first[1].startswith(b"D") and first[1].endswith(b"#5.1.1")
    assert second[0].startswith(b"KMessage queued as ")
    messages = stored(str(tmp_path / "spool"))
    assert [(s, r) for s, r, _ in messages] == sorted(
        [("a@example.org", ["far@example.net", "mqqmtp@test.example"]),
         ("", ["other@example.net"])])
    for _, _, body in messages:
        received, _, rest = body.partition(b"\r\n\r\n")
        assert received.startswith(b"Received: from unknown (unknown [127.0.0.1])")
        assert b"with QMTP" in received
        assert rest == b"line one\r\n.line with a dot\r\nno end\r\n"


def test_limits_and_relay_policy_apply(tmp_path):
    port = free_port()
    conf = daemon_conf(tmp_path, port, "\toption max_message_size '1k'\n"
                       "\tlist relay_net '192.0.2.0/24'\n\toption max_recipients '1'\n")
    daemon = Daemon(conf, wait_port=port).start()
    try:
        (big,), (relay, local) = qmtp_peer.send(port, [
            (b"Subject: big\n\n" + b"x" * 2000 + b"\n", b"a@example.org", [b"x@test.example"]),
            (b"Subject: small\n\nhi\n", b"a@example.org",
             [b"far@example.net", b"mqqmtp@test.example"])])
    finally:
        daemon.stop()
    assert big.startswith(b"D") and big.endswith(b"#5.3.4")
    assert relay.startswith(b"D") and relay.endswith(b"#5.7.1")     # 127.0.0.1 not trusted
    assert local.startswith(b"Z") and local.endswith(b"#4.5.3")     # over max_recipients
    assert stored(str(tmp_path / "spool")) == []


def test_a_mail_loop_is_refused(tmp_path):
    port = free_port()
    conf = daemon_conf(tmp_path, port)
    text = b"".join(b"Received: from hop%d\n" % i for i in range(60)) + b"Subject: loop\n\nx\n"
    daemon = Daemon(conf, wait_port=port).start()
    try:
        ((answer,),) = qmtp_peer.send(port, [(text, b"a@example.org", [b"far@example.net"])])
    finally:
        daemon.stop()
    assert answer.startswith(b"D") and answer.endswith(b"#5.4.0")
    assert stored(str(tmp_path / "spool")) == []
