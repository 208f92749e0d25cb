"""QMQP in (`listen qmqp://`), fed by Postfix's qmqp-source: messages queued with their
envelope, one answer per message; only relay_net clients may use it."""

import subprocess

from masq.queue.spool import Queue

from helpers import Daemon, free_port, write_config
import qmtp_peer


def stored(spool):
    queue = Queue(spool).open("read")
    try:
        return [(m.envelope, b"".join(queue.body(m.id))) for m in queue.live()]
    finally:
        queue.close()


def conf_for(tmp_path, port, extra=""):
    return write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=(
        "\tlist listen 'qmqp://127.0.0.1:%d'\n\toption do_queue '1'\n" % port + extra))


def qmqp_source(port, *args):
    return subprocess.run(["qmqp-source"] + list(args) + ["127.0.0.1:%d" % port],
                          capture_output=True, text=True, timeout=120)


def test_qmqp_source_messages_are_queued(tmp_path):
    port = free_port()
    conf = conf_for(tmp_path, port)
    daemon = Daemon(conf, wait_port=port).start()
    try:
        done = qmqp_source(port, "-s", "2", "-m", "10", "-l", "3000",
                           "-f", "qs@example.org", "-t", "far@example.net")
        log = daemon.log_so_far()
    finally:
        daemon.stop()
    assert done.returncode == 0, done.stderr + log
    messages = stored(str(tmp_path / "spool"))
    assert len(messages) == 10
    for env, body in messages:
        assert env.sender == "qs@example.org" and env.protocol == "qmqp" and env.crlf
        assert [r.address for r in env.recipients] == ["far@example.net"]
        assert b"with QMQP" in body and b"\r\n\r\n" in body
        assert b"\n" not in body.replace(b"\r\n", b"")      # stored with CRLF line ends


def test_clients_outside_relay_net_and_bad_recipients_are_refused(tmp_path):
    port = free_port()
    conf = conf_for(tmp_path, port, "\tlist relay_net '192.0.2.0/24'\n")
    daemon = Daemon(conf, wait_port=port).start()
    try:
        done = qmqp_source(port, "-m", "1", "-f", "qs@example.org", "-t", "far@example.net")
        (answer,) = _send(port, b"Subject: x\n\nhi\n", b"a@example.org", [b"b@example.net"])
    finally:
        daemon.stop()
    assert done.returncode != 0
    assert answer.startswith(b"D") and answer.endswith(b"#5.7.1")
    assert stored(str(tmp_path / "spool")) == []


def _send(port, text, sender, recipients):
    """Send one QMQP message (written here from the protocol description); return the
    response netstrings."""
    import socket
    inner = qmtp_peer.ns(text) + qmtp_peer.ns(sender) + b"".join(map(qmtp_peer.ns, recipients))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(qmtp_peer.ns(inner))
        value, _ = qmtp_peer.read_ns(sock, b"")
        return [value]


def test_qmqp_route_to_postfix_qmqp_sink(tmp_path):
    from helpers import masq, status, wait_for, wait_port
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), routes=(
        "config route 'q'\n\toption smarthost 'qmqp:127.0.0.1:%d'\n" % port))
    sink = subprocess.Popen(["qmqp-sink", "-c", "127.0.0.1:%d" % port, "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=sink)
        daemon = Daemon(conf).start()
        try:
            for n in range(3):
                done = masq("-C", conf, "-f", "me@test.example", "a@example.org",
                            "b@example.org", input=b"Subject: %d\n\nhello\n" % n)
                assert done.returncode == 0, done.stderr
            assert wait_for(lambda: status(conf)["queue"] == [], timeout=30)
            log = daemon.log_so_far()
        finally:
            daemon.stop()
    finally:
        sink.terminate()
        sink.wait(5)
    assert log.count("status=sent") == 6, log
    assert "relay=127.0.0.1[127.0.0.1]:%d" % port in log


def test_masq_relays_to_masq_over_qmqp(tmp_path):
    from helpers import masq, status, wait_for
    qport = free_port()
    b_conf = write_config(str(tmp_path / "b.conf"), str(tmp_path / "b" / "spool"), extra=(
        "\tlist listen 'qmqp://127.0.0.1:%d'\n\toption do_queue '1'\n" % qport))
    a_conf = write_config(str(tmp_path / "a.conf"), str(tmp_path / "a" / "spool"), routes=(
        "config route 'q'\n\toption smarthost 'qmqp:127.0.0.1:%d'\n" % qport))
    text = b"Subject: qmqp\n\n.dot\n" + b"body line\n" * 20000
    b = Daemon(b_conf, wait_port=qport).start()
    a = Daemon(a_conf).start()
    try:
        for n in range(2):
            done = masq("-C", a_conf, "-i", "-f", "me@test.example", "far@example.org",
                        "other@example.org", input=text)
            assert done.returncode == 0, done.stderr
        assert wait_for(lambda: status(a_conf)["queue"] == [], timeout=30), a.log_so_far()
    finally:
        a.stop()
        b.stop()
    messages = stored(str(tmp_path / "b" / "spool"))
    assert len(messages) == 2
    for env, body in messages:
        assert [r.address for r in env.recipients] == ["far@example.org", "other@example.org"]
        assert body.endswith(b"\r\n\r\n.dot\r\n" + b"body line\r\n" * 20000)
