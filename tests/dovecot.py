"""A Dovecot (POP3 and IMAP) of the test's own: loopback ports, passwd-file users, a test CA.

Started in the foreground (`dovecot -F -c FILE`) with a configuration in a folder of its
own, removed by stop() (no system service, no system files): mail in `maildir:FOLDER/mail/%u`, owned by `nobody`
(Dovecot refuses mail access as root). The passdb holds plain passwords, so APOP and
CRAM-MD5 work. `deliver(user, text)` drops a message into the user's Maildir/new.
"""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from helpers import free_port

DOVECOT = "/usr/sbin/dovecot"


def available():
    """Return True if dovecot with its POP3 and IMAP servers is installed."""
    return os.path.exists(DOVECOT) and os.path.exists("/usr/lib/dovecot/pop3") and \
        os.path.exists("/usr/lib/dovecot/imap")


def make_ca(folder):
    """Make a test CA and a certificate for localhost/127.0.0.1 signed by it; return paths."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=folder, check=True, capture_output=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    with open(os.path.join(folder, "san.ext"), "w") as out:
        out.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("req", "-x509", *key, "-subj", "/CN=masq test CA", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", *key, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return tuple(os.path.join(folder, n) for n in ("ca.pem", "server.pem", "server.key"))


class Dovecot:
    """One test Dovecot; users: {name: password}."""

    def __init__(self, users, extra=""):
        # its own folder: Dovecot's auth and mail processes (dovecot, nobody) must reach
        # it, and pytest's folders are root's only
        self.folder = tempfile.mkdtemp(prefix="masq-dovecot-")
        self.users = dict(users)
        self.extra = extra
        self.ports = {name: free_port() for name in ("pop3", "pop3s", "imap", "imaps")}
        self.proc = None
        self.nobody = pwd.getpwnam("nobody")
        self.mail = os.path.join(self.folder, "mail")

    def start(self):
        """Write the configuration and start dovecot; wait until its ports answer."""
        os.makedirs(self.mail, exist_ok=True)
        os.chmod(self.folder, 0o755)
        os.chown(self.mail, self.nobody.pw_uid, self.nobody.pw_gid)
        self.ca, cert, key = make_ca(self.folder)
        uid, gid = self.nobody.pw_uid, self.nobody.pw_gid
        with open(os.path.join(self.folder, "passwd"), "w") as out:
            for name, password in self.users.items():
                out.write("%s:{PLAIN}%s:%d:%d::%s/%s\n" % (name, password, uid, gid,
                                                           self.mail, name))
        conf = os.path.join(self.folder, "dovecot.conf")
        with open(conf, "w") as out:
            out.write(CONFIG % dict(base=self.folder, cert=cert, key=key, extra=self.extra,
                                    **self.ports))
        self.log = os.path.join(self.folder, "dovecot.log")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import socket
        deadline = time.time() + 60             # a bound on a hung start, not a timing
        for port in self.ports.values():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError("dovecot did not start: %s" % self.log_text())
                    time.sleep(0.05)
        return self

    def stop(self):
        """Stop dovecot and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def log_text(self):
        """Return what dovecot logged."""
        try:
            with open(self.log) as src:
                return src.read()
        except OSError:
            return ""

    def maildir(self, user):
        """Return the user's Maildir (made if missing)."""
        path = os.path.join(self.mail, user)
        for sub in ("", "new", "cur", "tmp"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
            os.chown(os.path.join(path, sub), self.nobody.pw_uid, self.nobody.pw_gid)
        return path

    def deliver(self, user, text, number=[0]):
        """Put one message (bytes, LF or CRLF lines) into the user's inbox."""
        number[0] += 1
        name = "%d.M%dP%d.test" % (time.time(), number[0], os.getpid())
        path = os.path.join(self.maildir(user), "new", name)
        with open(path, "wb") as out:
            out.write(text.replace(b"\r\n", b"\n"))
        os.chown(path, self.nobody.pw_uid, self.nobody.pw_gid)

    def count(self, user):
        """Return how many messages the user's inbox holds."""
        box = self.maildir(user)
        return len(os.listdir(os.path.join(box, "new"))) + len(os.listdir(
            os.path.join(box, "cur")))

    def clear(self, user):
        """Empty the user's mailbox (and Dovecot's index of it)."""
        shutil.rmtree(os.path.join(self.mail, user), ignore_errors=True)


CONFIG = """\
base_dir = %(base)s/run
state_dir = %(base)s/state
log_path = %(base)s/dovecot.log
protocols = pop3 imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <%(cert)s
ssl_key = <%(key)s
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5 apop
mail_location = maildir:~
first_valid_uid = 1
last_valid_uid = 0
first_valid_gid = 1
default_login_user = dovenull
default_internal_user = dovecot
pop3_uidl_format = %%08Xu%%08Xv
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %(base)s/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%%u %(base)s/passwd
}
service pop3-login {
  inet_listener pop3 {
    port = %(pop3)d
  }
  inet_listener pop3s {
    port = %(pop3s)d
    ssl = yes
  }
}
service imap-login {
  inet_listener imap {
    port = %(imap)d
  }
  inet_listener imaps {
    port = %(imaps)d
    ssl = yes
  }
}
service anvil {
  chroot =
}
service stats {
  inet_listener http {
    port = 0
  }
}
%(extra)s
"""
