"""The status page in a real browser: headless Chromium driven over the DevTools protocol.

A daemon with one offline route (a `file:` detector whose file never exists) whose smarthost is an aiosmtpd sink
and one queued message. The page must show the message, survive its own CSP (no console
errors), and when "send now" is clicked for the route, the message reaches the sink and
the queue table empties without the page reloading. Screenshots (desktop and phone width)
go to the test's tmp dir; the desktop one is also copied to /tmp/masq-status.png.

Needs the Debian package `chromium` (/usr/bin/chromium); skipped without it. The
websocket client below is the minimum CDP needs (RFC 6455: handshake, masked client
frames, fragmented server frames, ping/close), stdlib only.
"""

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest

from helpers import OFFLINE, Daemon, free_port, masq, wait_for, write_config
from sinks import Sink

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = "/tmp/masq-status.png"
pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                reason="needs headless Chromium: apt-get install chromium")
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocket:
    """A blocking RFC 6455 client: text messages in and out."""

    def __init__(self, host, port, path, timeout=30.0):
        self.sock = socket.create_connection((host, port), timeout)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                          b"Sec-WebSocket-Version: 13\r\n\r\n"
                          % (path.encode(), host.encode(), port, key))
        head = b""
        while b"\r\n\r\n" not in head:
            part = self.sock.recv(1)
            if not part:
                raise ConnectionError("websocket handshake: connection closed")
            head += part
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise ConnectionError("websocket handshake refused: %r" % head)

    def send(self, text):
        data = text.encode("utf-8")
        header = bytearray([0x81])
        if len(data) < 126:
            header.append(0x80 | len(data))
        elif len(data) < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(data))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(data))
        mask = os.urandom(4)
        self.sock.sendall(bytes(header) + mask + bytes(b ^ mask[i % 4] for i, b in
                                                       enumerate(data)))

    def _exact(self, count):
        out = bytearray()
        while len(out) < count:
            part = self.sock.recv(count - len(out))
            if not part:
                raise ConnectionError("websocket closed")
            out += part
        return bytes(out)

    def _frame(self):
        first, second = self._exact(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._exact(8))[0]
        mask = self._exact(4) if second & 0x80 else None
        payload = self._exact(length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return first & 0x80, first & 0x0F, payload

    def receive(self):
        """Return the next text message (pings answered, fragments joined)."""
        parts = []
        while True:
            fin, opcode, payload = self._frame()
            if opcode == 0x9:                          # ping
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode in (0x1, 0x0):
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode("utf-8")

    def close(self):
        self.sock.close()


class DevTools:
    """Calls and events of one page target."""

    def __init__(self, ws):
        self.ws, self.next_id, self.events = ws, 0, []

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError("%s: %s" % (method, message["error"]))
                return message["result"]
            self.events.append(message)

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError("%s: %s" % (expression, result["exceptionDetails"]))
        return result["result"].get("value")

    def wait(self, expression, timeout=60.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        return self.evaluate(expression)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as out:
            out.write(base64.b64decode(data))
        return path

    def errors(self):
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
            elif event.get("method") == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text"))
            elif event.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(str(params["args"]))
        return found


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium; yields a DevTools connection to a blank page."""
    profile = tempfile.mkdtemp(prefix="masq-chromium-", dir=str(tmp_path))
    log = open(str(tmp_path / "chromium.log"), "wb")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--remote-debugging-port=0", "--no-sandbox", "--disable-gpu",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--user-data-dir=" + profile, "--window-size=1000,760", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ws = None
    try:
        port = _devtools_port(profile, proc)
        ws = WebSocket("127.0.0.1", port, _page_path(port))
        tools = DevTools(ws)
        for domain in ("Page", "Runtime", "Log"):
            tools.call(domain + ".enable")
        yield tools
    finally:
        if ws is not None:
            ws.close()
        _stop(proc)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_port(profile, proc, timeout=120.0):
    path = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("chromium exited with status %s" % proc.returncode)
        try:
            with open(path) as f:
                first = f.readline().strip()
            if first.isdigit():
                return int(first)
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("chromium did not open its DevTools port")


def _page_path(port):
    import http.client
    deadline = time.time() + 60                 # a bound on a failing wait, not a timing
    while time.time() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/json/list")
        targets = json.loads(conn.getresponse().read())
        conn.close()
        pages = [t for t in targets if t.get("type") == "page"]
        if pages:
            return "/" + pages[0]["webSocketDebuggerUrl"].split("/", 3)[3]
        time.sleep(0.1)
    raise RuntimeError("chromium shows no page target")


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)         # the group we started: its helpers
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


ROWS = "document.querySelectorAll('#queue tr.msg').length"


def test_send_now_delivers_and_the_table_empties_without_reload(tmp_path, browser):
    smtp, web = free_port(), free_port()
    conf = write_config(
        str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
        extra="\tlist listen 'smtp://127.0.0.1:%d'\n\toption status_listen '127.0.0.1:%d'\n"
              % (free_port(), web),
        routes="config route 'isp'\n\toption online '" + OFFLINE + "'\n"
               "\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n" % smtp)
    with Sink(smtp) as sink:
        daemon = Daemon(conf, wait_port=web).start()
        try:
            done = masq("-C", conf, "-odq", "far@example.org",
                        input=b"From: alice@test.example\nSubject: seen in chromium\n\nhi\n")
            assert done.returncode == 0, done.stderr
            browser.call("Page.navigate", url="http://127.0.0.1:%d/" % web)
            assert browser.wait(ROWS + " === 1")
            row = browser.evaluate("document.querySelector('#queue tr.msg').textContent")
            assert "far@example.org" in row and "queued" in row.lower()
            assert "offline" in browser.evaluate("document.getElementById('routes').textContent")
            shot = browser.screenshot(str(tmp_path / "masq-status.png"))
            shutil.copyfile(shot, SCREENSHOT)
            _phone_screenshot(browser, str(tmp_path / "masq-status-phone.png"))

            browser.evaluate("window.notReloaded = true")
            browser.evaluate("document.querySelector('#routes button[data-route=\"isp\"]')"
                             ".click()")
            [(_, rcpts, text)] = sink.wait(1)
            assert rcpts == ["far@example.org"] and b"seen in chromium" in text
            assert browser.wait(ROWS + " === 0 && !!document.querySelector('#queue tr.empty')")
            assert browser.evaluate("window.notReloaded") is True
            assert browser.wait("document.getElementById('deliveries').textContent"
                                ".indexOf('far@example.org') >= 0")
            shown = browser.evaluate("document.getElementById('deliveries').textContent")
            assert "sent 2.0.0" in shown and "[127.0.0.1]:%d" % smtp in shown
            assert "send now" in browser.evaluate("document.getElementById('notice')"
                                                  ".textContent")
            browser.screenshot(str(tmp_path / "masq-status-after.png"))
            assert browser.errors() == []                # CSP let the page's own code run
        finally:
            log = daemon.stop()
    assert "Traceback" not in log


def _phone_screenshot(browser, path):
    browser.call("Emulation.setDeviceMetricsOverride", width=390, height=844,
                 deviceScaleFactor=1, mobile=True)
    try:
        assert browser.wait("getComputedStyle(document.querySelector('#queue tr.msg'))"
                            ".display === 'block'")     # the table folds into cards
        browser.screenshot(path)
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")


# ---- issue 18 point 11: the page at 1280 px and on a phone (390 px) ------------------

SHOTS = os.environ.get("MASQ_SHOTS")       # a folder to keep the screenshots in, if set
LONG = "a.rather.long.local.part-for-testing@mail.subdomain.example-provider.co.uk"


def _one_line(browser, selector):
    """Return the texts of elements matching selector whose text wraps onto 2+ lines."""
    return browser.evaluate(
        "Array.from(document.querySelectorAll(%s)).filter(function(e){"
        "var r=document.createRange();r.selectNodeContents(e);"
        "var tops={};Array.from(r.getClientRects()).forEach(function(x){"
        "if(x.width>0)tops[Math.round(x.top)]=1});return Object.keys(tops).length>1})"
        ".map(function(e){return e.textContent})" % json.dumps(selector))


def _shoot(browser, tmp_path, name, width, height):
    browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                 deviceScaleFactor=1, mobile=width < 600)
    browser.evaluate("window.masqRefresh()")
    browser.wait("document.querySelectorAll('#queue tr.msg').length === 2")
    # the layout of the redraw is done once two frames have been drawn
    browser.evaluate("new Promise(function(done){requestAnimationFrame(function(){"
                     "requestAnimationFrame(function(){done(true)})})})")
    path = browser.screenshot(str(tmp_path / ("%s-%d.png" % (name, width))))
    if SHOTS:
        shutil.copyfile(path, os.path.join(SHOTS, os.path.basename(path)))
    return path


def test_page_layout_override_and_offline_at_1280_and_390(tmp_path, browser):
    smtp, web = free_port(), free_port()          # nothing listens on smtp: retries
    conf = write_config(
        str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
        extra="\tlist listen 'smtp://127.0.0.1:%d'\n\toption status_listen '127.0.0.1:%d'\n"
              % (free_port(), web),
        routes="config route 'dialup'\n\toption online '" + OFFLINE + "'\n"
               "\tlist allowed_recipient '*@dial.example'\n"
               "config route 'isp'\n\toption online '" + OFFLINE + "'\n"
               "\tlist denied_recipient '*@dial.example'\n"
               "\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n" % smtp)
    daemon = Daemon(conf, wait_port=web).start()
    try:
        for rcpt in (LONG, "friend@dial.example"):
            done = masq("-C", conf, "-odq", rcpt, input=b"Subject: layout\n\nhi\n")
            assert done.returncode == 0, done.stderr
        assert masq("online", "isp", "up", "-C", conf).returncode == 0
        browser.call("Page.navigate", url="http://127.0.0.1:%d/" % web)
        assert browser.wait(ROWS + " === 2")
        assert wait_for(lambda: "retry" in masq("-bp", "-C", conf).stdout.decode())
        desktop = _shoot(browser, tmp_path, "layout", 1280, 900)
        broken = _one_line(browser, "#queue .th, #routes .th, #queue .td.nowrap:not(.right),"
                                    " #queue .small.nowrap, #queue .muted.nowrap")
        routes_text = browser.evaluate("document.getElementById('routes').textContent")
        state = browser.evaluate(
            "Array.from(document.querySelectorAll('#routes tr[data-route]')).map(function(r)"
            "{return [r.getAttribute('data-route'), Array.from(r.querySelectorAll('.label'))"
            ".map(function(l){return l.className+'|'+l.textContent})]})")
        queue_text = browser.evaluate("document.getElementById('queue').textContent")
        phone = _shoot(browser, tmp_path, "layout", 390, 1600)
        lefts = browser.evaluate(
            "Array.from(document.querySelectorAll('#queue tr.msg .td[data-title], "
            "#routes tr[data-route] .td[data-title]'))"
            ".filter(function(c){return c.getAttribute('data-title')})"
            ".map(function(c){var r=document.createRange();r.selectNodeContents(c);"
            "var rects=Array.from(r.getClientRects()).filter(function(x){return x.width>0});"
            "return [c.getAttribute('data-title'), Math.round(rects[0].left),"
            "Math.round(rects[0].top - c.getBoundingClientRect().top)]})")
        browser.call("Emulation.clearDeviceMetricsOverride")

        # the page sets a route down and back to auto (what `masq online` does)
        browser.evaluate("var s=document.querySelector('#routes select[data-route=\"isp\"]');"
                         "s.value='down';s.onchange()")
        isp_labels = ("Array.from(document.querySelectorAll('#routes tr[data-route=\"isp\"]"
                      " .label')).map(function(l){return l.textContent}).join(',')")
        assert browser.wait(isp_labels + " === 'offline,forced down'")
        doc = json.loads(masq("status", "--json", "-C", conf).stdout)
        assert {r["name"]: r["override"] for r in doc["routes"]}["isp"] == "down"
        browser.evaluate("var s=document.querySelector('#routes select[data-route=\"isp\"]');"
                         "s.value='auto';s.onchange()")
        assert browser.wait(isp_labels + " === 'offline'")
        assert browser.errors() == []
    finally:
        log = daemon.stop()
    assert "Traceback" not in log
    assert os.path.getsize(desktop) > 0 and os.path.getsize(phone) > 0
    assert broken == []                            # no `Ag/e`, no id cut in two
    labels = dict(state)
    assert "label success|online" in labels["isp"] and "label notice|forced up" in labels["isp"]
    assert labels["dialup"] == ["label |offline"]   # the normal state on dial-up: no warning
    assert "forced up" in routes_text.replace("forced upforced down", "")
    assert "waits for route dialup (offline)" in queue_text
    assert LONG in queue_text
    # on a phone every value starts in one column, on its label's line
    assert len({left for _, left, _ in lefts}) == 1, lefts
    tops = [top for _, _, top in lefts]
    assert max(tops) - min(tops) <= 2 and max(tops) < 18, lefts   # on the label's line
