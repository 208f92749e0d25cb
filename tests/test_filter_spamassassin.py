"""SpamAssassin as a `pipe:` content filter: Debian's `spamd`, started by the test on its own
port with its own configuration folder (the rules Debian ships in /usr/share/spamassassin,
no network tests, no Bayes, no rule update), and `spamc -E -x` as the filter. GTUBE marks
spam (exit 1: quarantined, with SpamAssassin's X-Spam-Status as the reason); a clean message
passes with the X-Spam-* headers spamd added (spamc without -c prints the rewritten
message; -c would print only the score)."""

import glob
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from helpers import free_port, masq, status, wait_for
from test_filter_pipe import configure, running, send

RULES = "/usr/share/spamassassin"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SPAMC = shutil.which("spamc") or "/usr/bin/spamc"

pytestmark = pytest.mark.skipif(
    not (shutil.which("spamd") or os.path.exists("/usr/sbin/spamd")) or not shutil.which("spamc")
    or not os.path.isdir(RULES), reason="spamd/spamc not installed (tools/install-test-deps)")


@pytest.fixture
def spamd():
    """A spamd of the test's own on 127.0.0.1:PORT; yields the port."""
    site = tempfile.mkdtemp(dir="/var/tmp", prefix="masq-spamd-")
    os.chmod(site, 0o755)               # spamd, started by root, scans as nobody
    for pre in glob.glob("/etc/spamassassin/*.pre"):    # the plugins Debian loads
        shutil.copy(pre, site)
    with open(os.path.join(site, "local.cf"), "w") as out:
        out.write("use_bayes 0\nbayes_auto_learn 0\nskip_rbl_checks 1\n")
    for name in os.listdir(site):
        os.chmod(os.path.join(site, name), 0o644)
    port = free_port()
    spamd_bin = shutil.which("spamd") or "/usr/sbin/spamd"
    log = open(os.path.join(site, "spamd.log"), "wb")
    proc = subprocess.Popen(
        [spamd_bin, "--local", "--nouser-config", "--listen=127.0.0.1", "--port=%d" % port,
         "--allowed-ips=127.0.0.1", "--configpath=" + RULES, "--siteconfigpath=" + site,
         "--helper-home-dir=" + site, "--max-children=1", "--syslog=stderr"],
        stdout=log, stderr=log, start_new_session=True)
    try:
        up = wait_for(lambda: proc.poll() is None and subprocess.run(
            [SPAMC, "-K", "-d", "127.0.0.1", "-p", str(port)],
            capture_output=True).returncode == 0, 120)
        if not up:
            with open(os.path.join(site, "spamd.log"), "rb") as text:
                pytest.fail("spamd did not start: %s" % text.read()[-2000:])
        yield port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(site, ignore_errors=True)


def setup(tmp_path, spamd_port, extra=""):
    return configure(str(tmp_path), "\tlist filter 'pipe:%s -E -x -d 127.0.0.1 -p %d'\n"
                     % (SPAMC, spamd_port), extra)


MESSAGE = (b"From: Alice <alice@sender.example>\r\nTo: bob@remote.example\r\n"
           b"Subject: %s\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
           b"Message-ID: <%s@sender.example>\r\n\r\n%s\r\n")


def test_gtube_is_quarantined_and_a_clean_message_passes_with_spamassassins_headers(
        tmp_path, spamd):
    conf, smtp_port, sink_port = setup(tmp_path, spamd)
    with running(conf, smtp_port, sink_port) as run:
        send(smtp_port, body=MESSAGE % (b"spam", b"one", GTUBE))
        assert wait_for(lambda: any(m["quarantined"] for m in status(conf)["queue"]), 60)
        send(smtp_port, body=MESSAGE % (b"lunch", b"two", b"Shall we meet for lunch on Friday?"))
        [(_, rcpts, text)] = run.sink.wait(1, timeout=60)
        [held] = status(conf)["queue"]
    log = run.log
    assert rcpts == ["bob@remote.example"] and b"Subject: lunch" in text
    assert b"X-Spam-Status: No" in text and b"X-Spam-Checker-Version: SpamAssassin" in text
    assert b"\n" not in text.replace(b"\r\n", b"")
    reason = held["quarantined"]["reason"]
    assert reason.startswith("Yes, score=") and "GTUBE" in reason, reason
    assert held["quarantined"]["filter"].startswith("pipe:" + SPAMC)
    assert "quarantined by filter" in log
    assert "QUARANTINED (filter pipe:" in masq("queue", "-C", conf).stdout.decode()


def test_spam_let_through_tagged_goes_to_the_junk_folder(tmp_path, spamd):
    mail = tmp_path / "mail"
    conf, smtp_port, _ = setup(
        tmp_path, spamd, "\tlist filter_exit '1=pass'\n\toption spam_folder '.Junk'\n"
                         "\tlist local_users 'mqjunk'\n"
                         "\toption mailbox 'maildir:%s/%%u'\n" % mail)
    with running(conf, smtp_port) as run:
        send(smtp_port, rcpt="mqjunk@test.example", body=MESSAGE % (b"spam", b"one", GTUBE))
        send(smtp_port, rcpt="mqjunk@test.example",
             body=MESSAGE % (b"lunch", b"two", b"Shall we meet for lunch on Friday?"))
        inbox, junk = mail / "mqjunk" / "new", mail / "mqjunk" / ".Junk" / "new"
        assert wait_for(lambda: inbox.is_dir() and junk.is_dir() and
                        len(os.listdir(inbox)) + len(os.listdir(junk)) == 2, 60), \
            run.daemon.log_so_far()
    [spam] = [(junk / name).read_bytes() for name in os.listdir(junk)]
    [ham] = [(inbox / name).read_bytes() for name in os.listdir(inbox)]
    assert b"X-Spam-Flag: YES" in spam and b"Subject: spam" in spam
    assert b"X-Spam-Flag" not in ham and b"X-Spam-Status: No" in ham
