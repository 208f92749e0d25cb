"""Relay by client certificate: `list relay_cert 'sha256:FINGERPRINT'` (issue 12 case 11).

A daemon on loopback that does not trust loopback (relay_net elsewhere) asks every TLS
client for a certificate, never requires one, and lets a client whose certificate's
fingerprint is listed relay like an authenticated user, on STARTTLS and on smtps; the
Received: field names the certificate. Clients: swaks with --tls-cert/--tls-key and
`openssl s_client`, with certificates the test makes with openssl (a CA, one listed and
one unlisted client; and a self-signed one the CA file lists directly).
"""

import subprocess

import pytest

from helpers import Daemon, free_port, masq, write_config
from masq.queue.spool import Queue

FAR = "far@elsewhere.example"


def openssl(*args):
    return subprocess.run(["openssl"] + list(args), check=True, capture_output=True,
                          text=True).stdout


def make_cert(base, name, ca=None):
    key, cert = str(base / (name + ".key")), str(base / (name + ".pem"))
    if ca is None:
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name,
                "-days", "2", "-keyout", key, "-out", cert)
    else:
        csr = str(base / (name + ".csr"))
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name,
                "-keyout", key, "-out", csr)
        openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
                "-CAcreateserial", "-days", "2", "-out", cert)
    return cert, key


def fingerprint(cert):
    line = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", cert).strip()
    return "sha256:" + line.partition("=")[2]            # AB:CD:..., as admins copy it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("relaycert")
    ca = make_cert(base, "ca")
    server_cert = make_cert(base, "localhost")
    certs = {"listed": make_cert(base, "listed", ca), "unlisted": make_cert(base, "unlisted", ca),
             "selfsigned": make_cert(base, "selfsigned")}
    bundle = base / "clients.pem"
    bundle.write_text(open(ca[0]).read() + open(certs["selfsigned"][0]).read())
    ports = {"smtp": free_port(), "smtps": free_port()}
    extra = ("\toption do_queue '1'\n\tlist relay_net '10.99.0.0/16'\n"
             "\toption tls_cert '%s'\n\toption tls_key '%s'\n\toption tls_client_ca '%s'\n"
             "\tlist relay_cert '%s'\n\tlist relay_cert '%s'\n"
             "\tlist listen 'smtp://127.0.0.1:%d'\n\tlist listen 'smtps://127.0.0.1:%d'\n"
             % (server_cert[0], server_cert[1], bundle, fingerprint(certs["listed"][0]),
                fingerprint(certs["selfsigned"][0]).lower().replace(":", "").replace(
                    "sha256", "sha256:"), ports["smtp"], ports["smtps"]))
    conf = write_config(str(base / "masq.conf"), str(base / "spool"), extra=extra)
    daemon = Daemon(conf, wait_port=ports["smtp"]).start()
    yield {"conf": conf, "ports": ports, "spool": str(base / "spool"), "certs": certs,
           "daemon": daemon}
    log = daemon.stop()
    assert "Traceback" not in log and "internal error" not in log, log


def swaks(server, cert=None, smtps=False, body="relayed by certificate"):
    args = ["swaks", "--server", "127.0.0.1:%d" % server["ports"]["smtps" if smtps else "smtp"],
            "--tlsc" if smtps else "--tls", "--from", "roamer@example.org", "--to", FAR,
            "--body", body]
    if cert:
        args += ["--tls-cert", server["certs"][cert][0], "--tls-key", server["certs"][cert][1]]
    return subprocess.run(args, capture_output=True, text=True, timeout=60).stdout


def queued_bodies(server):
    queue = Queue(server["spool"]).open("read")
    try:
        return [b"".join(queue.body(m.id)) for m in queue.live()
                if any(r.address == FAR for r in m.envelope.recipients)]
    finally:
        queue.close()


def relayed(server, body):
    return [text for text in queued_bodies(server) if body.encode() in text]


@pytest.mark.parametrize("smtps", [False, True], ids=["starttls", "smtps"])
def test_a_listed_certificate_may_relay_and_is_named_in_received(server, smtps):
    body = "listed over %s" % ("smtps" if smtps else "starttls")
    out = swaks(server, "listed", smtps, body)
    assert "250 2.0.0 Message queued" in out, out
    [text] = relayed(server, body)
    text = text.replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")    # unfolded
    digest = fingerprint(server["certs"]["listed"][0])[7:].replace(":", "").lower()
    assert b"(client certificate sha256:%s)" % digest.encode() in text
    assert b"with ESMTPS" in text


def test_a_self_signed_certificate_named_in_the_ca_file_may_relay(server):
    out = swaks(server, "selfsigned", body="self-signed")
    assert "250 2.0.0 Message queued" in out, out


@pytest.mark.parametrize("cert", [None, "unlisted"])
def test_no_or_an_unlisted_certificate_gets_tls_but_no_relay(server, cert):
    body = "not relayed with %s" % cert
    out = swaks(server, cert, body=body)
    assert "220 2.0.0" in out or "220 " in out.split("STARTTLS")[-1], out   # TLS went up
    assert "554 5.7.1" in out and "not relaying for you to this domain" in out, out
    assert relayed(server, body) == []


def test_local_mail_over_tls_without_a_certificate_still_works(server):
    done = subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % server["ports"]["smtp"],
         "-starttls", "smtp", "-quiet"],
        input="EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n"
              "RCPT TO:<postmaster@test.example>\r\nQUIT\r\n",
        capture_output=True, text=True, timeout=60)
    assert "250 2.1.5" in done.stdout, done.stdout + done.stderr


def test_openssl_s_client_with_the_listed_certificate_relays(server):
    cert, key = server["certs"]["listed"]
    done = subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % server["ports"]["smtps"],
         "-cert", cert, "-key", key, "-quiet"],
        input="EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<%s>\r\n"
              "QUIT\r\n" % FAR, capture_output=True, text=True, timeout=60)
    assert "250 2.1.5" in done.stdout, done.stdout + done.stderr


def test_relay_cert_is_checked_by_check_config(tmp_path):
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist relay_cert 'sha256:00'\n")
    done = masq("-C", conf, "check-config")
    assert done.returncode == 78 and b"relay_cert" in done.stderr
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist relay_cert 'sha256:%s'\n" % ("ab" * 32))
    done = masq("-C", conf, "check-config")
    assert done.returncode == 78 and b"tls_client_ca" in done.stderr
