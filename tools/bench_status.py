#!/usr/bin/env python3
"""Measure the status page: its weight, and the daemon's memory and CPU while it is open.

Prints figures; asserts nothing. Run: `python3 tools/bench_status.py [--seconds 30]
[--messages 20]`.

  weight    GET / (and gzip -9 of it, for comparison: masq sends it uncompressed), the 401
            page, and /status.json with the queued messages
  memory    VmRSS of `masq daemon` with the page listening but never asked, after the first
            page load, then sampled every second while the page stays open and refreshes
            itself for --seconds (in headless Chromium when /usr/bin/chromium exists, else
            a client that loads / once and fetches /status.json every 4 s as the page
            does); VmHWM at the end; beside a bare `python3 -IS` for scale
  cpu       the daemon's user+system time over that window, and the refreshes it served;
            the import cost of the page's modules on top of the rest of the daemon
  latency   200 sequential GET /status.json on one keep-alive connection

The daemon runs from this tree with a temporary configuration: one offline route (so
the messages stay queued) and the page on 127.0.0.1.
"""

import argparse
import gzip
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
CHROMIUM = "/usr/bin/chromium"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(folder, web):
    path = os.path.join(folder, "masq.conf")
    with open(path, "w") as out:
        out.write("config masq 'main'\n\toption hostname 'bench.example'\n"
                  "\toption spool_dir '%s/spool'\n\toption pid_file '%s/masq.pid'\n"
                  "\toption status_file '%s/status.json'\n\toption log 'stderr'\n"
                  "\tlist local_domain 'bench.example'\n"
                  "\tlist listen 'smtp://127.0.0.1:%d'\n\toption status_listen '127.0.0.1:%d'\n\n"
                  "config route 'isp'\n\toption online 'file:/nonexistent'\n"
                  "\toption smarthost '127.0.0.1:9'\n\toption tls 'none'\n"
                  % (folder, folder, folder, free_port(), web))
    return path


def masq(conf, *args, data=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "masq", "-C", conf] + list(args), input=data,
                          capture_output=True, env=env, cwd=ROOT, timeout=60)


