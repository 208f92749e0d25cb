#!/usr/bin/env python3
"""Start and stop the benchmark peers on loopback: a masq daemon, a throwaway Postfix, aiosmtpd.

Owns the peers the benchmarks (tools/bench_*.py) measure against, each a context manager that
stops what it started on exit, whatever happened inside. Everything listens on 127.0.0.1 on a
free high port and keeps its files in a fresh folder under /var/tmp (on disk: fdatasync is
real there). Not a test helper: it asserts nothing about masq, and prints nothing.

  MasqDaemon      `masq -C CONF daemon` from this checkout, run as the installed launcher
                  runs it (`python3 -I -S`), optionally under a wrapper such as strace; its
                  log goes to a file, never to a pipe
  PostfixInstance Debian's Postfix with its own config_directory, queue_directory and
                  data_directory, an smtpd on the port and a `discard` transport for all mail
                  (durably accepted, then thrown away); the system Postfix is never started
                  and /etc/postfix is left as it was
  AioSmtpd        aiosmtpd in a subprocess; each message written to its own file and fsync'ed
                  (in a worker thread) before the 250 reply

Run as `python3 tools/peers.py aiosmtpd PORT FOLDER` it is that aiosmtpd server. Fails with
RuntimeError (and the peer's last log lines) when a peer does not come up within 20 s.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 20.0


def free_port():
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


BASE_DIR = "/var/tmp"        # where fresh_dir makes folders (a benchmark may move it)


def fresh_dir(prefix):
    """Create and return a new folder under BASE_DIR that other users may traverse."""
    path = tempfile.mkdtemp(prefix=prefix, dir=BASE_DIR)
    os.chmod(path, 0o755)
    return path


def proc_status(pid):
    """Return {field: kB} of the memory lines (VmRSS, VmHWM, ...) of /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            name, _, value = line.partition(":")
            if name.startswith("Vm") and value.strip().endswith("kB"):
                out[name] = int(value.split()[0])
    return out


def wait_port(port, alive, what, log_path=None):
    """Wait until 127.0.0.1:port accepts; RuntimeError if alive() turns false or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not alive():
            break
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not come up on port %d%s" % (what, port, _tail(log_path)))


def _tail(path, lines=15):
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as log:
        return ":\n" + "".join(log.readlines()[-lines:])


def _stop_process(proc, sig=signal.SIGTERM):
    """Stop a child we started: sig, then SIGKILL after 15 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Peer:
    """A server we start and stop: `with Peer(...) as peer:` stops it whatever happens."""

    def start(self):
        """Start the server; return self once it answers."""
        raise NotImplementedError

    def stop(self):
        """Stop what start() started (also after a failed start)."""
        raise NotImplementedError

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


MASQ_CONFIG = """\
config masq 'main'
\toption hostname 'masq.bench.example'
\toption spool_dir '{base}/spool'
\toption pid_file '{base}/masq.pid'
\toption status_file '{base}/status.json'
\toption alias_file '{base}/aliases'
\toption mailbox 'maildir:{base}/mail/%u'
\toption log 'stderr'
\toption do_queue '1'
\toption dns_server '127.0.0.1:9'
\tlist local_domain 'test.example'
\tlist local_users 'b'
\tlist relay_net '127.0.0.0/8'
{extra}"""


def masq_config(base, extra=""):
    """Write BASE/masq.conf (spool BASE/spool, no route out, DNS only to loopback); return it.

    b@test.example is a local user whose mail goes to a maildir under BASE; with no route
    configured, mail for other domains stays queued; do_queue asks for queueing only.
    """
    os.makedirs(os.path.join(base, "spool"), exist_ok=True)
    with open(os.path.join(base, "aliases"), "w") as out:
        out.write("postmaster: b\n")
    path = os.path.join(base, "masq.conf")
    with open(path, "w") as out:
        out.write(MASQ_CONFIG.format(base=base, extra=extra))
    return path


