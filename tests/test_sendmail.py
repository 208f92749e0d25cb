"""`sendmail` submission end to end: flags, headers, errors and exit codes, mailq, mailrm."""

import os
import shutil
import subprocess
import tempfile

import pytest

from helpers import ROOT, masq, write_config
from masq.queue.spool import Queue


@pytest.fixture
def conf(tmp_path):
    spool = tmp_path / "spool"
    return write_config(str(tmp_path / "masq.conf"), str(spool),
                        extra="\toption max_message_size '200k'\n")


def stored(conf_path):
    """Return [(envelope, text)] of the live messages in the test spool."""
    spool = os.path.join(os.path.dirname(conf_path), "spool")
    queue = Queue(spool).open("read")
    try:
        return [(m.envelope, b"".join(queue.store.body(m.id))) for m in queue.store.live()]
    finally:
        queue.close()


def test_done_when_t_then_bp_lists_it(conf):
    done = masq("-C", conf, "-t", input=b"To: a@example.org\n\nhi\n")
    assert done.returncode == 0, done.stderr
    listing = masq("-C", conf, "-bp")
    assert listing.returncode == 0
    assert b"<a@example.org>" in listing.stdout
    assert b"queued" in listing.stdout
    [(env, text)] = stored(conf)
    assert env.recipients[0].address == "a@example.org"
    assert text.endswith(b"\r\n\r\nhi\r\n")


def test_headers_added_and_bcc_removed(conf):
    msg = (b"To: Someone <a@example.org>, group: b@example.org, \"q u\"@example.org;\n"
           b"Cc: c@example.org (comment)\nBcc: secret@example.org\n"
           b"Subject: test\n\nbody line\n..double dot kept\n")
    done = masq("-C", conf, "-t", "-F", "Alice Example", input=msg)
    assert done.returncode == 0, done.stderr
    [(env, text)] = stored(conf)
    rcpts = [r.address for r in env.recipients]
    assert rcpts == ["a@example.org", "b@example.org", '"q u"@example.org',
                     "c@example.org", "secret@example.org"]
    head, body = text.split(b"\r\n\r\n", 1)
    assert b"Bcc:" not in head and b"secret" not in head
    assert head.startswith(b"Received: ")
    for name in (b"From: Alice Example <", b"Date: ", b"Message-ID: <"):
        assert name in head
    assert body == b"body line\r\n..double dot kept\r\n"
    assert b"\n" not in text.replace(b"\r\n", b"")


def test_lone_dot_ends_input_unless_i(conf):
    assert masq("-C", conf, "x@example.org", input=b"Subject: a\n\none\n.\nlost\n").returncode == 0
    assert masq("-C", conf, "-oi", "y@example.org", input=b"Subject: b\n\none\n.\nkept\n").returncode == 0
    texts = {env.recipients[0].address: text for env, text in stored(conf)}
    assert texts["x@example.org"].endswith(b"\r\n\r\none\r\n")
    assert texts["y@example.org"].endswith(b"one\r\n.\r\nkept\r\n")


def test_unqualified_recipient_gets_our_hostname(conf):
    assert masq("-C", conf, "-odq", "alice", input=b"\nhi\n").returncode == 0
    [(env, _)] = stored(conf)
    assert env.recipients[0].address == "alice@test.example"


@pytest.mark.parametrize("args,status,needle", [
    ([], 64, b"no recipients"),
    (["-X"], 64, b"unknown option -X"),
    (["-bp", "-bd"], 64, b"conflicting modes"),
    (["bad@@address"], 65, b"recipient"),
])
def test_usage_and_data_errors_are_one_line(conf, args, status, needle):
    done = masq("-C", conf, *args, input=b"\nhi\n")
    assert done.returncode == status
    assert needle in done.stderr
    assert done.stderr.count(b"\n") == 1
    assert b"Traceback" not in done.stderr


def test_control_character_in_a_t_recipient_is_refused(conf):
    done = masq("-C", conf, "-t", input=b"To: a\x00b@example.org\n\nhi\n")
    assert done.returncode == 65
    assert stored(conf) == []


def test_too_big_exits_73_and_queues_nothing(conf):
    done = masq("-C", conf, "a@example.org", input=b"\n" + b"x" * 300000 + b"\n")
    assert done.returncode == 73
    assert b"max_message_size" in done.stderr
    assert stored(conf) == []