def proc_status(pid, field):
    """Return a /proc/PID/status field in kB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_python_rss():
    proc = subprocess.Popen([sys.executable, "-IS", "-c", "import time; time.sleep(5)"])
    time.sleep(0.5)
    rss = proc_status(proc.pid, "VmRSS")
    proc.kill()
    proc.wait()
    return rss


def get(port, path, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if own:
        conn.close()
    return response.status, body


def start_daemon(conf, web):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "masq", "-C", conf, "daemon"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=ROOT)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", web), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the daemon did not come up")


class Poller:
    """What the page does, without a browser: / once, then /status.json every 4 s."""

    name = "HTTP client doing what the page does"

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.next = 0
        self.count = 0

    def open(self):
        get(self.port, "/", self.conn)

    def tick(self, now):
        if now >= self.next:
            get(self.port, "/status.json", self.conn)
            self.next = now + 4
            self.count += 1

    def requests(self):
        return self.count

    def close(self):
        self.conn.close()


class Browser:
    """Headless Chromium showing the page (it refreshes itself)."""

    name = "headless Chromium"

    def __init__(self, port):
        import test_status_chromium as cdp
        self.cdp, self.port = cdp, port
        self.profile = tempfile.mkdtemp(prefix="masq-bench-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--remote-debugging-port=0", "--no-sandbox",
             "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--user-data-dir=" + self.profile, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        devtools = cdp._devtools_port(self.profile, self.proc)
        self.ws = cdp.WebSocket("127.0.0.1", devtools, cdp._page_path(devtools))
        self.tools = cdp.DevTools(self.ws)

    def open(self):
        self.tools.call("Page.navigate", url="http://127.0.0.1:%d/" % self.port)
        self.tools.wait("document.getElementById('count') !== null && "
                        "document.getElementById('count').textContent !== '\u2026'")
        self.tools.evaluate("window.fetches = 0; (function(f){window.fetch = function(){"
                            "window.fetches++; return f.apply(this, arguments)}})(window.fetch)")

    def tick(self, now):
        pass

    def requests(self):
        return self.tools.evaluate("window.fetches")

    def close(self):
        self.ws.close()
        self.cdp._stop(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)


def measure(args):
    folder = tempfile.mkdtemp(prefix="masq-bench-status-")
    web = free_port()
    conf = write_config(folder, web)
    for i in range(args.messages):
        done = masq(conf, "-odq", "rcpt%d@example.org" % i,
                    data=b"Subject: bench %d\n\n%s\n" % (i, b"x" * 2000))
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode())
    daemon = start_daemon(conf, web)
    try:
        return run(args, daemon.pid, web)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
        shutil.rmtree(folder, ignore_errors=True)


def run(args, pid, web):
    figures = {"bare": bare_python_rss(), "idle": proc_status(pid, "VmRSS")}
    _, page = get(web, "/")
    _, doc = get(web, "/status.json")
    figures.update(page=len(page), page_gz=len(gzip.compress(page, 9)), doc=len(doc))
    figures["after_load"] = proc_status(pid, "VmRSS")
    client = Browser(web) if os.access(CHROMIUM, os.X_OK) and not args.no_browser \
        else Poller(web)
    figures["client"] = client.name
    try:
        client.open()
        cpu0, samples, end = cpu_seconds(pid), [], time.time() + args.seconds
        while time.time() < end:
            client.tick(time.time())
            samples.append(proc_status(pid, "VmRSS"))
            time.sleep(1)
        figures.update(cpu=cpu_seconds(pid) - cpu0, samples=samples,
                       hwm=proc_status(pid, "VmHWM"), requests=client.requests())
    finally:
        client.close()
    figures["latency"] = latency(web)
    return figures


def latency(web, count=200):
    conn = http.client.HTTPConnection("127.0.0.1", web, timeout=10)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        get(web, "/status.json", conn)
        times.append((time.perf_counter() - start) * 1000)
    conn.close()
    times.sort()
    return statistics.median(times), times[int(0.9 * len(times))]


def report(args, f):
    mb = lambda kb: "%.1f MB" % (kb / 1024)
    samples = f["samples"]
    print("status page benchmark (%d queued messages, %d s open)" % (args.messages, args.seconds))
    print("  page GET /            %6d bytes (gzip -9: %d bytes; limit 30720)"
          % (f["page"], f["page_gz"]))
    print("  401 page              %6d bytes" % len(_denied()))
    print("  /status.json          %6d bytes (%d messages)" % (f["doc"], args.messages))
    print("  bare python3 -IS      %s" % mb(f["bare"]))
    print("  daemon, page unused   %s" % mb(f["idle"]))
    print("  after first load      %s" % mb(f["after_load"]))
    print("  page open (%s): min %s, max %s, last %s, VmHWM %s"
          % (f["client"], mb(min(samples)), mb(max(samples)), mb(samples[-1]), mb(f["hwm"])))
    print("  daemon CPU while open %.2f s over %d s (%d refreshes of /status.json)"
          % (f["cpu"], args.seconds, f["requests"]))
    print("  import masq.status.web +%d kB (on top of what the daemon imports anyway)"
          % import_cost())
    print("  GET /status.json      median %.2f ms, p90 %.2f ms (keep-alive, 200 requests)"
          % f["latency"])


def import_cost():
    code = ("import sys; sys.path.insert(0, %r)\n"
            "def rss():\n    for l in open('/proc/self/status'):\n"
            "        if l.startswith('VmRSS:'): return int(l.split()[1])\n"
            "import masq.daemon.host, masq.inbound.listener, masq.outbound.delivery\n"
            "before = rss()\n"
            "import masq.status.web\nprint(rss() - before)" % ROOT)
    done = subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True, text=True)
    return int(done.stdout.strip() or 0)


def _denied():
    sys.path.insert(0, ROOT)
    from masq.status import page
    return page.DENIED.encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true", help="use the HTTP poller")
    args = parser.parse_args()
    report(args, measure(args))


if __name__ == "__main__":
    main()