def masq_queued(spool):
    """Return how many live messages the masq spool holds."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from masq.queue.spool import Queue
    queue = Queue(spool).open("read")
    try:
        return len(queue.live())
    finally:
        queue.close()


class MasqDaemon(Peer):
    """A masq daemon from this checkout, listening for SMTP on a loopback port."""

    def __init__(self, base, port, extra="", wrapper=()):
        self.base = base
        self.port = port
        self.conf = masq_config(base, "\tlist listen 'smtp://127.0.0.1:%d'\n" % port + extra)
        self.wrapper = list(wrapper)
        self.log_path = os.path.join(base, "daemon.log")
        self.proc = None

    @property
    def pid(self):
        """Return the daemon's pid (from its pid file when it runs under a wrapper)."""
        if not self.wrapper:
            return self.proc.pid
        try:
            with open(os.path.join(self.base, "masq.pid")) as pid_file:
                return int(pid_file.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        try:                                  # not written yet: the wrapper's own child
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as kids:
                return int(kids.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self):
        """Start the daemon as the installed launcher does (`python3 -I -S`, tools/launcher.py)
        and wait until its SMTP port answers: site-packages would add megabytes to its RSS
        that a router never has."""
        env = dict(os.environ)
        env.pop("MASQ_CONFIG", None)
        launcher = ("import sys; sys.path.insert(0, %r); from masq.cli import main; "
                    "sys.exit(main(['masq'] + sys.argv[1:]))" % ROOT)
        cmd = self.wrapper + [sys.executable, "-I", "-S", "-c", launcher,
                              "-C", self.conf, "daemon"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        wait_port(self.port, lambda: self.proc.poll() is None, "masq daemon", self.log_path)
        return self

    def stop(self):
        """Stop the daemon (SIGTERM to it, not to a wrapper) and wait for what we started."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pid = self.pid if self.wrapper else None
        if pid:
            os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        _stop_process(self.proc)


POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.example
mydomain = bench.example
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = discard
relay_transport = discard
local_transport = discard
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
"""

# service type private unpriv chroot wakeup maxproc command: nothing chrooted, nothing else.
POSTFIX_MASTER = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
anvil     unix  - - n -  1 anvil
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixInstance(Peer):
    """A throwaway Postfix (needs root) whose smtpd listens on 127.0.0.1:port only."""

    def __init__(self, base, port):
        self.base = base
        self.port = port
        self.conf_dir = os.path.join(base, "etc")
        self.log_path = os.path.join(base, "maillog")
        self.started = False

    def _postfix(self, *args):
        done = subprocess.run(["postfix", "-c", self.conf_dir] + list(args),
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError("postfix -c %s %s: %s%s" % (
                self.conf_dir, " ".join(args), done.stderr.strip(), _tail(self.log_path)))
        return done

    def write_config(self):
        """Write main.cf and master.cf and create the queue as Postfix wants it."""
        os.makedirs(self.conf_dir, exist_ok=True)
        os.makedirs(os.path.join(self.base, "queue"), exist_ok=True)
        os.makedirs(os.path.join(self.base, "data"), exist_ok=True)
        with open(os.path.join(self.conf_dir, "main.cf"), "w") as out:
            out.write(POSTFIX_MAIN.format(base=self.base))
        with open(os.path.join(self.conf_dir, "master.cf"), "w") as out:
            out.write(POSTFIX_MASTER.format(port=self.port))
        shutil.chown(os.path.join(self.base, "data"), "postfix")
        self._postfix("check")                # creates the queue folders, owners and modes

    def start(self):
        """Write the configuration, start the master and wait until smtpd answers."""
        if os.geteuid() != 0:
            raise RuntimeError("a Postfix instance needs root")
        self.write_config()
        self._postfix("start")
        self.started = True
        wait_port(self.port, lambda: True, "postfix", self.log_path)
        return self

    def stop(self):
        """Stop the master we started (postfix -c DIR stop, then wait for its pid to go)."""
        if not self.started:
            return
        pid = self._master_pid()
        subprocess.run(["postfix", "-c", self.conf_dir, "stop"],
                       capture_output=True, timeout=60)
        deadline = time.monotonic() + 15
        while pid and os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.started = False

    def _master_pid(self):
        try:
            with open(os.path.join(self.base, "queue", "pid", "master.pid")) as pid:
                return int(pid.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def queue_size(self):
        """Return how many queue files wait in incoming, active and deferred."""
        return sum(len(os.listdir(os.path.join(self.base, "queue", name)))
                   for name in ("incoming", "active", "deferred", "maildrop"))


class AioSmtpd(Peer):
    """`python3 tools/peers.py aiosmtpd PORT FOLDER` in a subprocess."""

    def __init__(self, base, port):
        self.base = base
        self.port = port
        self.folder = os.path.join(base, "mail")
        self.log_path = os.path.join(base, "aiosmtpd.log")
        self.proc = None

    def start(self):
        """Start the server and wait until it answers."""
        os.makedirs(self.folder, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "aiosmtpd", str(self.port),
                 self.folder], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, lambda: self.proc.poll() is None, "aiosmtpd", self.log_path)
        return self

    def stop(self):
        """Stop the server process we started."""
        _stop_process(self.proc)


def serve_aiosmtpd(port, folder):
    """Serve SMTP on 127.0.0.1:port until SIGTERM; each message fsync'ed to FOLDER first."""
    import asyncio
    from aiosmtpd.smtp import SMTP

    def store(name, data):
        fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    class Handler:
        def __init__(self):
            self.serial = 0

        async def handle_DATA(self, server, session, envelope):
            self.serial += 1
            name = "%d.%d" % (os.getpid(), self.serial)
            await asyncio.get_running_loop().run_in_executor(
                None, store, name, envelope.original_content)
            return "250 2.0.0 Ok: stored"

    async def main():
        loop = asyncio.get_running_loop()
        handler = Handler()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="aiosmtpd.bench.example"), "127.0.0.1", port)
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        loop.add_signal_handler(signal.SIGINT, stop.set_result, None)
        await stop
        server.close()
        await server.wait_closed()

    asyncio.run(main())



class SmtpSink(Peer):
    """Postfix's smtp-sink on 127.0.0.1:port, throwing mail away and counting it (-c).

    counters() returns smtp-sink's own running counters, {"sess": N, "quit": N, "mesg": N}:
    messages ("." received) and SMTP sessions (counted when a session ends).
    """

    def __init__(self, base, port, backlog=256):
        self.base = base
        self.port = port
        self.backlog = backlog
        self.out_path = os.path.join(base, "smtp-sink.out")
        self.proc = None

    def start(self):
        """Start smtp-sink and wait until it answers."""
        os.makedirs(self.base, exist_ok=True)
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                ["smtp-sink", "-c", "-u", "root", "127.0.0.1:%d" % self.port,
                 str(self.backlog)], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT)
        wait_port(self.port, lambda: self.proc.poll() is None, "smtp-sink", self.out_path)
        return self

    def stop(self):
        """Stop the smtp-sink we started."""
        _stop_process(self.proc)

    def counters(self):
        """Return the last counters smtp-sink printed (zeros before the first)."""
        with open(self.out_path, "rb") as out:
            size = out.seek(0, os.SEEK_END)
            out.seek(max(0, size - 512))
            lines = out.read().replace(b"\n", b"\r").split(b"\r")
        for line in reversed(lines[1:] if size > 512 else lines):    # skip a cut first line
            fields = dict(f.split(b"=", 1) for f in line.split() if b"=" in f)
            if b"mesg" in fields:
                return {k.decode(): int(v) for k, v in fields.items() if v.isdigit()}
        return {"sess": 0, "quit": 0, "mesg": 0}

    def connections(self):
        """Return how many TCP connections to the sink are established right now."""
        count = 0
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                local, state = line.split()[1], line.split()[3]
                if state == "01" and int(local.rpartition(":")[2], 16) == self.port:
                    count += 1
        return count


