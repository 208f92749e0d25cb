"""The SMTP server end to end, against real clients: smtplib, swaks, smtp-source.

A daemon per test module runs on loopback ports with a self-signed certificate; relay_net
does not include 127.0.0.1, so the test client is an outsider unless it authenticates.
"""

import smtplib
import socket
import ssl
import subprocess

import pytest

from helpers import Daemon, free_port, masq, reply, write_config
from masq.policy.passwords import hash_password
from masq.queue.spool import Queue


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("smtpd")
    cert, key = str(base / "cert.pem"), str(base / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=localhost", "-days", "2", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    ports = {kind: free_port() for kind in ("smtp", "submission", "smtps", "plain")}
    extra = (
        "\toption do_queue '1'\n"          # accepted mail stays queued for inspection
        "\tlist relay_net '10.99.0.0/16'\n"
        "\tlist local_users 'alice'\n"
        "\toption max_recipients '100'\n"
        "\toption max_message_size '1M'\n"
        "\toption tls_cert '%s'\n\toption tls_key '%s'\n"
        "\tlist listen 'smtp://127.0.0.1:%d'\n"
        "\tlist listen 'submission://127.0.0.1:%d'\n"
        "\tlist listen 'smtps://127.0.0.1:%d'\n"
        "\tlist listen 'smtp://127.0.0.1:%d?auth=plain'\n"
        % (cert, key, ports["smtp"], ports["submission"], ports["smtps"], ports["plain"]))
    users = "config user 'carol'\n\toption password '%s'\n" % hash_password("s3cret pass")
    conf = write_config(str(base / "masq.conf"), str(base / "spool"), extra=extra,
                        routes=users)
    daemon = Daemon(conf, wait_port=ports["smtp"]).start()
    yield {"conf": conf, "ports": ports, "spool": str(base / "spool"), "daemon": daemon}
    daemon.stop()


def queued(server):
    """Return {recipient address: message text} of what the queue holds now."""
    reply = masq("status", "--json", "-C", server["conf"])
    assert reply.returncode == 0
    queue = Queue(server["spool"]).open("read")
    try:
        out = {}
        for msg in queue.live():
            for rcpt in msg.envelope.recipients:
                out[rcpt.address] = b"".join(queue.body(msg.id))
        return out
    finally:
        queue.close()


def client(server, kind="smtp"):
    return smtplib.SMTP("127.0.0.1", server["ports"][kind], timeout=10)


def test_ehlo_advertises_the_extensions(server):
    with client(server) as smtp:
        code, text = smtp.ehlo("client.example")
        assert code == 250
        for word in (b"PIPELINING", b"SIZE 1048576", b"8BITMIME", b"SMTPUTF8",
                     b"ENHANCEDSTATUSCODES", b"CHUNKING", b"DSN", b"STARTTLS"):
            assert word in text
        assert b"AUTH" not in text          # no AUTH before TLS on a normal listener


def test_local_delivery_accepted_from_outsider(server):
    with client(server) as smtp:
        smtp.sendmail("bob@example.org", ["alice@test.example"],
                      b"Subject: smtplib\r\n\r\nhello alice\r\n")
    text = queued(server)["alice@test.example"]
    assert text.startswith(b"Received: from ")
    assert text.endswith(b"hello alice\r\n")


def test_relay_from_outside_relay_net_is_refused(server):
    with client(server) as smtp:
        smtp.ehlo("client.example")
        smtp.mail("bob@example.org")
        code, text = smtp.rcpt("victim@elsewhere.example")
    assert code == 554 and text.startswith(b"5.7.1") and b"not relaying for you to this domain" in text


@pytest.mark.parametrize("rcpt", ["alice%elsewhere.example@test.example",
                                  "elsewhere.example!alice@test.example",
                                  "@test.example:victim@elsewhere.example",
                                  '"victim@elsewhere.example"@test.example'])
def test_routed_address_tricks_are_refused(server, rcpt):
    with client(server) as smtp:
        smtp.ehlo("client.example")
        smtp.mail("bob@example.org")
        code, _ = smtp.docmd("RCPT TO:<%s>" % rcpt)
    assert code == 554


def test_unknown_local_user_is_550_at_rcpt(server):
    with client(server) as smtp:
        smtp.ehlo("client.example")
        smtp.mail("bob@example.org")
        code, text = smtp.rcpt("nosuchuser@test.example")
    assert code == 550 and text.startswith(b"5.1.1")


def test_recipient_cap_gives_452_and_keeps_the_first(server):
    with client(server) as smtp:
        smtp.ehlo("client.example")
        smtp.mail("bob@example.org")
        codes = [smtp.rcpt("alice@test.example")[0]]
        for _ in range(3):
            codes.append(smtp.docmd("RCPT TO:<postmaster@test.example>")[0])
        assert codes[:2] == [250, 250]


def test_starttls_and_auth_with_swaks(server):
    done = subprocess.run(
        ["swaks", "--server", "127.0.0.1:%d" % server["ports"]["smtp"], "--tls",
         "--auth", "PLAIN", "--auth-user", "carol", "--auth-password", "s3cret pass",
         "--from", "carol@test.example", "--to", "far@elsewhere.example",
         "--body", "relayed after auth"], capture_output=True, timeout=30)
    out = done.stdout.decode()
    assert done.returncode == 0, out
    assert "235 2.7.0" in out and "250 2.0.0 Message queued" in out
    text = queued(server)["far@elsewhere.example"]
    assert b"with ESMTPSA" in text and b"authenticated user carol" in text
    assert b"TLSv1." in text


def test_wrong_password_is_535(server):         # its delay: test_failure_delay.py
    done = subprocess.run(
        ["swaks", "--server", "127.0.0.1:%d" % server["ports"]["smtp"], "--tls",
         "--auth", "LOGIN", "--auth-user", "carol", "--auth-password", "wrong",
         "--to", "alice@test.example"], capture_output=True, timeout=30)
    assert "535 5.7.8" in done.stdout.decode()


def test_submission_needs_auth(server):
    with client(server, "submission") as smtp:
        smtp.ehlo("client.example")
        code, text = smtp.mail("bob@example.org")
    assert code == 530 and text.startswith(b"5.7.0")


def test_smtps_speaks_tls_from_the_first_byte(server):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP_SSL("127.0.0.1", server["ports"]["smtps"], context=context,
                          timeout=30) as smtp:
        smtp.login("carol", "s3cret pass")
        smtp.sendmail("carol@test.example", ["tls@elsewhere.example"], b"\r\nvia smtps\r\n")
    assert queued(server)["tls@elsewhere.example"].endswith(b"via smtps\r\n")


def test_auth_plain_allowed_on_a_plain_listener_that_says_so(server):
    with client(server, "plain") as smtp:
        smtp.ehlo("client.example")
        assert smtp.has_extn("auth")
        smtp.login("carol", "s3cret pass")


def test_swaks_pipelining(server):
    done = subprocess.run(
        ["swaks", "--server", "127.0.0.1:%d" % server["ports"]["smtp"], "--pipeline",
         "--from", "bob@example.org", "--to", "alice@test.example", "--body", "piped"],
        capture_output=True, timeout=30)
    assert done.returncode == 0, done.stdout.decode()
    assert "250 2.0.0 Message queued" in done.stdout.decode()


def test_smtp_source_load(server):
    done = subprocess.run(
        ["smtp-source", "-s", "5", "-m", "50", "-l", "2048", "-f", "bob@example.org",
         "-t", "alice@test.example", "127.0.0.1:%d" % server["ports"]["smtp"]],
        capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_size_declared_over_limit_is_552_at_mail(server):
    with client(server) as smtp:
        smtp.ehlo("client.example")
        code, text = smtp.docmd("MAIL FROM:<bob@example.org> SIZE=104857600")
    assert code == 552 and text.startswith(b"5.3.4")


def test_body_over_limit_is_552_after_the_dot_and_nothing_queued(server):
    before = set(queued(server))
    with client(server) as smtp:
        smtp.ehlo("client.example")
        smtp.mail("bob@example.org")           # no SIZE= declared
        smtp.rcpt("postmaster@test.example")
        code, text = smtp.data(b"\r\n" + (b"x" * 78 + b"\r\n") * 20000)
    assert code == 552 and text.startswith(b"5.3.4")
    assert set(queued(server)) == before


def test_too_many_hops_is_554(server):
    hops = b"".join(b"Received: from h%d by h%d; Thu, 1 Jan 2026 00:00:00 +0000\r\n" % (n, n)
                    for n in range(60))
    with client(server) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as err:
            smtp.sendmail("bob@example.org", ["alice@test.example"], hops + b"\r\nloop\r\n")
    assert err.value.smtp_code == 554


def test_pipelined_plaintext_after_starttls_is_discarded(server):
    sock = socket.create_connection(("127.0.0.1", server["ports"]["smtp"]), 10)
    sock.recv(1000)
    sock.sendall(b"EHLO x\r\n")
    reply(sock, b"250 ")
    sock.sendall(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
    data = reply(sock, b"220 ")
    assert data.startswith(b"220 ") and b"250" not in data
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_socket(sock, server_hostname="x")
    tls.sendall(b"EHLO x\r\n")
    reply(tls, b"250 ")
    tls.sendall(b"RCPT TO:<alice@test.example>\r\n")           # no MAIL FROM was kept
    assert reply(tls, b"503 ").startswith(b"503 ")
    tls.close()


def test_unknown_command_and_http_junk(server):
    sock = socket.create_connection(("127.0.0.1", server["ports"]["smtp"]), 10)
    sock.recv(1000)
    sock.sendall(b"XYZZY\r\n")
    assert sock.recv(1000).startswith(b"500 5.5.2")
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"221 2.7.0" in reply(sock, b"221 ")
    sock.close()


def test_bs_speaks_smtp_on_stdin(server):
    dialogue = (b"EHLO local\r\nMAIL FROM:<root@test.example>\r\nRCPT TO:<alice@test.example>\r\n"
                b"DATA\r\nSubject: bs\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n")
    done = masq("-C", server["conf"], "-bs", input=dialogue)
    assert done.returncode == 0, done.stderr
    assert b"250 2.0.0 Message queued" in done.stdout
    assert done.stdout.rstrip().endswith(b"221 2.0.0 Goodbye")


def test_daemon_answers_many_connections_at_once(server):
    socks = [socket.create_connection(("127.0.0.1", server["ports"]["smtp"]), 10)
             for _ in range(8)]
    greetings = [s.recv(1000) for s in socks]
    for sock in socks:
        sock.close()
    assert all(g.startswith(b"220 ") for g in greetings)

