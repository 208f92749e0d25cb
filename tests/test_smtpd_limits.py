"""SMTP server limits with real clients: read timeout, connections per client, AUTH rate
limit, dropping root after binding, IPv6 listeners."""

import base64
import os
import pathlib
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading

import pytest

from helpers import ROOT, Daemon, free_port, masq, reply, wait_for, wait_port, write_config
from local_user import open_dir
from masq.policy.passwords import hash_password


def start(tmp_path, extra, routes=""):
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n" % port + extra,
                        routes=routes)
    return port, Daemon(conf, wait_port=port).start()


def test_idle_client_gets_421_after_the_timeout(tmp_path):
    port, daemon = start(tmp_path, "\toption smtp_timeout '2s'\n")
    try:
        sock = socket.create_connection(("127.0.0.1", port), 30)
        assert sock.recv(1000).startswith(b"220 ")
        sock.sendall(b"EHLO slow\r\n")
        reply(sock, b"250 ")
        sock.sendall(b"MAIL FROM:<a@b.example>")     # a command that never ends
        sock.settimeout(60)                         # a bound on a failing wait
        data = sock.recv(1000)
        assert data.startswith(b"421 4.4.2")
        assert sock.recv(1000) == b""
    finally:
        daemon.stop()


def greeted(port, count):
    """Return count connections that all got a 220 greeting, or None (all closed)."""
    socks = [socket.create_connection(("127.0.0.1", port), 5) for _ in range(count)]
    if all(s.recv(100).startswith(b"220 ") for s in socks):
        return socks
    for sock in socks:
        sock.close()
    return None


def test_too_many_connections_from_one_client(tmp_path):
    port, daemon = start(tmp_path, "\toption max_connections_per_ip '2'\n")
    try:
        first = wait_for(lambda: greeted(port, 2))     # once the readiness probe's is gone
        assert first
        extra = socket.create_connection(("127.0.0.1", port), 5)
        assert extra.recv(200).startswith(b"421 4.7.0")
        for sock in first:
            sock.close()
        again = wait_for(lambda: greeted(port, 1))     # once the daemon saw them close
        assert again
        again[0].close()
    finally:
        daemon.stop()


def test_auth_failures_are_rate_limited_per_client(tmp_path):
    users = "config user 'carol'\n\toption password '%s'\n" % hash_password("right")
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=(
        "\tlist listen 'smtp://127.0.0.1:%d?auth=plain'\n" % port), routes=users)
    daemon = Daemon(conf, wait_port=port).start()
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as smtp:   # the readiness probe's
        smtp.noop()                 # slot is free once a whole session has been served
    codes = []

    def attempt():
        with smtplib.SMTP("127.0.0.1", port, timeout=15) as smtp:
            smtp.ehlo("x")
            blob = base64.b64encode(b"\0carol\0wrong").decode()
            codes.append(smtp.docmd("AUTH PLAIN " + blob)[0])
    try:
        threads = [threading.Thread(target=attempt) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert codes == [535] * 10
        with smtplib.SMTP("127.0.0.1", port, timeout=15) as smtp:
            smtp.ehlo("x")
            blob = base64.b64encode(b"\0carol\0right").decode()
            assert smtp.docmd("AUTH PLAIN " + blob)[0] == 450     # even the right one, now
    finally:
        daemon.stop()


def test_root_daemon_drops_to_the_configured_user(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root")
    base = open_dir()                   # the spool must be reachable for user nobody
    port, daemon = start(pathlib.Path(base),
                         "\toption user 'nobody'\n\tlist local_users 'bob'\n")
    try:
        status = open("/proc/%d/status" % daemon.proc.pid).read()
        uid_line = [line for line in status.splitlines() if line.startswith("Uid:")][0]
        assert uid_line.split()[1:] == ["65534"] * 4
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail("a@example.org", ["bob@test.example"], b"\r\nafter the drop\r\n")
    finally:
        daemon.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_ipv6_listener(tmp_path):
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=(
        "\tlist listen 'smtp://[::1]:%d'\n\tlist local_users 'bob'\n" % port))
    daemon = Daemon(conf).start()
    try:
        wait_port(port, "::1")
        smtp = smtplib.SMTP("::1", port, timeout=30)
        refused = smtp.sendmail("a@example.org", ["bob@test.example"], b"\r\nover IPv6\r\n")
        smtp.quit()
        assert refused == {}
    finally:
        daemon.stop()


def test_bd_detaches_and_accepts_mail_from_swaks(tmp_path):
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=(
        "\tlist listen 'smtp://127.0.0.1:%d'\n\tlist local_users 'bob'\n"
        "\toption do_queue '1'\n" % port))
    with open(tmp_path / "daemon.log", "wb") as log:  # the daemon keeps stderr (log 'stderr')
        done = subprocess.run([sys.executable, "-m", "masq", "-C", conf, "-bd"], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT), stdout=log, stderr=log,
                              stdin=subprocess.DEVNULL, timeout=30)
    assert done.returncode == 0, (tmp_path / "daemon.log").read_text()  # returns once ready
    pid = int(open(tmp_path / "masq.pid").read())
    try:
        swaks = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port,
                                "--to", "bob@test.example", "--from", "a@example.org"],
                               capture_output=True, timeout=30)
        assert b"250 2.0.0 Message queued" in swaks.stdout
        assert b"<bob@test.example>" in masq("-C", conf, "-bp").stdout
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists("/proc/%d" % pid))
    assert not os.path.exists(tmp_path / "masq.pid")     # removed on a clean stop
