"""Content filters after acceptance, `pipe:COMMAND` (docs/FILTERS.md): a message passes each
filter once, in order, before routing; the filter's output becomes the message's text; its
exit code says pass, quarantine, reject or tempfail; quarantined mail is listed (mailq,
status JSON) with the filter and reason, released with `masq release` (which skips that
filter) or removed with `masq rm`. Real daemon, real filter processes, an aiosmtpd sink as
the next hop."""

import contextlib
import json
import os
import smtplib
import sys

import pytest

from helpers import Daemon, free_port, masq, status, wait_for, write_config
from sinks import Sink

FILTER = r'''
import os, signal, sys, time
mode = sys.argv[1]
data = sys.stdin.buffer.read()
if mode == "tag":
    sys.stdout.buffer.write(b"X-Filtered-By: " + sys.argv[2].encode() + b"\n" + data)
    sys.exit(0)
if mode == "spam":
    sys.stdout.buffer.write(b"X-Spam-Status: Yes, score=99\n" + data)
    sys.exit(1)
if mode == "reject":
    sys.stderr.write("infected: EICAR-Test-Signature\n")
    sys.exit(77)
if mode == "once":                  # tempfail the first time, pass the second
    mark = sys.argv[2]
    if not os.path.exists(mark):
        open(mark, "w").close()
        sys.exit(75)
    sys.stdout.buffer.write(data)
    sys.exit(0)
if mode == "hang":
    sys.stdout.buffer.write(data[:10])
    sys.stdout.flush()
    time.sleep(600)
if mode == "die":
    sys.stdout.buffer.write(data[:10])
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "empty":
    sys.exit(0)
'''


def configure(folder, lines, extra=""):
    """Write masq.conf in folder: SMTP on a free port, the filters' lines, extra, and a
    route to a sink on another free port; return (conf, smtp_port, sink_port)."""
    smtp_port, sink_port = free_port(), free_port()
    conf = write_config(
        os.path.join(folder, "masq.conf"), os.path.join(folder, "spool"),
        extra="\tlist listen 'smtp://127.0.0.1:%d'\n%s%s" % (smtp_port, lines, extra),
        routes="config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
               % sink_port)
    return conf, smtp_port, sink_port


@contextlib.contextmanager
def running(conf, smtp_port, sink_port=None):
    """Run the daemon of conf, and an aiosmtpd sink on sink_port if given, for a `with`
    block; yield a Run (`daemon`, `sink`) whose `log` is the daemon's output once the
    block is left."""
    with contextlib.ExitStack() as stack:
        run = Run(stack.enter_context(Sink(sink_port)) if sink_port else None)
        run.daemon = Daemon(conf, smtp_port).start()
        try:
            yield run
        finally:
            run.log = run.daemon.stop()


class Run:
    """A running daemon and its sink (see running())."""

    def __init__(self, sink):
        self.sink, self.daemon, self.log = sink, None, None


def setup(tmp_path, filters, extra=""):
    script = tmp_path / "filter.py"
    script.write_text(FILTER)
    lines = "".join("\tlist filter 'pipe:%s %s %s'\n" % (sys.executable, script, f)
                    for f in filters)
    return configure(str(tmp_path), lines, extra)


def send(port, rcpt="bob@remote.example", body=b"Subject: hi\r\n\r\nhello\r\n"):
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.sendmail("alice@sender.example", [rcpt], body)


def queued(conf):
    return status(conf)["queue"]


def test_two_filters_each_see_the_message_once_in_order(tmp_path):
    conf, smtp_port, sink_port = setup(tmp_path, ["tag first", "tag second"])
    with running(conf, smtp_port, sink_port) as run:
        send(smtp_port)
        [(_, rcpts, text)] = run.sink.wait(1, timeout=30)
    log, sink = run.log, run.sink
    assert rcpts == ["bob@remote.example"]
    # the second filter saw the first's output: its header is on top
    assert text.index(b"X-Filtered-By: second") < text.index(b"X-Filtered-By: first")
    assert text.count(b"X-Filtered-By") == 2 and b"\r\nhello\r\n" in text
    assert b"\n" not in text.replace(b"\r\n", b"")        # stored CRLF again
    assert log.count("passed filter") == 2, log
    assert len(sink.messages) == 1


def test_spam_is_quarantined_listed_and_released_past_that_filter(tmp_path):
    conf, smtp_port, sink_port = setup(tmp_path, ["spam", "tag after"])
    with running(conf, smtp_port, sink_port) as run:
        send(smtp_port)
        assert wait_for(lambda: any(m["quarantined"] for m in queued(conf)), 30)
        [msg] = queued(conf)
        held = msg["quarantined"]
        assert held["filter"].startswith("pipe:") and held["filter"].endswith("spam")
        assert held["reason"] == "Yes, score=99"
        listing = masq("queue", "-C", conf).stdout.decode()
        assert msg["id"] in listing and "QUARANTINED" in listing and "score=99" in listing
        assert run.sink.messages == []
        done = masq("release", "-C", conf, msg["id"])
        assert done.returncode == 0, done.stderr
        assert "%s: released" % msg["id"] in done.stdout.decode()
        [(_, _, text)] = run.sink.wait(1, timeout=30)
    # the spam filter's rewrite is kept, it did not run again, the next filter did
    assert text.count(b"X-Spam-Status: Yes") == 1 and b"X-Filtered-By: after" in text


def test_release_refuses_what_a_filter_did_not_quarantine(tmp_path):
    conf, smtp_port, _ = setup(tmp_path, ["tag x"])
    done = masq("-C", conf, "-odq", "bob@remote.example", input=b"Subject: x\n\nbody\n")
    assert done.returncode == 0, done.stderr
    [msg] = queued(conf)
    done = masq("release", "-C", conf, msg["id"], "nosuchid")
    assert done.returncode == 65
    error = done.stderr.decode()
    assert "not quarantined by a filter" in error and "no such message" in error


def test_a_quarantined_message_is_removed_with_rm(tmp_path):
    conf, smtp_port, _ = setup(tmp_path, ["spam"])
    with running(conf, smtp_port):
        send(smtp_port)
        assert wait_for(lambda: any(m["quarantined"] for m in queued(conf)), 30)
        [msg] = queued(conf)
        done = masq("rm", "-C", conf, msg["id"])
        assert done.returncode == 0, done.stderr
        assert queued(conf) == []


def test_reject_bounces_with_the_filters_reason(tmp_path):
    conf, smtp_port, sink_port = setup(tmp_path, ["reject"])
    with running(conf, smtp_port, sink_port) as run:
        send(smtp_port)
        [(sender, rcpts, text)] = run.sink.wait(1, timeout=30)
    assert sender in ("", "<>") and rcpts == ["alice@sender.example"]
    assert b"5.7.1" in text and b"infected: EICAR-Test-Signature" in text
    assert queued(conf) == []


@pytest.mark.parametrize("mode", ["hang", "die", "empty"])
def test_a_filter_that_fails_keeps_the_message_unfiltered(tmp_path, mode):
    conf, smtp_port, sink_port = setup(tmp_path, [mode], "\toption filter_timeout '1s'\n")
    with running(conf, smtp_port, sink_port) as run:
        send(smtp_port)
        assert wait_for(lambda: "tried again later" in run.daemon.log_so_far(), 30)
        [msg] = queued(conf)
    log = run.log
    assert run.sink.messages == []
    assert msg["quarantined"] is None and msg["recipients"][0]["state"] == "queued"
    why = {"hang": "timed out after 1s", "die": "killed by signal 9",
           "empty": "printed no message"}[mode]
    assert why in log
    dump = masq("queue", "--dump", "-C", conf).stdout.decode()
    assert dump.count("COMMIT %s" % msg["id"]) == 1, dump        # no verdict recorded


def test_tempfail_is_tried_again_later(tmp_path):
    mark = tmp_path / "tried"
    conf, smtp_port, sink_port = setup(tmp_path, ["once %s" % mark],
                                       "\toption retry_interval '1s'\n")
    with running(conf, smtp_port, sink_port) as run:
        send(smtp_port)
        [(_, _, text)] = run.sink.wait(1, timeout=30)
    assert mark.exists() and "tried again later" in run.log and "passed filter" in run.log


def test_the_daemons_own_bounces_are_not_filtered(tmp_path):
    conf, smtp_port, sink_port = setup(tmp_path, ["tag x"])
    with running(conf, smtp_port, sink_port) as run:
        send(smtp_port, rcpt="perm-nobody@remote.example")
        [(sender, _, text)] = run.sink.wait(1, timeout=30)
    assert sender in ("", "<>")
    assert text.count(b"X-Filtered-By: x") == 1    # the returned original, not the DSN


def test_status_json_without_filters_says_null(tmp_path):
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"))
    done = masq("-C", conf, "-odq", "bob@remote.example", input=b"Subject: x\n\nbody\n")
    assert done.returncode == 0, done.stderr
    out = masq("status", "--json", "-C", conf).stdout
    assert json.loads(out)["queue"][0]["quarantined"] is None
    assert os.path.isdir(tmp_path / "spool")


# crashes: the daemon SIGKILLed while a filter runs, and after its verdict

SLOW = r'''
import os, sys, time
mark, pidfile = sys.argv[1], sys.argv[2]
open(pidfile, "w").write(str(os.getpid()))
data = sys.stdin.buffer.read()
sys.stdout.buffer.write(b"X-Half: yes\n" + data[:len(data) // 2])
sys.stdout.flush()
open(mark, "w").close()
time.sleep(600)
'''


def test_daemon_killed_while_filtering_filters_again_and_delivers_once(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW)
    mark, pidfile = tmp_path / "half", tmp_path / "filter.pid"
    conf, smtp_port, sink_port = setup(tmp_path, ["tag x"])
    text = open(conf).read()
    body = b"Subject: big\r\n\r\n" + (b"0123456789abcdef" * 60 + b"\r\n") * 400 + b"end\r\n"
    with open(conf, "w") as out:      # first run: a filter that stops half way (>64 KiB)
        out.write(text.replace("%s tag x" % (tmp_path / "filter.py"),
                               "%s %s %s" % (slow, mark, pidfile)))
    try:
        with running(conf, smtp_port) as run:
            send(smtp_port, body=body)
            assert wait_for(mark.exists, 30), run.daemon.log_so_far()
            run.daemon.proc.kill()                  # SIGKILL, the filter half way
            run.daemon.proc.wait()
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), 9)
    dump = masq("queue", "--dump", "-C", conf).stdout.decode()
    assert dump.count("BODY") > 3        # the half text reached the log, uncommitted
    [msg] = queued(conf)
    with open(conf, "w") as out:
        out.write(text)
    with running(conf, smtp_port, sink_port) as run:
        [(_, _, got)] = run.sink.wait(1, timeout=60)
        assert wait_for(lambda: queued(conf) == [], 30)
    assert len(run.sink.messages) == 1
    assert b"X-Half" not in got and got.count(b"X-Filtered-By: x") == 1
    assert got.endswith(body[len(b"Subject: big\r\n\r\n"):]) and msg["size"] > len(body)


def test_daemon_killed_after_the_verdict_keeps_it(tmp_path):
    online = tmp_path / "online"
    conf, smtp_port, sink_port = setup(tmp_path, ["tag x"])
    with open(conf, "a") as out:
        out.write("\toption online 'file:%s'\n" % online)
    with running(conf, smtp_port) as run:
        send(smtp_port)
        assert wait_for(lambda: "passed filter" in run.daemon.log_so_far(), 30), \
            run.daemon.log_so_far()
        run.daemon.proc.kill()
        run.daemon.proc.wait()
    online.write_text("isp\n")
    with running(conf, smtp_port, sink_port) as run:
        assert run.sink.wait(1, timeout=60), run.daemon.log_so_far()
        [(_, _, got)] = run.sink.messages
        assert wait_for(lambda: queued(conf) == [], 30)
    assert got.count(b"X-Filtered-By: x") == 1 and "passed filter" not in run.log
    assert len(run.sink.messages) == 1


def test_the_filter_runs_as_option_user(tmp_path):
    from local_user import SYSTEM_PYTHON, LocalUser, needs_root, open_dir
    import shutil
    needs_root()
    base = open_dir()
    try:
        script = os.path.join(base, "uid.py")
        with open(script, "w") as out:
            out.write("import os, sys\ndata = sys.stdin.buffer.read()\n"
                      "sys.stdout.buffer.write(b'X-Filter-Uid: %d\\n' % os.getuid() + data)\n")
        os.chmod(script, 0o644)
        with LocalUser() as user:
            conf, smtp_port, sink_port = configure(
                base, "\toption user '%s'\n\tlist filter 'pipe:%s %s'\n"
                % (user.name, SYSTEM_PYTHON, script))
            with running(conf, smtp_port, sink_port) as run:
                send(smtp_port)
                assert run.sink.wait(1, timeout=60), run.daemon.log_so_far()
                [(_, _, text)] = run.sink.messages
            assert b"X-Filter-Uid: %d\r\n" % user.uid in text
    finally:
        shutil.rmtree(base, ignore_errors=True)
