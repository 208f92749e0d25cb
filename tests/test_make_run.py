"""`make run`: the embedded default starts without root on loopback ports and works; the
commands it prints work from any folder; mail for other domains never leaves the machine;
a second run with other ports rebuilds the configuration it wrote, or says it kept an
edited one."""

import getpass
import os
import re
import signal
import smtplib
import subprocess
import sys
import urllib.request

from helpers import ROOT, free_port, masq, wait_for, wait_port


def start_make_run(run_dir, smtp_port, status_port):
    env = dict(os.environ, MASQ_RUN_DIR=str(run_dir), MASQ_SMTP_PORT=str(smtp_port),
               MASQ_STATUS_PORT=str(status_port), PYTHONPATH=ROOT)
    return subprocess.Popen(["make", "-s", "run", "PYTHON=%s" % sys.executable], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def connect(port):
    wait_port(port)
    return smtplib.SMTP("127.0.0.1", port, timeout=30)


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=60)[0].decode()
    assert "Traceback" not in out, out
    return out


def printed(out, label):
    """Return the command printed after `label:` (up to the first pipe or comment)."""
    line = next(l for l in out.splitlines() if l.strip().startswith(label + ":"))
    return line.split(":", 1)[1].strip()


def bare_env():
    """An environment without PYTHONPATH: what a user's shell elsewhere has."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("MASQ_CONFIG", None)
    return env


def test_make_run_starts_and_delivers_locally(tmp_path):
    run_dir = tmp_path / "run"
    smtp_port, status_port = free_port(), free_port()
    proc = start_make_run(run_dir, smtp_port, status_port)
    try:
        smtp = connect(smtp_port)
        user = getpass.getuser()
        smtp.sendmail("someone@example.org", ["%s@localhost" % user],
                      b"Subject: make run\r\n\r\nhello\r\n")
        smtp.quit()
        conf = str(run_dir / "masq.conf")
        status = masq("status", "-C", conf)
        assert status.returncode == 0 and b"up " in status.stdout
        page = urllib.request.urlopen("http://127.0.0.1:%d/" % status_port, timeout=30)
        assert page.status == 200 and b"masq" in page.read()
        maildir = run_dir / "mail" / user / "new"
        assert wait_for(lambda: maildir.exists() and os.listdir(maildir))
        [name] = os.listdir(maildir)
        assert b"hello" in (maildir / name).read_bytes()
    finally:
        out = stop(proc)
    assert "send a message" in out
    assert "127.0.0.1:%d" % smtp_port in out and "127.0.0.1:%d/" % status_port in out


def test_printed_commands_work_anywhere_and_mail_stays_here(tmp_path):
    run_dir = tmp_path / "run"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = start_make_run(run_dir, free_port(), free_port())
    try:
        connect(int(re.search(r"--server 127.0.0.1:(\d+)", proc_output_head(proc)).group(1)))
        send = printed(proc.head, "send a message").split("| ", 1)[1].split()
        send[-1] = "friend@far-away.example"
        done = subprocess.run(send, input=b"Subject: out\n\nto the world\n", cwd=elsewhere,
                              env=bare_env(), capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        queue = printed(proc.head, "see the queue").split()
        done = subprocess.run(queue, cwd=elsewhere, env=bare_env(), capture_output=True,
                              timeout=60)
        assert b"friend@far-away.example" in done.stdout, done
        conf = (run_dir / "masq.conf").read_text()
        assert "smarthost" not in conf.replace("# ", "")      # no MX, no smarthost
        online = re.search(r"queued until `([^`]+)`", proc.head).group(1).split()
        done = subprocess.run(online, cwd=elsewhere, env=bare_env(), capture_output=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        outside = run_dir / "outside"
        def written():              # mktemp makes the file before cat fills it
            return [name for name in os.listdir(outside)
                    if b"to the world" in (outside / name).read_bytes()]

        assert wait_for(written, 60), masq_log(proc)
        assert len(os.listdir(outside)) == 1
    finally:
        stop(proc)


def masq_log(proc):
    """Return what make run's daemon printed so far (for a failure message)."""
    os.set_blocking(proc.stdout.fileno(), False)
    return (proc.stdout.read() or b"").decode("utf-8", "replace")


def proc_output_head(proc):
    """Read make run's instructions (up to the blank line after them); keep them."""
    lines = []
    while True:
        line = proc.stdout.readline().decode()
        lines.append(line)
        if not line or ("mailboxes:" in "".join(lines) and line == "\n"):
            break
    proc.head = "".join(lines)
    return proc.head


def test_a_second_run_with_other_ports(tmp_path):
    run_dir = tmp_path / "run"
    first = free_port(), free_port()
    proc = start_make_run(run_dir, *first)
    connect(first[0]).quit()
    stop(proc)
    second = free_port(), free_port()
    proc = start_make_run(run_dir, *second)
    try:
        head = proc_output_head(proc)
        connect(second[0]).quit()                 # rebuilt: the new ports
    finally:
        stop(proc)
    assert "rebuilt" in head and "127.0.0.1:%d" % second[0] in head
    conf = run_dir / "masq.conf"
    conf.write_text(conf.read_text() + "# mine now\n")
    third = free_port(), free_port()
    proc = start_make_run(run_dir, *third)
    try:
        head = proc_output_head(proc)
        connect(second[0]).quit()                 # kept: still the edited file's ports
    finally:
        stop(proc)
    assert "kept %s" % conf in head and "edited" in head
    assert "--server 127.0.0.1:%d " % second[0] in head
    assert "127.0.0.1:%d/" % second[1] in head
    assert conf.read_text().endswith("# mine now\n")