RELAY_MASTER = """\
smtp      unix  - - n -  - smtp
scache    unix  - - n -  1 scache
"""


class RelayingPostfix(PostfixInstance):
    """A PostfixInstance that relays all mail over SMTP to [127.0.0.1]:relay_port.

    With hold (the default) the smtp transport is listed in defer_transports, so mail
    waits in the deferred queue; release() lifts that (postconf -e, postfix reload) and
    waits for the new qmgr; flush() is `postqueue -f`. No TLS; concurrency and connection
    caching as Postfix's defaults; smtp and scache added to master.cf.
    """

    def __init__(self, base, port, relay_port, hold=True):
        super().__init__(base, port)
        self.relay_port = relay_port
        self.hold = hold

    def postconf(self, *settings):
        """Set main.cf parameters (`postconf -c DIR -e NAME=VALUE ...`)."""
        subprocess.run(["postconf", "-c", self.conf_dir, "-e"] + list(settings),
                       check=True, capture_output=True, timeout=60)

    def write_config(self):
        """Write the base configuration, then turn the discard transport into relaying."""
        super().write_config()
        with open(os.path.join(self.conf_dir, "master.cf"), "a") as out:
            out.write(RELAY_MASTER)
        self.postconf("relayhost = [127.0.0.1]:%d" % self.relay_port,
                      "default_transport = smtp", "relay_transport = smtp",
                      "smtp_tls_security_level = none",
                      "defer_transports = %s" % ("smtp" if self.hold else ""))
        self._postfix("check")

    def children(self, name=None):
        """Return the pids of the master's children (only those running `name`)."""
        pid = self._master_pid()
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as kids:
                pids = [int(p) for p in kids.read().split()]
        except (OSError, TypeError):
            return []
        if name is None:
            return pids
        found = []
        for kid in pids:
            try:
                with open("/proc/%d/cmdline" % kid, "rb") as cmd:
                    if cmd.read().split(b"\0")[0].split(b"/")[-1] == name.encode():
                        found.append(kid)
            except OSError:
                pass
        return found

    def release(self, timeout=20.0):
        """Stop deferring the smtp transport: postconf, reload, wait for a new qmgr."""
        old = set(self.children("qmgr"))
        self.postconf("defer_transports =")
        self._postfix("reload")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = set(self.children("qmgr"))
            if now and not now & old:
                return
            time.sleep(0.05)
        raise RuntimeError("postfix: no new qmgr after reload%s" % _tail(self.log_path))

    def flush(self):
        """Ask qmgr to try every deferred message now (`postqueue -c DIR -f`)."""
        subprocess.run(["postqueue", "-c", self.conf_dir, "-f"], check=True,
                       capture_output=True, timeout=60)

    def queue_files(self, names=("maildrop", "incoming", "active", "deferred", "hold")):
        """Return how many queue files the named queues hold (hashed folders included)."""
        count = 0
        for name in names:
            for _, _, files in os.walk(os.path.join(self.base, "queue", name)):
                count += len(files)
        return count


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "aiosmtpd":
        sys.stderr.write("usage: peers.py aiosmtpd PORT FOLDER\n")
        sys.exit(64)
    serve_aiosmtpd(int(sys.argv[2]), sys.argv[3])
