"""`make run`: the embedded default starts without root on loopback ports and works."""

import getpass
import os
import signal
import smtplib
import subprocess
import sys
import time
import urllib.request

from helpers import ROOT, free_port, masq


def test_make_run_starts_and_delivers_locally(tmp_path):
    run_dir = tmp_path / "run"
    smtp_port, status_port = free_port(), free_port()
    env = dict(os.environ, MASQ_RUN_DIR=str(run_dir), MASQ_SMTP_PORT=str(smtp_port),
               MASQ_STATUS_PORT=str(status_port), PYTHONPATH=ROOT)
    proc = subprocess.Popen(["make", "-s", "run", "PYTHON=%s" % sys.executable], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        smtp = None
        for _ in range(200):
            try:
                smtp = smtplib.SMTP("127.0.0.1", smtp_port, timeout=5)
                break
            except OSError:
                time.sleep(0.05)
        assert smtp is not None, "make run did not listen on %d" % smtp_port
        user = getpass.getuser()
        smtp.sendmail("someone@example.org", ["%s@localhost" % user],
                      b"Subject: make run\r\n\r\nhello\r\n")
        smtp.quit()
        conf = str(run_dir / "masq.conf")
        status = masq("status", "-C", conf)
        assert status.returncode == 0 and b"up " in status.stdout
        page = urllib.request.urlopen("http://127.0.0.1:%d/" % status_port, timeout=10)
        assert page.status == 200 and b"masq" in page.read()
        maildir = run_dir / "mail" / user / "new"
        for _ in range(100):
            if maildir.exists() and os.listdir(maildir):
                break
            time.sleep(0.05)
        [name] = os.listdir(maildir)
        assert b"hello" in (maildir / name).read_bytes()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=20)[0]
    assert b"send a message" in out
    assert b"Traceback" not in out, out
