"""Review finding R3: a failed group fdatasync withdrew the bounce DSN (ABORTED) but keeps the RESULT that
says the recipient bounced: the sender is never told, and nothing retries it.

Scheduler batch: permanent failure -> results.record queues a DSN (COMMIT, tracked as an
unsynced commit) and appends RESULT bounced; the batch's fdatasync fails (EIO) ->
Store.sync withdrew every tracked commit (the DSN), the RESULT stayed applied in the index
(and in the file: the read-back check finds it whole). Scheduler._synced only pauses.
Now the daemon's own messages (DSNs, forwarded copies) are written again after a failed
sync, never withdrawn and never trusted; only clients' commits are withdrawn."""
import errno
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from masq.outbound import scheduler as sched
from masq.outbound.outcome import Outcome
from masq.queue.envelope import Envelope
from masq.queue.spool import LogError, Queue
from test_scheduler import HOUR, Host


def test_failed_sync_does_not_lose_the_bounce(tmp_path, monkeypatch):
    host = Host(tmp_path, main="\toption do_queue '1'\n", disk=True)
    host.route("isp").answer = lambda a: (Outcome.perm("5.1.1", "no such user")
                                          if a.startswith("bad") else Outcome.ok())
    msgid = host.send("bad@example.org")
    real = os.fdatasync
    fails = {"n": 1}

    def fdatasync(fd):
        if fails["n"]:
            fails["n"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    host.scheduler.flush()
    host.turn()
    assert fails["n"] == 0                               # the batch's sync failed once
    for _ in range(5):                                   # the disk is fine again
        host.later(sched.PROBE)
    host.later(HOUR)
    host.scheduler.flush()
    host.turn()
    bounce_jobs = [j for j in host.route("isp").jobs if j.sender == ""]
    original = host.queue.get(msgid)
    dsns = host.dsns("bounce")
    # acceptable: a DSN went out or is queued, or the original still waits
    assert bounce_jobs or dsns or original is not None, \
        "recipient bounced, DSN withdrawn: sender never told"
    host.queue.close()
    q = Queue(str(tmp_path / "spool"), volatile_ok=True).open("runner")
    try:                                                  # same after a restart
        assert bounce_jobs or [m for m in q.live() if m.envelope.origin == "bounce"] \
            or q.get(msgid)
    finally:
        q.close()


def failing_once(monkeypatch):
    real = os.fdatasync
    fails = {"n": 1}

    def fdatasync(fd):
        if fails["n"]:
            fails["n"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return fails


def test_failed_sync_writes_the_daemons_own_message_again(tmp_path, monkeypatch):
    """A DSN whose sync failed is on disk after the next good sync, in a fresh copy (its
    first pages are not trusted); a client's commit in the same sync is withdrawn."""
    spool = str(tmp_path / "spool")
    q = Queue(spool, volatile_ok=True).open("runner")
    own = q.writer(own=True)
    own.write(b"Subject: bounce\r\n\r\n" + b"b" * 70000)
    own.commit(Envelope("", ["sender@example.org"], received=1, origin="bounce"))
    client = q.writer()
    client.write(b"Subject: client\r\n\r\nhello\r\n")
    client.commit(Envelope("a@example.org", ["b@example.org"], received=1))
    fails = failing_once(monkeypatch)
    with pytest.raises(LogError):
        q.sync()
    assert fails["n"] == 0
    assert q.get(client.id) is None                      # withdrawn: the client retries
    copies = q.store.get(own.id).at
    q.sync()                                             # the disk is fine again
    text = b"".join(q.body(own.id))
    q.close()
    q = Queue(spool, volatile_ok=True).open("runner")
    try:
        msg = q.get(own.id)
        assert msg is not None and msg.envelope.origin == "bounce"
        assert msg.at == copies                          # the copy written after the failure
        assert b"".join(q.body(own.id)) == text
        assert q.get(client.id) is None
    finally:
        q.close()
