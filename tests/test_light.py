"""masq on python3-light: submission, SMTP with STARTTLS, and delivery with the separately
packaged modules (email, logging, asyncio, http, urllib, ...) and unicodedata blocked."""

import os
import smtplib
import ssl
import subprocess
import sys
import time

from helpers import ROOT, free_port, write_config
from sinks import Sink

LIGHT = os.path.join(ROOT, "tests", "light.py")


def light(*args, input=b""):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, LIGHT] + list(args), input=input,
                          capture_output=True, env=env, cwd=ROOT, timeout=60)


def test_the_blocker_blocks():
    done = subprocess.run([sys.executable, "-c", "exec(open(%r).read().split('sys.argv')[0]);"
                           "import email" % LIGHT], capture_output=True)
    assert done.returncode != 0 and b"python3-light" in done.stderr


def test_submission_mailq_and_flush_on_python3_light(tmp_path):
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), routes=(
        "config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n" % port))
    done = light("-C", conf, "-odq", "-t", input=b"To: a@example.org\nSubject: x\n\nhi\n")
    assert done.returncode == 0, done.stderr
    assert b"<a@example.org>" in light("-C", conf, "-bp").stdout
    with Sink(port) as sink:
        done = light("flush", "-C", conf)
        assert done.returncode == 0, done.stderr
        assert len(sink.wait(1)) == 1


def test_daemon_with_starttls_on_python3_light(tmp_path):
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=localhost", "-days", "1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=(
        "\tlist listen 'smtp://127.0.0.1:%d'\n\toption tls_cert '%s'\n\toption tls_key '%s'\n"
        "\tlist local_users 'bob'\n" % (port, cert, key)))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, LIGHT, "-C", conf, "daemon"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                smtp = smtplib.SMTP("127.0.0.1", port, timeout=5)
                break
            except OSError:
                time.sleep(0.05)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        smtp.starttls(context=context)
        smtp.sendmail("a@example.org", ["bob@test.example"], b"Subject: light\r\n\r\nok\r\n")
        smtp.quit()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert b"Traceback" not in out and b"internal error" not in out, out
