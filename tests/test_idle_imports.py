"""An idle daemon holds only what idling needs (issue 10, "Idle footprint"): the SMTP session
and engine, the status page's requests (HTTP engine, page, hashlib), ipaddress, re and json
are imported by the first client or request, not at start-up.

Run as the installed launcher runs it (`python3 -I -S`) with `-X importtime`, which lists
every module as it is imported; nothing connects to the idle daemon (a probe would be its
first client). Then a client of each kind is served by the same kind of daemon. How much
memory that saves is measured by tools/bench_idle.py.
"""

import os
import signal
import smtplib
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import ROOT, free_port, write_config

ON_DEMAND = ("masq.inbound.session", "masq.proto.smtp_server", "masq.policy.relay",
             "masq.status.serve", "masq.proto.http", "masq.status.page",
             "masq.policy.passwords", "hashlib", "hmac", "ipaddress", "re", "json")
# Issue 15: the checks in the dialogue are loaded only when configured, not by a client.
DIALOGUE_CHECKS = ("masq.inbound.checks", "masq.policy.dnsbl", "masq.policy.sender_helo",
                   "masq.config.dnsbl_site", "masq.dns.resolver")
# Issue 15: archiving and greylisting, likewise.
FILTER_STAGE = ("masq.policy.archive", "masq.policy.greylist", "masq.policy.greylist_state",
                "masq.inbound.greylisting")
# The content filter stage (issue 15): nothing of it in a daemon without `filter`.
NOT_CONFIGURED = ("masq.outbound.filters", "masq.outbound.filter_pipe",
                  "masq.outbound.filter_smtp", "masq.outbound.filter_verdict",
                  "masq.outbound.release")
LAUNCHER = ("import sys; sys.path.insert(0, %r); from masq.cli import main; "
            "sys.exit(main(['masq'] + sys.argv[1:]))" % ROOT)


def start(conf, log, flags=()):
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-I", "-S"] + list(flags) +
                                ["-c", LAUNCHER, "-C", conf, "daemon"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:      # a bound on a hung start, not a timing
        with open(log, "rb") as text:
            if text.read().count(b"listening on") and proc.poll() is None:
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    with open(log, "rb") as text:
        pytest.fail("daemon did not start: %s" % text.read().decode(errors="replace"))


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


@pytest.fixture
def conf(tmp_path):
    smtp, web = free_port(), free_port()
    path = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n"
                              "\toption status_listen '127.0.0.1:%d'\n" % (smtp, web))
    return path, smtp, web


def test_an_idle_daemon_has_not_imported_what_clients_need(conf, tmp_path):
    path, _, _ = conf
    log = str(tmp_path / "daemon.log")
    proc = start(path, log, ("-X", "importtime"))
    with open(log, "rb") as text:                # everything it imported to get here
        before = text.read()
    stop(proc)
    imported = {line.split(b"|")[2].strip().decode() for line in before.splitlines()
                if line.startswith(b"import time:") and b"imported package" not in line}
    assert "masq.inbound.listener" in imported and "masq.status.web" in imported
    assert sorted(m for m in ON_DEMAND if m in imported) == []
    assert sorted(m for m in NOT_CONFIGURED if m in imported) == []


def test_the_first_clients_are_served(conf, tmp_path):
    path, smtp, web = conf
    proc = start(path, str(tmp_path / "daemon.log"))
    try:
        with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as client:
            refused = client.sendmail("a@test.example", ["b@elsewhere.example"],
                                      b"Subject: x\r\n\r\nhi\r\n")
        assert refused == {}
        with urllib.request.urlopen("http://127.0.0.1:%d/status.json" % web,
                                    timeout=30) as answer:
            body = answer.read()
        assert b'"accepted":1' in body.replace(b" ", b"")
        with urllib.request.urlopen("http://127.0.0.1:%d/" % web, timeout=30) as answer:
            assert answer.status == 200 and b"<html" in answer.read().lower()
    finally:
        stop(proc)
    assert os.path.exists(str(tmp_path / "spool"))


def imported_by(log):
    """Return the modules a `-X importtime` log lists."""
    with open(log, "rb") as text:
        return {line.split(b"|")[2].strip().decode() for line in text.read().splitlines()
                if line.startswith(b"import time:") and b"imported package" not in line}


def test_an_unconfigured_daemon_serving_a_client_loads_no_dialogue_checks(conf, tmp_path):
    path, smtp, _ = conf
    log = str(tmp_path / "daemon.log")
    proc = start(path, log, ("-X", "importtime"))
    try:
        with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as client:
            assert client.sendmail("a@test.example", ["b@elsewhere.example"],
                                   b"Subject: x\r\n\r\nhi\r\n") == {}
    finally:
        stop(proc)
    imported = imported_by(log)
    assert "masq.inbound.session" in imported          # the client was served
    assert sorted(m for m in DIALOGUE_CHECKS + FILTER_STAGE if m in imported) == []


def test_a_configured_daemon_loads_the_checks_at_its_first_client_only(tmp_path):
    smtp = free_port()
    path = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n"
                              "\tlist dnsbl 'bl.test'\n\toption check_helo '1'\n" % smtp)
    log = str(tmp_path / "daemon.log")
    proc = start(path, log, ("-X", "importtime"))
    idle = imported_by(log)
    stop(proc)
    assert "masq.inbound.checks" not in idle and "masq.dns.resolver" not in idle
    assert "masq.policy.dnsbl" not in idle


@pytest.mark.parametrize("text", [
    "127.0.0.1", "127.1.2.3", "127.255.255.255", "127.0.0.1.nip.io", "127.000.0.1",
    "0127.0.0.1", "127.0.0.256", "127.0.0", "128.0.0.1", "::1", "0:0:0:0:0:0:0:1",
    "::ffff:127.0.0.1", "::", "[::1]", "localhost", "", "127.0.0.1 ", "١٢٧.0.0.1"])
def test_is_loopback_answers_as_ipaddress_does(text):
    import ipaddress
    from masq.base.ip import is_loopback
    try:
        expected = ipaddress.ip_address(text).is_loopback
    except ValueError:
        expected = False
    assert is_loopback(text) is expected
