"""The status page against a running daemon: GET / and /status.json, the POST actions,
CSRF and password enforcement, DNS-rebinding and cross-origin refusals, bad requests.

Peers: http.client for well-formed requests, raw sockets for broken ones, aiosmtpd as the
smarthost of the route the page flushes.
"""

import base64
import http.client
import json
import re
import signal
import socket
import threading
import time

import pytest

from helpers import OFFLINE, Daemon, free_port, masq, status, wait_for, write_config
from sinks import Sink

from masq.policy import passwords

PASSWORD = "s3cret pass"


def route(port, online=OFFLINE):
    return ("config route 'isp'\n\toption online '%s'\n\toption smarthost '127.0.0.1:%d'\n"
            "\toption tls 'none'\n\n" % (online, port))


def make_conf(tmp_path, listen, password=None, routes=""):
    extra = "\tlist listen 'smtp://127.0.0.1:%d'\n\toption status_listen '%s'\n" % (
        free_port(), listen)
    if password is not None:
        extra += "\toption status_password '%s'\n" % password
    return write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=extra,
                        routes=routes)


def submit(conf, *rcpts):
    done = masq("-C", conf, "-odq", *rcpts, input=b"Subject: web\n\nhello from the page\n")
    assert done.returncode == 0, done.stderr


class Client:
    """A browser-like client: keeps the cookie, reads the token from the page."""

    def __init__(self, port, auth=None, host=None):
        self.port, self.cookie, self.token = port, None, None
        self.headers = {"Host": host or "127.0.0.1:%d" % port}
        if auth is not None:
            self.headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            all_headers = dict(self.headers)
            if self.cookie:
                all_headers["Cookie"] = "masq=" + self.cookie
            all_headers.update(headers or {})
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
            cookie = response.getheader("Set-Cookie")
            if cookie:
                self.cookie = re.match(r"masq=([0-9a-f]+);", cookie).group(1)
            return response.status, response, data
        finally:
            conn.close()

    def load(self):
        code, response, data = self.request("GET", "/")
        assert code == 200, data
        self.token = re.search(rb'<meta name="csrf" content="([0-9a-f]+)">', data).group(1)
        return data

    def post(self, path, token=True, **form):
        if token:
            form["csrf"] = self.token.decode()
        body = "&".join("%s=%s" % item for item in form.items())
        code, _, data = self.request("POST", path, body,
                                     {"Content-Type": "application/x-www-form-urlencoded"})
        return code, json.loads(data)

    def status(self):
        code, _, data = self.request("GET", "/status.json")
        assert code == 200, data
        return json.loads(data)