def test_config_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text("config masq 'main'\n\toption smarthots 'x'\n")
    done = masq("-C", str(path), "a@example.org", input=b"\nhi\n")
    assert done.returncode == 78
    assert ("%s:2:" % path).encode() in done.stderr


def test_mailrm_and_masq_rm_remove(conf):
    for rcpt in ("a@example.org", "b@example.org"):
        assert masq("-C", conf, rcpt, input=b"\nhi\n").returncode == 0
    ids = sorted(env_id(conf))
    done = masq("-C", conf, "-Mrm", ids[0])
    assert done.returncode == 0, done.stderr
    done = masq("-C", conf, ids[1], argv0="mailrm")
    assert done.returncode == 0, done.stderr
    assert masq("-C", conf, argv0="mailq").stdout == b"mail queue is empty\n"
    done = masq("rm", "-C", conf, "nosuchmessage0")
    assert done.returncode == 65 and b"no such message" in done.stderr


def env_id(conf):
    spool = os.path.join(os.path.dirname(conf), "spool")
    queue = Queue(spool).open("read")
    try:
        return [m.id for m in queue.store.live()]
    finally:
        queue.close()


def test_version_and_help():
    assert masq("-bV").stdout.startswith(b"masq ")
    assert masq("--version").stdout.startswith(b"masq ")
    assert b"usage" in masq("--help").stdout
    done = masq("frobnicate")
    assert done.returncode == 64 and b"unknown command" in done.stderr


SYSTEM_PYTHON = "/usr/bin/python3"


def as_nobody():
    os.setgid(65534)
    os.setuid(65534)


@pytest.fixture
def open_dir():
    """A folder that user nobody can enter (pytest's tmp_path is root-only)."""
    if os.getuid() != 0 or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root and %s to run masq as nobody" % SYSTEM_PYTHON)
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import masq"], cwd="/",
                           env={"PYTHONPATH": ROOT}, preexec_fn=as_nobody,
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user nobody cannot read the checkout at %s" % ROOT)
    path = tempfile.mkdtemp(dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def nobody_masq(*args, input=b""):
    return subprocess.run([SYSTEM_PYTHON, "-m", "masq"] + list(args), input=input,
                          capture_output=True, cwd="/", env={"PYTHONPATH": ROOT},
                          preexec_fn=as_nobody, timeout=60)


def test_untrusted_f_is_marked(open_dir):
    conf = write_config(os.path.join(open_dir, "masq.conf"), os.path.join(open_dir, "spool"))
    os.makedirs(os.path.join(open_dir, "spool"))
    os.chmod(os.path.join(open_dir, "spool"), 0o777)
    done = nobody_masq("-C", conf, "-f", "boss@example.org", "a@example.org", input=b"\nhi\n")
    assert done.returncode == 0, done.stderr
    [(env, text)] = stored(conf)
    assert env.sender == "boss@example.org" and env.crlf
    assert b"X-Authentication-Warning:" in text and b"using -f" in text


def test_no_permission_on_spool_is_a_config_error(open_dir):
    conf = write_config(os.path.join(open_dir, "masq.conf"), os.path.join(open_dir, "spool"))
    spool = os.path.join(open_dir, "spool")
    os.makedirs(spool)
    os.chmod(spool, 0o700)
    done = nobody_masq("-C", conf, "a@example.org", input=b"\nhi\n")
    assert done.returncode == 78
    assert b"permission denied" in done.stderr


def test_bad_log_is_never_replaced(conf, tmp_path):
    spool = os.path.join(tmp_path, "spool")
    os.makedirs(spool)
    with open(os.path.join(spool, "queue.log"), "wb") as out:
        out.write(b"garbage" * 100)
    done = masq("-C", conf, "a@example.org", input=b"\nhi\n")
    assert done.returncode == 78 and b"not a masq queue log" in done.stderr
    assert open(os.path.join(spool, "queue.log"), "rb").read() == b"garbage" * 100


def test_check_config_prints_effective_settings(conf):
    done = masq("check-config", "-C", conf)
    assert done.returncode == 0, done.stderr
    assert b"option spool_dir" in done.stdout
    assert b"option max_message_size" in done.stdout


def test_works_without_daemon_and_says_so_with_v(conf):
    done = masq("-C", conf, "-v", "-odq", "a@example.org", input=b"\nhi\n")
    assert done.returncode == 0
    assert b"queued only: no daemon runs" in done.stderr
    done = masq("-C", conf, "-v", "b@example.org", input=b"\nhi\n")
    assert done.returncode == 0
    assert b"no route is online for it now" in done.stderr
