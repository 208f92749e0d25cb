"""The delivery log (docs/LOG.md) as a real daemon writes it to `option log` FILE.

Real deliveries to an aiosmtpd sink (250, 450 and 550 per recipient), a pipe route and a
local maildir, the bounce that follows, expiry, an unreachable relay, `sendmail` and `-bs`
without a daemon, `masq rm`: every event is one line in Postfix's format, and the status
document shows the last deliveries. Also: SIGHUP reopens a rotated file, and the syslog
target reaches /dev/log (our own socket, in a mount namespace).
"""

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys

import pytest

from helpers import ROOT, Daemon, absent_users, free_port, masq, wait_for, write_config
from sinks import Sink

absent_users("mqlogu")

LINE = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ masq\[\d+\]: (?P<text>.*)$")


def texts(path):
    """Return the text of every log line (after the syslog-style prefix)."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        match = LINE.match(line)
        assert match, "not a syslog-format line: %r" % line
        out.append(match.group("text"))
    return out


def find(path, pattern):
    """Return the match objects of pattern among the log texts."""
    return [m for m in map(re.compile(pattern).search, texts(path)) if m]


def site(tmp_path, sink_port, smtp_port):
    script = tmp_path / "gateway.sh"
    script.write_text("#!/bin/sh\ncat >> %s\n" % (tmp_path / "piped"))
    script.chmod(0o755)
    extra = ("\tlist listen 'smtp://127.0.0.1:%d'\n"
             "\toption log '%s'\n"
             "\tlist local_users 'mqlogu'\n"
             "\toption mailbox 'maildir:%s/mail/%%u'\n"
             "\toption retry_interval '1h'\n" % (smtp_port, tmp_path / "maillog", tmp_path))
    routes = ("config route 'sms'\n\toption pipe '%s'\n\tlist allowed_recipient '*@sms.example'\n\n"
              "config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
              % (script, sink_port))
    return write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=extra,
                        routes=routes)


def test_every_delivery_event_is_one_postfix_style_line(tmp_path):
    sink_port, smtp_port = free_port(), free_port()
    conf = site(tmp_path, sink_port, smtp_port)
    log = str(tmp_path / "maillog")
    rcpts = ["ok@example.org", "temp-x@example.org", "perm-y@example.org", "z@sms.example"]
    with Sink(sink_port) as sink:
        daemon = Daemon(conf, wait_port=smtp_port).start()
        try:
            with smtplib.SMTP("127.0.0.1", smtp_port) as client:
                client.sendmail("writer@example.org", rcpts, b"Subject: log\r\n\r\nhello\r\n")
                assert wait_for(lambda: len(find(log, r"status=sent")) >= 3), texts(log)
                client.sendmail("writer@example.org", ["mqlogu@test.example"], b"Subject: l\r\n"
                                b"\r\nhello\r\n")
                assert wait_for(lambda: len(find(log, r"status=sent")) >= 4), texts(log)
            doc = json.loads(masq("status", "--json", "-C", conf).stdout)
            shown = masq("status", "-C", conf).stdout.decode()
        finally:
            daemon.stop()
        messages = sink.messages

    [received] = find(log, r"^(\S+): from=<writer@example\.org>, size=(\d+), nrcpt=4, "
                           r"client=unknown\[127\.0\.0\.1\]$")
    msgid = received.group(1)
    [local] = find(log, r"^(\S+): from=<writer@example\.org>, size=(\d+), nrcpt=1, "
                        r"client=unknown\[127\.0\.0\.1\]$")
    assert int(received.group(2)) > len("Subject: log\r\n\r\nhello\r\n")

    def one(rcpt, tail, msgid=msgid):
        found = find(log, r"^%s: to=<%s>, relay=(\S+), delay=(\d+\.\d\d), dsn=(\d\.\d+\.\d+), "
                          r"status=%s" % (msgid, re.escape(rcpt), tail))
        assert len(found) == 1, (rcpt, texts(log))
        return found[0]

    sent = one("ok@example.org", r"sent \(.*250 2\.0\.0 OK stored\) route=isp$")
    assert sent.group(1) == "[127.0.0.1]:%d" % sink_port and sent.group(3) == "2.0.0"
    deferred = one("temp-x@example.org",
                   r"deferred \(.*450 4\.2\.0 try again later\) route=isp, next=\S+$")
    assert deferred.group(3) == "4.2.0"
    bounced = one("perm-y@example.org", r"bounced \(.*550 5\.1\.1 no such user here\) route=isp$")
    assert bounced.group(3) == "5.1.1"
    assert one("mqlogu@test.example", r"sent \(.*\) route=local$",
               local.group(1)).group(1) == "local"
    assert find(log, r"^%s: removed$" % local.group(1))
    assert one("z@sms.example", r"sent \(.*\) route=sms$").group(1) == "pipe"

    [notice] = find(log, r"^%s: sender non-delivery notification: (\S+) "
                         r"to=<writer@example\.org>$" % msgid)
    dsn_id = notice.group(1)
    assert find(log, r"^%s: to=<writer@example\.org>, relay=\[127\.0\.0\.1\]:%d, .*status=sent"
                % (dsn_id, sink_port))
    assert find(log, r"^%s: removed$" % dsn_id)         # the bounce is done
    assert not find(log, r"^%s: removed" % msgid)       # temp-x still waits
    assert any(m[0] in ("", "<>") for m in messages)          # the bounce reached the sink

    events = [e for e in doc["deliveries"] if e["id"] in (msgid, local.group(1))]
    assert {(e["to"], e["status"]) for e in events} == {
        ("ok@example.org", "sent"), ("temp-x@example.org", "deferred"),
        ("perm-y@example.org", "bounced"), ("mqlogu@test.example", "sent"),
        ("z@sms.example", "sent")}
    assert "counters" in doc and "queue" in doc and "log" in doc     # old fields stay
    assert "last deliveries:" in shown and "<perm-y@example.org> bounced" in shown


def test_sendmail_without_a_daemon_logs_the_submission_and_its_delivery(tmp_path):
    sink_port, smtp_port = free_port(), free_port()
    conf = site(tmp_path, sink_port, smtp_port)
    log = str(tmp_path / "maillog")
    with Sink(sink_port) as sink:
        done = masq("-C", conf, "-f", "writer@example.org", "far@example.org",
                    input=b"Subject: now\n\nhi\n")
        assert done.returncode == 0, done.stderr
        assert sink.wait(1)
    [received] = find(log, r"^(\S+): from=<writer@example\.org>, size=\d+, nrcpt=1, "
                           r"uid=%d$" % os.getuid())
    assert find(log, r"^%s: to=<far@example\.org>, relay=\[127\.0\.0\.1\]:%d, delay=\S+, "
                     r"dsn=2\.0\.0, status=sent \(" % (received.group(1), sink_port))
    assert find(log, r"^%s: removed$" % received.group(1))


def test_removal_by_masq_rm_is_logged(tmp_path):
    conf = site(tmp_path, free_port(), free_port())
    log = str(tmp_path / "maillog")
    done = masq("-C", conf, "-odq", "far@example.org", input=b"Subject: x\n\nx\n")
    assert done.returncode == 0, done.stderr
    [received] = find(log, r"^(\S+): from=<\S+>, size=\d+, nrcpt=1, uid=\d+$")
    done = masq("rm", "-C", conf, received.group(1))
    assert done.returncode == 0, done.stderr
    assert find(log, r"^%s: removed \(by \S+\)$" % received.group(1))


def test_expiry_and_an_unreachable_relay_are_logged(tmp_path):
    sink_port, dead_port = free_port(), free_port()
    log = tmp_path / "maillog"
    routes = ("config route 'down'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
              "\tlist allowed_recipient '*@down.example'\n\toption last_route '1'\n\n"
              "config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
              % (dead_port, sink_port))
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\toption log '%s'\n\toption queue_lifetime '0s'\n" % log,
                        routes=routes)
    with Sink(sink_port):
        for rcpt in ("temp-forever@example.org", "x@down.example"):
            done = masq("-C", conf, "-odq", rcpt, input=b"Subject: x\n\nx\n")
            assert done.returncode == 0, done.stderr
        masq("flush", "-C", conf)
    assert find(str(log), r": to=<temp-forever@example\.org>, relay=\[127\.0\.0\.1\]:%d, "
                          r"delay=\S+, dsn=4\.2\.0, status=expired \(.*450 4\.2\.0 try again "
                          r"later\) route=isp$" % sink_port), texts(str(log))
    assert find(str(log), r": to=<x@down\.example>, relay=none, delay=\S+, dsn=4\.4\.1, "
                          r"status=expired \(connect to .*\) route=down$"), texts(str(log))


def test_sighup_reopens_a_rotated_log_file(tmp_path):
    smtp_port = free_port()
    conf = site(tmp_path, free_port(), smtp_port)
    log = tmp_path / "maillog"
    daemon = Daemon(conf, wait_port=smtp_port).start()
    try:
        assert wait_for(lambda: find(str(log), r"^listening on "))
        os.rename(log, tmp_path / "maillog.1")
        daemon.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: find(str(tmp_path / "maillog.1"), r"^configuration reloaded")
                        or find(str(log), r"^configuration reloaded"))
        with smtplib.SMTP("127.0.0.1", smtp_port) as client:
            client.sendmail("writer@example.org", ["mqlogu@test.example"], b"Subject: r\r\n\r\nr")
        assert wait_for(lambda: find(str(log), r": from=<writer@example\.org>, .*nrcpt=1, "))
        assert not find(str(tmp_path / "maillog.1"), r": from=<writer@example\.org>")
    finally:
        daemon.stop()


def test_syslog_target_sends_mail_facility_datagrams_to_dev_log(tmp_path):
    """`option log 'syslog'` (the default): sendmail's line reaches /dev/log as facility
    mail, level info, ident masq. /dev/log is our socket, inside a mount namespace of its
    own (a tmpfs over /dev holding the few devices Python needs), so the machine's logger
    is never touched."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a mount namespace")
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"))
    text = open(conf).read().replace("option log 'stderr'", "option log 'syslog'")
    open(conf, "w").write(text)
    sock_path = str(tmp_path / "log")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(sock_path)
    receiver.settimeout(10)
    script = (
        "set -e; old=%(tmp)s/olddev; mkdir -p $old; mount --bind /dev $old; "
        "mount -t tmpfs tmpfs /dev; "
        "for n in null zero random urandom; do touch /dev/$n; mount --bind $old/$n /dev/$n; done; "
        "touch /dev/log; mount --bind %(sock)s /dev/log; "
        "exec %(python)s -m masq -C %(conf)s -odq -f writer@example.org far@example.org"
        % {"tmp": tmp_path, "sock": sock_path, "python": sys.executable, "conf": conf})
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script], input=b"Subject: s\n\ns\n", capture_output=True,
                              env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
        datagram = receiver.recv(4096).decode()
    finally:
        receiver.close()
    assert re.match(r"^<22>\w{3} [ \d]\d \d\d:\d\d:\d\d masq\[\d+\]: \S+: "
                    r"from=<writer@example\.org>, size=\d+, nrcpt=1, uid=0$", datagram), datagram


def test_bs_from_a_local_process_logs_its_uid(tmp_path):
    conf = site(tmp_path, free_port(), free_port())
    log = str(tmp_path / "maillog")
    dialogue = (b"EHLO local\r\nMAIL FROM:<writer@example.org>\r\nRCPT TO:<far@example.org>\r\n"
                b"DATA\r\nSubject: bs\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n")
    done = masq("-C", conf, "-bs", input=dialogue)
    assert b"250 2.0.0 Message queued" in done.stdout, done.stdout + done.stderr
    assert find(log, r"^\S+: from=<writer@example\.org>, size=\d+, nrcpt=1, uid=%d$"
                % os.getuid()), texts(log)
