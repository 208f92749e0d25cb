"""A delivery whose message text fails part-way is a temporary failure, never a truncated
success: a pipe (pipe route, |command alias, MDA), a mailbox write (mbox, maildir, in the
daemon or in a child) and an SMTP session.

The first test is the reviewer's path (compaction copies the message forward and deletes
its old segment while a pipe reads it: the reader used to raise KeyError mid-way and the
command got a clean EOF, recorded as delivered); the others break the text on purpose, with
the queue's own error and with errors no agent expects.
"""
import os

import pytest

from masq.base.loop import Loop
from masq.outbound.command import run_command
from masq.outbound.job import Job
from masq.outbound.local import LocalAgent, LocalSettings
from masq.outbound.outcome import TEMPFAIL
from masq.queue.envelope import Envelope
from masq.queue.spool import Queue
from masq.queue.store import CHUNK, TextUnreadable

import test_smtp_agent as smtp_tests

Controller = pytest.importorskip("aiosmtpd.controller").Controller

SEG = 3 * CHUNK


def test_pipe_delivery_never_gets_a_truncated_text(tmp_path):
    q = Queue(str(tmp_path / "spool"), segment_size=SEG).open("runner")
    w = q.writer()
    text = b"Subject: big\r\n\r\n" + b"z" * (4 * CHUNK)
    w.write(text)
    w.commit(Envelope("a@x", ["b@y"], received=1))
    for i in range(30):
        d = q.writer()
        d.write(b"d" * 20000)
        d.commit(Envelope("a@x", ["b@y"], received=1))
        q.remove(d.id, "t")
    q.sync()
    loop = Loop()
    errors = []
    loop.on_error = errors.append                    # as the daemon: log and go on
    loop.at_turn_end(q.compact_step)                 # as the daemon's _turn_end
    out = tmp_path / "out"
    result = []
    run_command(loop, ["/bin/sh", "-c", "cat > %s" % out], dict(os.environ),
                q.body(w.id), 30, 4096, result.append)
    loop.run_until(lambda: result, 60)
    q.close()
    got = out.read_bytes()
    print(result[0].kind, len(got), len(text), errors)
    assert not (result[0].is_ok and got != text), \
        "delivered (%s) with %d of %d bytes; loop errors: %r" % (
            result[0].kind, len(got), len(text), errors)


# The class: any agent whose text fails part-way defers, and leaves no (short) copy behind.

TEXT = b"Subject: half\r\n\r\n" + b"x" * (3 * CHUNK)


def failing_text(error):
    """Return an open_body whose text breaks after its first chunk with error."""
    def chunks():
        yield TEXT[:CHUNK]
        yield TEXT[CHUNK:2 * CHUNK]
        raise error
    return chunks


ERRORS = [KeyError(7), RuntimeError("a bug"), TextUnreadable("segment 3 is gone")]


def run_until(loop, got, timeout=60):
    assert loop.run_until(lambda: got, timeout), "the agent never answered"
    return got[0]


@pytest.mark.parametrize("error", ERRORS, ids=repr)
def test_command_is_killed_when_its_text_breaks(tmp_path, error):
    loop, got = Loop(), []
    out = tmp_path / "out"
    run_command(loop, ["/bin/sh", "-c", "cat > %s" % out], dict(os.environ),
                failing_text(error)(), 30, 4096, got.append)
    outcome = run_until(loop, got)
    loop.close()
    assert (outcome.kind, outcome.status) == (TEMPFAIL, "4.3.0"), outcome.text
    assert "cannot read the message" in outcome.text


@pytest.mark.parametrize("in_child", [False, True])
@pytest.mark.parametrize("method", ["mbox", "maildir"])
@pytest.mark.parametrize("error", ERRORS, ids=repr)
def test_mailbox_write_is_undone_when_its_text_breaks(tmp_path, error, method, in_child):
    box = tmp_path / "box"
    conf = LocalSettings("test.example", mailbox="%s:%s" % (method, box),
                         alias_file=str(tmp_path / "aliases"), local_users=["mqtextuser"],
                         in_child=in_child)
    (tmp_path / "aliases").write_text("")
    loop, got = Loop(), []
    job = Job("M1", "a@example.org", ["mqtextuser@test.example"], failing_text(error),
              size=len(TEXT))
    LocalAgent(loop, conf).deliver(job, got.append)
    [outcome] = run_until(loop, got)
    loop.close()
    assert (outcome.kind, outcome.status) == (TEMPFAIL, "4.3.0"), outcome.text
    if method == "mbox":
        assert not box.exists() or box.read_bytes() == b""
    else:
        assert [p for p in box.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("error", ERRORS, ids=repr)
def test_smtp_delivery_never_ends_a_broken_text(error):
    recorder = smtp_tests.Recorder()
    port = smtp_tests.free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        job = Job("M1", "a@me.example", ["b@dest.example"], failing_text(error),
                  size=len(TEXT))
        [outcome] = smtp_tests.deliver(job, smarthost="127.0.0.1:%d" % port, tls="none")
    finally:
        controller.stop()
    assert (outcome.kind, outcome.status) == (TEMPFAIL, "4.3.0"), outcome.text
    assert recorder.messages == []