def raw(port, data, timeout=30.0):
    """Send raw bytes; return everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            out += part
    return out


@pytest.fixture
def page(tmp_path):
    """A daemon with the page on loopback, an offline route to an aiosmtpd sink."""
    smtp, web = free_port(), free_port()
    conf = make_conf(tmp_path, "127.0.0.1:%d" % web, routes=route(smtp))
    with Sink(smtp) as sink:
        daemon = Daemon(conf, wait_port=web).start()
        try:
            yield type("Page", (), {"conf": conf, "port": web, "sink": sink, "daemon": daemon})
        finally:
            log = daemon.stop()
            assert "Traceback" not in log and "internal error" not in log, log


# reading

def test_page_is_self_contained_small_and_luci_styled(page):
    client = Client(page.port)
    code, response, data = client.request("GET", "/")
    assert code == 200 and response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert len(data) < 30 * 1024
    text = data.decode()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)    # nothing external
    assert "@import" not in text and "url(" not in text
    for needle in ('name="viewport"', "Helvetica Neue", "13px", "#1976d2",
                   '<div class="cbi-section"><h3>', '<table class="table', ".cbi-button-action",
                   ".cbi-button-negative", ".label.success", ".label.warning",
                   ".alert-message.warning", "fetch('/status.json'"):
        assert needle in text
    csp = response.getheader("Content-Security-Policy")
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
    assert response.getheader("X-Frame-Options") == "DENY"
    assert "HttpOnly" in response.getheader("Set-Cookie")
    assert "SameSite=Strict" in response.getheader("Set-Cookie")


def test_status_json_is_the_cli_document(page):
    submit(page.conf, "far@example.org")
    doc = Client(page.port).status()
    cli = status(page.conf)
    for d in (doc, cli):
        d.pop("uptime"), d.pop("log")
        for m in d["queue"]:
            m.pop("age")
    assert doc == cli
    assert doc["queue"][0]["recipients"][0]["address"] == "far@example.org"
    assert doc["routes"][0]["name"] == "isp" and doc["routes"][0]["online"] is False


def test_keep_alive_serves_several_requests_on_one_connection(page):
    conn = http.client.HTTPConnection("127.0.0.1", page.port, timeout=30)
    for _ in range(3):
        conn.request("GET", "/status.json")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["version"] == "1.0"
    conn.close()


def test_head_and_unknown_paths_and_methods(page):
    client = Client(page.port)
    code, response, data = client.request("HEAD", "/")
    assert code == 200 and data == b"" and int(response.getheader("Content-Length")) > 1000
    assert client.request("GET", "/nope")[0] == 404
    code, response, _ = client.request("GET", "/flush")
    assert code == 405 and response.getheader("Allow") == "POST"
    code, response, _ = client.request("DELETE", "/")
    assert code == 405 and response.getheader("Allow") == "GET"


# acting

def test_flush_sends_through_the_offline_route(page):
    submit(page.conf, "far@example.org")
    client = Client(page.port)
    client.load()
    code, reply = client.post("/flush", route="isp")
    assert code == 200 and reply["ok"], reply
    [(_, rcpts, text)] = page.sink.wait(1)
    assert rcpts == ["far@example.org"] and b"hello from the page" in text
    assert wait_for(lambda: client.status()["queue"] == [])


def test_flush_unknown_route_is_404(page):
    client = Client(page.port)
    client.load()
    code, reply = client.post("/flush", route="nope")
    assert code == 404 and not reply["ok"]


def test_delete_removes_the_message(page):
    submit(page.conf, "far@example.org")
    client = Client(page.port)
    client.load()
    [msg] = client.status()["queue"]
    code, reply = client.post("/delete", id=msg["id"])
    assert code == 200 and reply == {"ok": True, "removed": [msg["id"]], "errors": []}
    assert client.status()["queue"] == [] and status(page.conf)["queue"] == []
    code, reply = client.post("/delete", id=msg["id"])
    assert code == 404 and not reply["ok"]
    code, reply = client.post("/delete")
    assert code == 404


def test_retry_with_no_route_online_says_nothing_was_tried(page):
    submit(page.conf, "far@example.org")
    client = Client(page.port)
    client.load()
    [msg] = client.status()["queue"]
    code, reply = client.post("/retry", id=msg["id"])
    assert code == 200 and reply["ok"] and reply["started"] is False
    assert reply["attempted"] == 0
    assert page.sink.messages == []


def test_retry_tries_a_deferred_message_again_now(tmp_path):
    smtp, web = free_port(), free_port()
    conf = make_conf(tmp_path, "127.0.0.1:%d" % web, routes=route(smtp, "always"))
    with Sink(smtp):
        daemon = Daemon(conf, wait_port=web).start()
        try:
            submit(conf, "temp-x@example.org")
            client = Client(web)
            client.load()

            def deferred():
                queue = client.status()["queue"]
                return queue and queue[0]["recipients"][0]["attempts"] == 1 and queue[0]
            msg = wait_for(deferred)
            rcpt = msg["recipients"][0]
            assert rcpt["state"] == "deferred" and rcpt["next_attempt"] > time.time() + 30
            code, reply = client.post("/retry", id=msg["id"])
            assert code == 200 and reply["ok"]
            again = wait_for(lambda: client.status()["queue"][0]["recipients"][0]["attempts"]
                             == 2)
            assert again
        finally:
            daemon.stop()


# CSRF

def test_post_without_or_with_a_wrong_token_is_403(page):
    submit(page.conf, "far@example.org")
    client = Client(page.port)
    client.load()
    assert client.post("/flush", token=False, route="isp")[0] == 403
    good = client.token
    client.token = b"0" * 64
    assert client.post("/flush", route="isp")[0] == 403
    other = Client(page.port)                       # another browser's token
    other.load()
    client.token = other.token
    assert client.post("/flush", route="isp")[0] == 403
    client.token, client.cookie = good, None        # token without its cookie
    assert client.post("/flush", route="isp")[0] == 403
    time.sleep(0.3)
    assert page.sink.messages == []
    assert len(status(page.conf)["queue"]) == 1


def test_token_in_a_header_is_accepted(page):
    client = Client(page.port)
    client.load()
    code, _, data = client.request("POST", "/flush", b"route=isp",
                                   {"X-CSRF-Token": client.token.decode()})
    assert code == 200, data


def test_cross_origin_post_and_foreign_host_are_refused(page):
    client = Client(page.port)
    client.load()
    code, _, data = client.request("POST", "/flush", "route=isp&csrf=" + client.token.decode(),
                                   {"Origin": "http://evil.example"})
    assert code == 403 and b"cross-origin" in data
    rebound = Client(page.port, host="evil.example:%d" % page.port)
    assert rebound.request("GET", "/status.json")[0] == 403
    assert rebound.request("GET", "/")[0] == 403
    for host in ("localhost:%d" % page.port, "[::1]:%d" % page.port, "127.0.0.5"):
        assert Client(page.port, host=host).request("GET", "/status.json")[0] == 200


# bad requests

@pytest.mark.parametrize("data, code", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", 505),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"x" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Many: y\r\n" * 200 + b"\r\n", 431),
    (b"POST /flush HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 70000\r\n\r\n", 413),
    (b"POST /flush HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 411),
    (b"POST /flush HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     411),
    (b"POST /flush HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nid=%zz", 400),
    (b"POST /flush HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2"
     b"\r\n\r\nab", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
])
def test_bad_requests_get_4xx_and_the_daemon_lives_on(page, data, code):
    answer = raw(page.port, data)
    assert answer.startswith(b"HTTP/1.1 %d " % code), answer[:200]
    assert b"Traceback" not in answer
    assert Client(page.port).status()["version"] == "1.0"


def test_too_many_connections_get_503_and_half_requests_do_not_hurt(page):
    socks = []
    for i in range(40):                              # more than the connection limit
        sock = socket.create_connection(("127.0.0.1", page.port), 5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 1" if i % 2 else b"")
        socks.append(sock)
    answer = raw(page.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503 ")                # over the limit
    for sock in socks:
        sock.close()
    assert wait_for(lambda: _answers(page.port))


# passwords

def test_non_loopback_without_password_refuses_to_start(tmp_path):
    conf = make_conf(tmp_path, "0.0.0.0:%d" % free_port())
    done = masq("-C", conf, "daemon", timeout=60, text=True)
    assert done.returncode == 78
    assert "status_password" in done.stderr and "Traceback" not in done.stderr
    assert "status_listen 0.0.0.0:" in done.stderr.strip().splitlines()[-1]


def test_bad_status_listen_is_a_clear_config_error(tmp_path):
    conf = make_conf(tmp_path, "router.lan:80")
    done = masq("-C", conf, "daemon", timeout=60, text=True)
    assert done.returncode == 78 and "status_listen" in done.stderr, done.stderr


@pytest.fixture
def locked(tmp_path):
    web = free_port()
    conf = make_conf(tmp_path, "0.0.0.0:%d" % web, passwords.hash_password(PASSWORD))
    daemon = Daemon(conf, wait_port=web).start()
    try:
        yield type("Locked", (), {"conf": conf, "port": web, "daemon": daemon})
    finally:
        log = daemon.stop()
        assert "Traceback" not in log


def test_password_is_required_on_a_non_loopback_listener(locked):
    anonymous = Client(locked.port, host="router.lan")
    code, response, data = anonymous.request("GET", "/")
    assert code == 401 and response.getheader("WWW-Authenticate").startswith("Basic ")
    assert b"csrf" not in data
    assert anonymous.request("GET", "/status.json")[0] == 401
    assert anonymous.request("POST", "/flush", "route=isp")[0] == 401
    wrong = Client(locked.port, auth="admin:guess")             # slowed down: see
    assert wrong.request("GET", "/status.json")[0] == 401       # test_failure_delay.py
    right = Client(locked.port, auth="anyone:" + PASSWORD)
    right.load()
    assert right.status()["hostname"] == "test.example"
    assert right.post("/flush", token=False)[0] == 403        # CSRF still applies
    code, reply = right.post("/flush")
    assert code == 200 and reply["ok"]


def test_repeated_failures_are_refused_with_429(locked):
    results = []

    def attempt():
        results.append(Client(locked.port, auth="x:nope").request("GET", "/status.json")[0])
    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [401] * 10
    assert Client(locked.port, auth="x:nope").request("GET", "/")[0] == 429
    assert Client(locked.port, auth="x:" + PASSWORD).request("GET", "/")[0] == 429


def test_plain_text_password_works_with_a_warning(tmp_path):
    web = free_port()
    conf = make_conf(tmp_path, "127.0.0.1:%d" % web, "plain pw")
    daemon = Daemon(conf, wait_port=web).start()
    try:
        assert Client(web).request("GET", "/")[0] == 401      # a password: even on loopback
        assert Client(web, auth="u:plain pw").request("GET", "/status.json")[0] == 200
    finally:
        log = daemon.stop()
    assert "status_password is plain text" in log


def test_reload_moves_the_page_and_keeps_it_when_the_new_one_is_unsafe(tmp_path):
    web, moved = free_port(), free_port()
    conf = make_conf(tmp_path, "127.0.0.1:%d" % web)
    daemon = Daemon(conf, wait_port=web).start()
    try:
        text = open(conf).read()
        open(conf, "w").write(text.replace(":%d'" % web, ":%d'" % moved))
        daemon.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: _answers(moved))
        assert not _answers(web)
        open(conf, "w").write(text.replace("127.0.0.1:%d'" % web, "0.0.0.0:%d'" % web))
        daemon.proc.send_signal(signal.SIGHUP)       # refused whole: the old one stays
        said = _log_line(daemon, "configuration not reloaded")
        assert "status_password" in said
        assert _answers(moved) and not _answers(web)
    finally:
        daemon.stop()


def _log_line(daemon, words, timeout=15.0):
    """Wait until a line of the daemon's output holds words; return that line."""
    def line():
        return next((l for l in daemon.log_so_far().splitlines() if words in l), "")
    wait_for(lambda: line(), timeout)
    return line()


def _answers(port):
    try:
        return Client(port).request("GET", "/status.json")[0] == 200
    except OSError:
        return False
