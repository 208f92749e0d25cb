"""masq on python3-light: submission, SMTP with STARTTLS, and delivery with the modules
OpenWrt packages separately (email, logging, asyncio, urllib, xml, the CJK codecs and
unicodedata, ...) blocked as each release's feed lists them (tests/light.py); and the path
without python3-openssl (no ssl, no _hashlib)."""

import os
import smtplib
import ssl
import subprocess
import sys

from helpers import ROOT, free_port, wait_port, write_config
from sinks import Sink

LIGHT = os.path.join(ROOT, "tests", "light.py")


def light(*args, input=b"", release=None, openssl=True):
    args = ((("--release", release) if release else ()) +
            (() if openssl else ("--no-openssl",)) + args)
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, LIGHT] + list(args), input=input,
                          capture_output=True, env=env, cwd=ROOT, timeout=60)


def under_light(code, release="24.10", openssl=True):
    """Run Python code with that release's python3-light blocker installed."""
    prelude = ("import sys; sys.path[:0] = [%r, %r]; import light; "
               "light.install(light.blocked(%r, %r))\n"
               % (os.path.join(ROOT, "tests"), ROOT, release, openssl))
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_the_blocker_blocks():
    done = under_light("import email")
    assert done.returncode != 0 and "python3-light" in done.stderr


def test_the_lists_follow_the_feed():
    """Issue 18 point 13: what python3-light has and has not, per release."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import light
    for release in ("24.10", "25.12", "master"):
        names = light.blocked(release)
        for present in ("http", "concurrent", "bz2", "json", "ssl", "hashlib", "zlib",
                        "smtplib", "imaplib", "subprocess"):
            assert present not in names, (release, present)
        for absent in ("_codecs_cn", "_codecs_jp", "xmlrpc", "pyexpat", "pydoc", "doctest",
                       "ensurepip", "venv", "email", "urllib", "logging", "asyncio",
                       "unicodedata", "tkinter", "sqlite3", "xml"):
            assert absent in names, (release, absent)
        assert "_hashlib" in light.blocked(release, openssl=False)
        assert "_ssl" in light.blocked(release, openssl=False)
    assert "cgi" in light.blocked("24.10") and "distutils" in light.blocked("24.10")
    # master moved email into python3-urllib; 25.12 still has python3-email
    assert light.PACKAGES["master"]["python3-urllib"] == ("email", "urllib")
    assert "python3-email" in light.PACKAGES["25.12"]


def test_what_a_blocked_module_takes_with_it():
    done = under_light("import http.cookies, concurrent, bz2\n"
                       "for name in ('gb2312', 'shift_jis', 'idna'):\n"
                       "    try:\n"
                       "        'x'.encode(name)\n"
                       "    except (LookupError, ImportError):\n"
                       "        print('no', name)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["no gb2312", "no shift_jis", "no idna"]


def test_passwords_without_hashlib_from_openssl():
    """python3-light without python3-openssl has no _hashlib; on Python 3.12+ hashlib then
    has no pbkdf2_hmac at all (simulated here by deleting it). AUTH and the status page
    password must still verify, with the same bytes."""
    from masq.policy import passwords
    stored = passwords.hash_password("s3cret", iterations=2000)
    code = ("import hashlib\n"
            "if hasattr(hashlib, 'pbkdf2_hmac'): del hashlib.pbkdf2_hmac\n"
            "from masq.policy import passwords\n"
            "print(passwords.verify(%r, 's3cret'), passwords.verify(%r, 'wrong'))\n"
            "print(passwords.hash_password('abc', iterations=1500, salt=b'0123456789ab'))\n"
            % (stored, stored))
    done = under_light(code, openssl=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "True False"
    assert lines[1] == passwords.hash_password("abc", iterations=1500, salt=b"0123456789ab")


def test_submission_and_delivery_without_python3_openssl(tmp_path):
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), routes=(
        "config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n" % port))
    done = light("-C", conf, "-odq", "-t", input=b"To: a@example.org\nSubject: x\n\nhi\n",
                 openssl=False, release="master")
    assert done.returncode == 0, done.stderr
    with Sink(port) as sink:
        done = light("flush", "-C", conf, openssl=False, release="master")
        assert done.returncode == 0, done.stderr
        assert len(sink.wait(1)) == 1


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
    proc = subprocess.Popen([sys.executable, LIGHT, "--release", "master", "-C", conf,
                             "daemon"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        smtp.starttls(context=context)
        smtp.sendmail("a@example.org", ["bob@test.example"], b"Subject: light\r\n\r\nok\r\n")
        smtp.quit()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    assert b"Traceback" not in out and b"internal error" not in out, out
