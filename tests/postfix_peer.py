"""Postfix as a test peer: its real smtpd as a next hop (`PostfixSmtpd`), or a whole
private Postfix (`PostfixMaster`) as a retrying client, each with its own configuration
directory.

`PostfixSmtpd`:

No Postfix queue, master or cleanup daemon: each connection accepted on 127.0.0.1:port
gets its own `smtpd -S` (stand-alone, as inetd would run it) as the `postfix` user,
through a relay that notes the BDAT and DATA commands the client sends (`commands`; with
`tap=False` smtpd gets the connection itself, no relay: benchmarks, where a relay in Python
would be what is measured), and smtpd passes every transaction on, before its own queue, to
the SMTP server at next_port (`smtpd_proxy_filter`). The address resolver smtpd asks
(`private/rewrite`) is Postfix's `trivial-rewrite`, run the same way on a UNIX socket; run
stand-alone it does not announce its protocol as it does under master(8), so the test says
it for it first. So masq talks to Postfix's own SMTP engine (CHUNKING, PIPELINING,
8BITMIME, SMTPUTF8, SIZE), and what Postfix accepted lands in the server behind it (an
smtp-sink, for instance). smtpd logs to syslog; without one, its log is lost.
"""

import os
import pwd
import select
import shutil
import socket
import subprocess
import tempfile
import threading

