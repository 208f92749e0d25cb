"""Test helpers: write a configuration, run masq as a command, read the queue."""

import contextlib
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_config(path, spool, extra="", routes=""):
    """Write a masq configuration for a test spool; return its path.

    Without a `listen` in extra, SMTP listens on a free loopback port (never port 25,
    which another program on the machine, or another test's daemon, may hold)."""
    if "\tlist listen " not in extra and "\toption listen " not in extra:
        extra = "\tlist listen 'smtp://127.0.0.1:%d'\n" % free_port() + extra
    if "\toption mailbox " not in extra:
        # local mail stays in the test's folder, never in the machine's /var/mail
        mail = os.path.join(os.path.dirname(os.path.abspath(spool)), "mail")
        os.makedirs(mail, exist_ok=True)
        os.chmod(mail, 0o1777)
        extra = "\toption mailbox 'mbox:%s/%%u'\n" % mail + extra
    text = (
        "config masq 'main'\n"
        "\toption hostname 'test.example'\n"
        "\toption spool_dir '%s'\n"
        "\toption pid_file '%s/masq.pid'\n"
        "\toption status_file '%s/status.json'\n"
        "\toption log 'stderr'\n"
        "\tlist local_domain 'test.example'\n"
        "%s\n%s" % (spool, os.path.dirname(spool), os.path.dirname(spool), extra, routes))
    with open(path, "w") as out:
        out.write(text)
    return path


def masq(*args, input=None, env=None, argv0=None, timeout=60, **kw):
    """Run `python3 -m masq ARGS`; return the CompletedProcess (text mode)."""
    environ = dict(os.environ, PYTHONPATH=ROOT)
    environ.pop("MASQ_CONFIG", None)
    if env:
        environ.update(env)
    cmd = [sys.executable, "-m", "masq"] + list(args)
    if argv0:
        cmd = [sys.executable, "-c", "import sys; from masq.cli import main; "
               "sys.argv[0] = %r; sys.exit(main())" % argv0] + list(args)
    return subprocess.run(cmd, input=input, capture_output=True, env=environ,
                          timeout=timeout, cwd=ROOT, **kw)


def status(conf):
    """Return the status document from `masq status --json`."""
    done = masq("status", "--json", "-C", conf)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(predicate, timeout=60.0):
    """Poll predicate until it is true (or timeout seconds pass); return its last value.

    The timeout only bounds a wait that fails: a loaded machine (two cores shared by
    several test runs) can take many seconds for what takes milliseconds when idle."""
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def reply(sock, last, limit=65536):
    """Read from sock until a line starting with `last` (e.g. b"250 ", a reply's final
    line) has arrived, or the peer closed; return all that was read. The socket's own
    timeout bounds each read."""
    data = b""
    while len(data) < limit and not any(line.startswith(last)
                                        for line in data.split(b"\r\n")[:-1]):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


_handed_out = set()


def wait_port(port, host="127.0.0.1", timeout=60.0, proc=None):
    """Wait until something accepts TCP connections on host:port; RuntimeError if it does
    not within timeout seconds (a bound on a hung start) or proc exits first."""
    import socket
    import time
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection((host, port), 5).close()
            return
        except OSError:
            if time.time() > deadline or (proc is not None and proc.poll() is not None):
                raise RuntimeError("nothing listens on %s:%d" % (host, port)) from None
            time.sleep(0.05)


def free_port():
    """Return a port that no TCP or UDP socket holds now, on any address, and that this
    process has not handed out before.

    It lies below the kernel's ephemeral range (ip_local_port_range): a port the kernel
    picked for a bind to port 0 could be taken, before the test's server binds it, by any
    outgoing connection on the machine (another test's client, another pytest run), and
    two such picks could even be the same port. Outside that range only an explicit bind
    takes a port; each pick starts at a random place, and no port is handed out twice."""
    import random
    import socket
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        low, high = (int(n) for n in ranges.read().split())
    first, last = (low - 12000, low - 1) if low > 13024 else (high + 1, min(high + 12000,
                                                                                65535))
    span = last - first + 1
    start = random.SystemRandom().randrange(span)
    for step in range(span):
        port = first + (start + step) % span
        if port not in _handed_out and _unbound(socket, port):
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port in %d-%d" % (first, last))


