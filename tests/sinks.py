"""Real SMTP peers for delivery tests: aiosmtpd in a thread, Postfix's smtp-sink, dnsmasq."""

import os
import subprocess
import threading
import time

from aiosmtpd.controller import Controller

from helpers import wait_port


class Recorder:
    """An aiosmtpd handler that records messages; local parts steer the replies:
    `temp-*` gets 450 at RCPT, `perm-*` gets 550; everything else 250."""

    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()
        self.refuse_all = None          # set to a reply string to refuse every RCPT

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.partition("@")[0]
        if self.refuse_all:
            return self.refuse_all
        if local.startswith("temp-"):
            return "450 4.2.0 try again later"
        if local.startswith("perm-"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                  envelope.original_content))
        return "250 2.0.0 OK stored"

    def wait(self, count, timeout=60.0):
        """Wait until count messages arrived (timeout: a bound on a failing wait); return
        them."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        return list(self.messages)


class Sink:
    """aiosmtpd on 127.0.0.1:port (optionally with STARTTLS and AUTH)."""

    def __init__(self, port, host="127.0.0.1", **kwargs):
        self.recorder = Recorder()
        self.controller = Controller(self.recorder, hostname=host, port=port, **kwargs)

    def __enter__(self):
        self.controller.start()
        return self.recorder

    def __exit__(self, *exc):
        self.controller.stop()


class SmtpSink:
    """Postfix's smtp-sink on 127.0.0.1:port, dumping messages into a folder."""

    def __init__(self, port, folder, *options):
        self.port = port
        self.folder = folder
        self.options = list(options)
        self.proc = None

    def __enter__(self):
        os.makedirs(self.folder, exist_ok=True)
        template = os.path.join(self.folder, "%Y%m%d%H%M%S.")
        self.proc = subprocess.Popen(["smtp-sink", "-d", template, "-u", "root"] + self.options
                                     + ["127.0.0.1:%d" % self.port, "128"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        return self

    def messages(self, count=1, timeout=60.0):
        """Return the texts of dumped messages once count have arrived and smtp-sink has
        closed every dump file (no message half written), in the order they were written
        (a file's name has only the second, then a random number); else []."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            names = os.listdir(self.folder)
            if len(names) >= count and not self._writing():
                paths = [os.path.join(self.folder, n) for n in names]
                paths.sort(key=lambda path: (os.stat(path).st_mtime_ns, path))
                return [open(path, "rb").read() for path in paths]
            time.sleep(0.05)
        return []

    def _writing(self):
        """Return True while smtp-sink holds a file of the dump folder open."""
        fds, folder = "/proc/%d/fd" % self.proc.pid, os.path.abspath(self.folder) + os.sep
        for fd in os.listdir(fds):
            try:
                if os.readlink(os.path.join(fds, fd)).startswith(folder):
                    return True
            except OSError:
                pass
        return False

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(5)


def _wait_dns(port, host="127.0.0.1", timeout=60.0):
    """Wait until a DNS server on host:port answers a query (any answer); the timeout
    bounds a hung start."""
    import socket
    from masq.proto import dns as wire
    deadline = time.time() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.1)
        while time.time() < deadline:
            probe.sendto(wire.build_query(1, "probe.test", wire.A), (host, port))
            try:
                probe.recv(512)
                return
            except OSError:
                pass
    raise RuntimeError("no DNS server answers on %s:%d" % (host, port))


class Dnsmasq:
    """dnsmasq on 127.0.0.1:port serving the given MX, host and TXT records (with TTL
    `ttl`; dnsmasq's default is 0); with `query_log` (a path) it logs every query there."""

    def __init__(self, port, mx=(), hosts=(), txt=(), query_log=None, ttl=0):
        self.port = port
        self.args = ["--local-ttl=%d" % ttl] if ttl else []
        self.args += ["--mx-host=%s,%s,%d" % m for m in mx]
        self.args += ["--host-record=%s,%s" % h for h in hosts]
        self.args += ["--txt-record=%s,%s" % t for t in txt]
        if query_log:
            self.args += ["--log-queries", "--log-facility=%s" % query_log]
        self.query_log = query_log
        self.proc = None

    def queries(self, name):
        """Return how many queries for name (any type) the log holds so far."""
        with open(self.query_log, encoding="utf-8", errors="replace") as log:
            return sum(1 for line in log if "query[" in line and " %s from " % name in line)

    def __enter__(self):
        self.proc = subprocess.Popen(
            ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--port=%d" % self.port, "--listen-address=127.0.0.1", "--bind-interfaces",
             "--local=/test/", "--user=root"] + self.args,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_dns(self.port)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(5)