DAEMONS = "/usr/lib/postfix/sbin/"
ANNOUNCE = {"trivial-rewrite": b"protocol\0trivial_rewrite_protocol\0\0"}   # attr_print0

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
myhostname = postfix.test.example
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
local_recipient_maps =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_proxy_filter = 127.0.0.1:{next_port}
smtpd_proxy_timeout = 600s
message_size_limit = {size}
smtpd_banner = $myhostname ESMTP
{extra}
"""


class PostfixSmtpd:
    """Postfix's smtpd on 127.0.0.1:port relaying (before its queue) to next_port."""

    def __init__(self, port, next_port, size=1 << 30, tap=True, **params):
        self.port, self.next_port, self.size, self.params = port, next_port, size, params
        self.tap = tap              # False: smtpd gets the connection itself, no relay
        self.dir, self.listeners, self.threads = None, [], []
        self.children = []
        self.commands = []          # what clients sent that starts like BDAT or DATA

    def __enter__(self):
        user = pwd.getpwnam("postfix")
        self.dir = tempfile.mkdtemp(prefix="masq-postfix-")
        os.chmod(self.dir, 0o755)
        for name in ("queue", "data"):
            os.mkdir(os.path.join(self.dir, name))
            os.chown(os.path.join(self.dir, name), user.pw_uid, user.pw_gid)
        extra = "".join("%s = %s\n" % item for item in self.params.items())
        main_cf = os.path.join(self.dir, "main.cf")
        with open(main_cf, "w") as out:
            out.write(MAIN_CF.format(dir=self.dir, next_port=self.next_port, size=self.size,
                                     extra=extra))
        aged = os.stat(main_cf).st_mtime - 60    # Postfix waits for a file 2 s old to settle
        os.utime(main_cf, (aged, aged))
        private = os.path.join(self.dir, "queue", "private")
        os.mkdir(private)
        os.chown(private, user.pw_uid, user.pw_gid)
        rewrite = socket.socket(socket.AF_UNIX)
        rewrite.bind(os.path.join(private, "rewrite"))
        os.chown(os.path.join(private, "rewrite"), user.pw_uid, user.pw_gid)
        smtp = socket.socket()
        smtp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        smtp.bind(("127.0.0.1", self.port))
        self.listeners = [rewrite, smtp]
        self.threads = []
        for sock, daemon in ((rewrite, "trivial-rewrite"), (smtp, "smtpd")):
            sock.listen(16)
            thread = threading.Thread(target=self._accept, args=(sock, daemon, user),
                                      daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _accept(self, sock, daemon, user):
        """Start one `daemon -S` per connection accepted on sock (smtpd through the relay
        that notes the commands, unless tap is False)."""
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            if daemon in ANNOUNCE:
                threading.Thread(target=self._broker, args=(conn, daemon, user),
                                 daemon=True).start()
                continue
            theirs = conn       # the daemon gets the connection itself, as from inetd
            if daemon == "smtpd" and self.tap:
                ours, theirs = socket.socketpair()
                threading.Thread(target=_relay, args=(conn, ours, _Tap(self.commands)),
                                 daemon=True).start()
            with theirs:
                self._spawn(daemon, theirs, user)

    def _spawn(self, daemon, sock, user):
        """Start `daemon -S` on sock, as the postfix user."""
        self.children.append(subprocess.Popen(
            [DAEMONS + daemon, "-S"], stdin=sock, stdout=sock, stderr=subprocess.DEVNULL,
            cwd=self.dir, env={"MAIL_CONFIG": self.dir, "PATH": "/usr/sbin:/usr/bin:/bin"},
            user=user.pw_uid, group=user.pw_gid, extra_groups=[]))
        self.children = [c for c in self.children if c.poll() is None]

    def _broker(self, conn, daemon, user):
        """Serve a client of a request/reply service (trivial-rewrite): announce its
        protocol, then hand each request to a `daemon -S` of its own. Stand-alone, such a
        daemon answers one request and exits, and smtpd, finding the connection gone,
        would sleep a second before asking again: two or three seconds per transaction."""
        with conn:
            try:
                conn.sendall(ANNOUNCE[daemon])
                reader = _Attributes(conn)
                while True:
                    request = reader.read()
                    if request is None:
                        return
                    ours, theirs = socket.socketpair()
                    with ours:
                        with theirs:
                            self._spawn(daemon, theirs, user)
                        ours.sendall(request)
                        reply = _Attributes(ours).read()
                    if reply is None:
                        return
                    conn.sendall(reply)
            except OSError:
                return

    def __exit__(self, *exc):
        for sock in self.listeners:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(5)
        for child in self.children:
            if child.poll() is None:
                child.terminate()
            child.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class _Tap:
    """Follows a client's SMTP stream and notes its DATA and BDAT commands."""

    def __init__(self, commands):
        self.commands, self.buffer, self.skip, self.in_data = commands, b"", 0, False

    def feed(self, data):
        self.buffer += data
        while self.buffer:
            if self.skip:
                taken = min(self.skip, len(self.buffer))
                self.buffer, self.skip = self.buffer[taken:], self.skip - taken
            elif self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    self.buffer = self.buffer[-4:]
                    return
                self.buffer, self.in_data = self.buffer[end + 5:], False
            else:
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    return
                line, self.buffer = self.buffer[:end].decode("ascii", "replace"), \
                    self.buffer[end + 2:]
                words = line.upper().split()
                if words[:1] == ["BDAT"] and len(words) > 1 and words[1].isdigit():
                    self.commands.append(line)
                    self.skip = int(words[1])
                elif words == ["DATA"]:
                    self.commands.append(line)
                    self.buffer, self.in_data = b"\r\n" + self.buffer, True


class _Attributes:
    """Reads Postfix's attr_print0 records from a socket: name NUL value NUL pairs, ended by
    an empty name."""

    def __init__(self, sock):
        self.sock, self.buffer = sock, b""

    def read(self):
        """Return the next whole record's bytes, or None at the end of the stream."""
        start = 0
        while True:
            end = self.buffer.find(b"\0", start)
            if end == start:                # an empty name: the record ends here
                record, self.buffer = self.buffer[:end + 1], self.buffer[end + 1:]
                return record
            value = -1 if end < 0 else self.buffer.find(b"\0", end + 1)
            if value < 0:                   # a name or its value not yet whole: read on
                data = self.sock.recv(4096)
                if not data:
                    return None
                self.buffer += data
                continue
            start = value + 1


def _relay(a, b, tap):
    """Copy bytes both ways between sockets a and b until one side closes; tap follows
    what a sends."""
    with a, b:
        try:
            while True:
                for sock in select.select([a, b], [], [])[0]:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if tap is not None and sock is a:
                        tap.feed(data)
                    (b if sock is a else a).sendall(data)
        except OSError:
            return


MASTER_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
meta_directory = /etc/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test.example
mydomain = test.example
myorigin = postfix.test.example
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
relayhost = [127.0.0.1]:{next_port}
smtp_dns_support_level = disabled
smtp_tls_security_level = none
alias_maps =
alias_database =
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
{extra}
"""
# No inet service: the instance listens on nothing; no chroot; the delivery agents a
# relaying client needs, and postlogd for maillog_file (there may be no syslog).
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixMaster:
    """A private Postfix (its own config_directory and queue_directory under a temporary
    folder, master(8) started with `postfix -c DIR start`) that relays all mail to
    127.0.0.1:next_port. params are added to main.cf (e.g. short retry times)."""

    def __init__(self, next_port, **params):
        self.next_port, self.params, self.dir = next_port, params, None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="masq-postfix-master-")
        os.chmod(self.dir, 0o755)
        os.mkdir(os.path.join(self.dir, "data"))
        user = pwd.getpwnam("postfix")
        os.chown(os.path.join(self.dir, "data"), user.pw_uid, user.pw_gid)
        extra = "".join("%s = %s\n" % item for item in self.params.items())
        with open(os.path.join(self.dir, "main.cf"), "w") as out:
            out.write(MASTER_MAIN_CF.format(dir=self.dir, next_port=self.next_port,
                                            extra=extra))
        with open(os.path.join(self.dir, "master.cf"), "w") as out:
            out.write(MASTER_CF)
        os.mkdir(os.path.join(self.dir, "queue"))
        done = self.postfix("start")
        if done.returncode != 0:
            log = self.log()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError("postfix -c DIR start failed: %s %s" % (done.stdout, log))
        return self

    def postfix(self, command):
        """Run `postfix -c DIR COMMAND`; return the CompletedProcess."""
        return subprocess.run(["/usr/sbin/postfix", "-c", self.dir, command],
                              capture_output=True, timeout=60)

    def sendmail(self, sender, recipients, text):
        """Submit text (bytes) with Postfix's sendmail(1) into this instance."""
        return subprocess.run(["/usr/sbin/sendmail", "-C", self.dir, "-f", sender, "-i"]
                              + list(recipients), input=text, capture_output=True,
                              timeout=60)

    def log(self):
        """Return what the instance logged so far (its maillog_file)."""
        try:
            with open(os.path.join(self.dir, "maillog"), encoding="utf-8",
                      errors="replace") as src:
                return src.read()
        except OSError:
            return ""

    def __exit__(self, *exc):
        pid = None
        try:
            with open(os.path.join(self.dir, "queue", "pid", "master.pid")) as src:
                pid = int(src.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        self.postfix("stop")
        for _ in range(600):                # master ends its children, then itself
            if pid is None or not os.path.exists("/proc/%d" % pid):
                break
            threading.Event().wait(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)