def _unbound(socket, port):
    """Return True if a TCP and a UDP socket can bind port on every address (IPv6 and
    IPv4 at once where the machine has IPv6, else IPv4)."""
    import errno
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        try:
            with socket.socket(socket.AF_INET6, kind) as sock:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", port))
            continue
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
        with socket.socket(socket.AF_INET, kind) as sock:   # no IPv6 here
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True


def installed(folder):
    """Write the `masq` launcher the installation writes (tools/launcher.py: Python -IS,
    no site-packages) for this checkout into folder; return its path. A process started
    by it has the memory of an installed masq, not of one under pytest's interpreter."""
    path = os.path.join(folder, "masq")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "launcher.py"),
                           sys.executable, ROOT], capture_output=True, text=True, check=True)
    with open(path, "w") as out:
        out.write(done.stdout)
    os.chmod(path, 0o755)
    return path


class Daemon:
    """`masq daemon` in a subprocess, for end-to-end tests."""

    def __init__(self, conf, wait_port=None, launcher=None):
        self.conf = conf
        self.wait_port = wait_port
        self.launcher = launcher    # a launcher made by `installed()`, or python -m masq
        self.proc = None

    def start(self):
        """Start the daemon and wait until it answers."""
        import time
        environ = dict(os.environ, PYTHONPATH=ROOT)
        # the output goes to a file, not a pipe: a daemon that logs more than a pipe holds
        # (64 KB) before the test reads it would block on its next log line
        self.output = tempfile.TemporaryFile()
        command = [self.launcher] if self.launcher else [sys.executable, "-m", "masq"]
        self.proc = subprocess.Popen(command + ["-C", self.conf, "daemon"],
                                     stdout=self.output, stderr=subprocess.STDOUT,
                                     env=environ, cwd=ROOT)
        deadline = time.time() + 60            # a bound on a hung start, not a timing
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("daemon exited: %s" % self._read())
            if self._ready():
                return self
            time.sleep(0.05)
        raise RuntimeError("daemon did not come up: %s" % self._read())

    def _ready(self):
        import socket
        if self.wait_port:
            try:
                socket.create_connection(("127.0.0.1", self.wait_port), 0.2).close()
                return True
            except OSError:
                return False
        spool = _spool_of(self.conf)
        return os.path.exists(os.path.join(spool, "control.sock"))

    def stop(self, sig=None):
        """Stop the daemon (SIGTERM, or sig) and return its output."""
        import signal
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        out = self._read()
        self.output.close()
        return out

    def log_so_far(self):
        """Return what the running daemon has written so far."""
        return self._read()

    def _read(self):
        self.output.seek(0)
        return self.output.read().decode("utf-8", "replace")


def _spool_of(conf):
    for line in open(conf):
        parts = line.split()
        if parts[:2] == ["option", "spool_dir"]:
            return parts[2].strip("'")
    raise ValueError("no spool_dir in %s" % conf)


def absent_users(*names):
    """Return names after checking that no account on this machine has one of them.

    Tests that deliver to local users who are not system accounts use names of their own
    (mq-prefixed) so that a machine with a real `bob` does not change what they test."""
    import pwd
    taken = []
    for name in names:
        try:
            pwd.getpwnam(name)
            taken.append(name)
        except KeyError:
            pass
    if taken:
        raise RuntimeError("test user names already exist on this machine: %s" % ", ".join(taken))
    return names


# An online file that never exists: a detector watching it keeps its route offline. It lies
# in a folder of the test run's own, so no file on the machine can bring the route up.
OFFLINE = "file:" + os.path.join(tempfile.mkdtemp(prefix="masq-offline-"), "absent")


@contextlib.contextmanager
def small_tmpfs(size, prefix="masq-tmpfs-"):
    """Mount a tmpfs of size (e.g. '1m') on a fresh folder; yield its pathlib.Path.

    Skips the test when it cannot mount (not root). The folder lies outside pytest's
    tmp_path: concurrent pytest runs rename old tmp_path folders, and a mount moved with one
    could no longer be unmounted by its old name."""
    import pathlib
    import pytest
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        os.rmdir(path)
        pytest.skip("cannot mount tmpfs: %s" % done.stderr.decode().strip())
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)])
        os.rmdir(path)


def fill_disk(folder):
    """Fill the file system of folder to the last byte; return the filler's path."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    try:
        while os.write(fd, b"x"):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler
