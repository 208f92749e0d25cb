"""One validator: what `masq check-config` passes, the daemon and `sendmail` run; what it
refuses, they refuse the same way (exit 78, one line naming the option), and no
configuration reaches exit 70 "internal error" (issue 12 case 10).

Each bad configuration goes to check-config, the daemon and sendmail. Form errors (a
value that can never work) stop every command; host errors (a missing file, an unknown
user, a spool on tmpfs) stop check-config and the daemon, while sendmail, which needs
none of those, still queues the message.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

from helpers import ROOT, free_port, masq, write_config

FORM, HOST = "form", "host"

BAD = [   # (id, text added to the main section, routes, kind, words the error names)
    ("status-listen-open", "\toption status_listen '0.0.0.0:%(port)d'\n", "", FORM,
     "status_password"),
    ("status-listen-garbage", "\toption status_listen 'garbage'\n", "", FORM,
     "status_listen"),
    ("status-listen-name", "\toption status_listen 'router.lan:8025'\n", "", FORM,
     "status_listen"),
    ("tls-cert-missing", "\toption tls_cert '%(base)s/nope.pem'\n"
     "\toption tls_key '%(base)s/nope.key'\n", "", HOST, "tls_cert"),
    ("smtps-without-cert", "\tlist listen 'smtps://127.0.0.1:%(port2)d'\n", "", FORM,
     "tls_cert"),
    ("unknown-user", "\toption user 'mq-no-such-user-x'\n", "", HOST, "mq-no-such-user-x"),
    ("hostname-space", "\toption hostname 'my router'\n", "", FORM, "hostname"),
    ("hostname-newline", "\toption hostname 'router\nbcc: x'\n", "", FORM, "hostname"),
    ("hostname-long", "\toption hostname '%s'\n" % ("a" * 3000), "", FORM, "hostname"),
    ("hostname-empty-label", "\toption hostname 'router..lan'\n", "", FORM, "hostname"),
    ("mbox-relative", "\toption mailbox 'mbox:relative/%%u'\n", "", FORM, "mailbox"),
    ("maildir-relative", "\toption mailbox 'maildir:Maildir'\n", "", FORM, "mailbox"),
    ("mda-bad-placeholder", "\toption mailbox 'mda:/usr/bin/procmail %%x'\n", "", FORM,
     "%x"),
    ("mda-unterminated", "\toption mailbox \"mda:/usr/bin/procmail -a 'oops\"\n", "", FORM,
     "quot"),
    ("pipe-unterminated", "", "config route 'uucp'\n\toption pipe \"/usr/bin/uux - 'x\"\n",
     FORM, "pipe"),
    ("wrapper-bad-placeholder", "",
     "config route 'ssh'\n\toption wrapper '/usr/bin/ssh %%q'\n", FORM, "%q"),
    ("online-pipe-unterminated", "",
     "config route 'isp'\n\toption online 'pipe:/bin/check \"x'\n", FORM, "online"),
    ("alias-file-relative", "\toption alias_file 'etc/aliases'\n", "", FORM, "alias_file"),
    ("dns-server-name", "\toption dns_server 'dns.example:53'\n", "", FORM, "dns_server"),
    ("user-mailbox-relative", "", "config user 'alice'\n\toption mailbox 'mbox:mail/%%u'\n",
     FORM, "mailbox"),
]


@pytest.fixture
def base():
    path = tempfile.mkdtemp(prefix="masq-check-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def bad_config(base, extra, routes):
    values = {"base": base, "port": free_port(), "port2": free_port()}
    return write_config(os.path.join(base, "masq.conf"), os.path.join(base, "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n" % free_port()
                        + extra % values, routes=routes % values)


def one_clear_line(done):
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode != 70 and "Traceback" not in err and "internal error" not in err
    return err


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_a_bad_configuration_is_refused_alike(base, case):
    _, extra, routes, kind, words = case
    conf = bad_config(base, extra, routes)
    checked = masq("-C", conf, "check-config", timeout=60)
    err = one_clear_line(checked)
    assert checked.returncode == 78 and words in err and conf in err, err
    assert len(err.strip().splitlines()) == 1, err
    daemon = masq("-C", conf, "daemon", timeout=60)
    assert daemon.returncode == 78, one_clear_line(daemon)
    assert words in one_clear_line(daemon)
    sent = masq("-C", conf, "-odq", "root", input=b"Subject: x\n\nx\n", timeout=60)
    one_clear_line(sent)
    assert sent.returncode == (78 if kind == FORM else 0), sent.stderr


def test_a_spool_on_tmpfs_is_refused_by_check_config_too(base):
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    shm = tempfile.mkdtemp(dir="/dev/shm", prefix="masq-check-")
    try:
        conf = write_config(os.path.join(base, "masq.conf"), os.path.join(shm, "spool"),
                            extra="\tlist listen 'smtp://127.0.0.1:%d'\n" % free_port())
        done = masq("-C", conf, "check-config", timeout=60)
        assert done.returncode == 78 and b"volatile_spool" in done.stderr, done.stderr
        conf_ok = write_config(os.path.join(base, "masq.conf"), os.path.join(shm, "spool"),
                               extra="\toption volatile_spool '1'\n")
        done = masq("-C", conf_ok, "check-config", timeout=60)
        assert done.returncode == 0, done.stderr
    finally:
        shutil.rmtree(shm, ignore_errors=True)


def test_an_endless_file_is_refused_not_read_forever():
    done = masq("-C", "/dev/zero", "check-config", timeout=60)
    assert done.returncode == 78, done.stderr
    assert b"/dev/zero" in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_good_configuration_says_which_file_and_ends_with_ok(base):
    conf = bad_config(base, "", "")
    done = masq("-C", conf, "check-config", timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert conf in out.splitlines()[0]
    assert out.splitlines()[-1] == "# ok: %s is valid" % conf


def test_the_status_page_listener_is_parsed_where_it_is_checked():
    assert subprocess.run(["grep", "-rn", "def parse_listen", os.path.join(ROOT, "masq")],
                          capture_output=True).stdout.count(b"\n") <= 1
