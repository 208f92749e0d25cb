"""A large text's flash writes: its segments are made without syncing while it arrives, and
its commit syncs each of them once and the directory once; a crash that leaves a segment
made since the last sync without its header loses nothing acknowledged.

The sync count is measured in-process by wrapping os.fsync and os.fdatasync (the kernel
calls the queue makes); the crash states are the ones a power loss can leave of a segment
whose name reached the disk but whose first page did not (length 0, a torn header, zeros).
"""

import os

import pytest

from masq.queue import log as log_mod
from masq.queue import record
from masq.queue.envelope import Envelope
from masq.queue.log import segment_name, segment_numbers
from masq.queue.spool import Queue, SpoolError

SEGMENT = 64 * 1024          # large texts then fill segments of 1 MiB (log.GROW)
PIECE = 64 * 1024


class Syncs:
    """Records every fsync/fdatasync on a file of the spool (and of the spool itself), with
    the text bytes written before it."""

    def __init__(self, monkeypatch, spool):
        self.spool, self.calls, self.written = os.path.realpath(spool), [], 0
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def _wrap(self, name, real):
        def call(fd):
            path = os.readlink("/proc/self/fd/%d" % fd)
            if path == self.spool or path.startswith(self.spool + "/"):
                self.calls.append((name, os.path.basename(path) if path != self.spool
                                   else ".", self.written))
            return real(fd)
        return call


def write_text(queue, syncs, size, msgid=None):
    """Write a text of size bytes in PIECE pieces; return the Writer (not committed)."""
    writer = queue.writer(msgid)
    writer.write(b"Subject: large\r\n\r\n")
    line = b"x" * 78 + b"\r\n"
    piece = line * (PIECE // len(line))
    sent = 0
    while sent < size:
        writer.write(piece)
        sent += len(piece)
        if syncs is not None:
            syncs.written = sent
    return writer


def small(queue, n):
    writer = queue.writer()
    writer.write(b"Subject: %d\r\n\r\nsmall\r\n" % n)
    writer.commit(Envelope("s@x", ["r%d@y" % n], received=n))
    return writer.id


@pytest.fixture
def spool(tmp_path):
    path = str(tmp_path / "spool")
    os.mkdir(path)
    return path


def test_a_large_text_syncs_only_at_its_commit_once_per_segment_and_the_folder_once(
        spool, monkeypatch):
    queue = Queue(spool, segment_size=SEGMENT).open("runner")
    small(queue, 0)
    queue.sync()
    before = set(segment_numbers(spool))
    syncs = Syncs(monkeypatch, spool)
    writer = write_text(queue, syncs, 6 << 20)
    during = list(syncs.calls)
    writer.commit(Envelope("s@x", ["big@y"], received=1))
    queue.sync()
    made = set(segment_numbers(spool)) - before
    assert len(made) >= 5                        # the text started segments as it came
    assert during == []                          # nothing synced before the last text byte
    files = sorted(name for kind, name, _ in syncs.calls if kind == "fdatasync")
    folders = [name for kind, name, _ in syncs.calls if kind == "fsync"]
    assert files == sorted(segment_name(n) for n in made)                     # one fdatasync per segment it wrote
    assert folders == ["."]                      # the directory once, for all new names
    monkeypatch.undo()
    queue.close()
    queue = Queue(spool, segment_size=SEGMENT).open("runner")
    assert len(b"".join(queue.body(writer.id))) == writer.size
    queue.close()


def test_a_later_sync_of_old_segments_needs_no_folder_fsync(spool, monkeypatch):
    """The directory is fsynced when a new name may not be durable yet, not at every sync;
    which names are durable is shared through queue.lock (another process made them)."""
    queue = Queue(spool, segment_size=SEGMENT).open("runner")
    writer = write_text(queue, None, 3 << 20)
    writer.commit(Envelope("s@x", ["big@y"], received=1))
    queue.sync()
    queue.close()
    sendmail = Queue(spool, segment_size=SEGMENT).open("append")
    syncs = Syncs(monkeypatch, spool)
    small(sendmail, 1)
    sendmail.sync()
    assert [kind for kind, _, _ in syncs.calls] == ["fdatasync"]
    sendmail.close()


def crash_states():
    """What a power loss can leave of a segment made since the last sync."""
    return {
        "empty": lambda data: b"",
        "torn header": lambda data: data[:11],
        "zero header": lambda data: bytes(record.FILE_HEADER_SIZE) + data[
            record.FILE_HEADER_SIZE:],
        "zeros": lambda data: bytes(len(data)),
        "torn garbage": lambda data: b"\x17" * 20 + bytes(12) + data[32:4096],
    }


def unfinished_log(spool):
    """Acknowledged messages, then a large text that started segments and was never
    committed (its writer died); return (acknowledged ids, the segments it made)."""
    queue = Queue(spool, segment_size=SEGMENT).open("runner")
    acknowledged = [small(queue, n) for n in range(3)]
    queue.sync()
    before = set(segment_numbers(spool))
    write_text(queue, None, 4 << 20)
    made = sorted(set(segment_numbers(spool)) - before)
    queue.close()
    return acknowledged, made


@pytest.mark.parametrize("state", sorted(crash_states()))
@pytest.mark.parametrize("which", ["newest", "newest two"])
def test_a_segment_left_without_its_header_is_set_aside_and_nothing_acknowledged_is_lost(
        spool, state, which):
    acknowledged, made = unfinished_log(spool)
    assert len(made) >= 3
    for number in made[-1:] if which == "newest" else made[-2:]:
        path = os.path.join(spool, segment_name(number))
        data = open(path, "rb").read()
        open(path, "wb").write(crash_states()[state](data))
    said = []
    queue = Queue(spool, segment_size=SEGMENT, report=said.append).open("runner")
    assert sorted(m.id for m in queue.live()) == sorted(acknowledged)
    assert not [m for m in queue.listed() if m.quarantined]
    assert any("nothing acknowledged" in line for line in said)
    assert max(segment_numbers(spool)) < made[-1]
    new = small(queue, 9)                       # the log goes on, in a segment made again
    queue.sync()
    queue.close()
    queue = Queue(spool, segment_size=SEGMENT).open("runner")
    assert sorted(m.id for m in queue.live()) == sorted(acknowledged + [new])
    assert all(not m.quarantined for m in queue.listed())
    queue.close()


def test_an_unfinished_segment_before_a_synced_one_is_set_aside_too(spool):
    """sendmail's large text starts segment N (not synced); the daemon's commit rotates
    past it into N+1 and syncs that: a crash can leave N without its header, N+1 whole."""
    sendmail = Queue(spool, segment_size=SEGMENT).open("append")
    write_text(sendmail, None, 2 << 20)          # its writer is then killed
    sendmail.close()
    daemon = Queue(spool, segment_size=SEGMENT).open("runner")
    unfinished = daemon.store.journal.newest.number
    acknowledged = small(daemon, 1)
    daemon.sync()
    daemon.close()
    assert max(segment_numbers(spool)) == unfinished + 1
    open(os.path.join(spool, segment_name(unfinished)), "wb").close()
    queue = Queue(spool, segment_size=SEGMENT).open("runner")
    assert [m.id for m in queue.live()] == [acknowledged]
    assert unfinished not in segment_numbers(spool)
    queue.close()


def test_a_bad_header_before_a_good_segment_is_still_damage(spool):
    """Only a missing header (short, zeros) or a bad one among the newest segments is an
    unfinished segment; bytes that are not a header in front of a good segment are damage."""
    _, made = unfinished_log(spool)
    path = os.path.join(spool, segment_name(made[0]))
    data = open(path, "rb").read()
    open(path, "wb").write(b"not a masq header, no salt".ljust(32, b"!") + data[32:])
    with pytest.raises(SpoolError) as err:
        Queue(spool, segment_size=SEGMENT).open("runner")
    assert err.value.status == 78 and segment_name(made[0]) in str(err.value)


def test_sendmail_sets_an_unfinished_newest_segment_aside_and_appends(spool):
    acknowledged, made = unfinished_log(spool)
    open(os.path.join(spool, segment_name(made[-1])), "wb").close()
    sendmail = Queue(spool, segment_size=SEGMENT).open("append")
    new = small(sendmail, 5)
    sendmail.sync()
    sendmail.close()
    queue = Queue(spool, segment_size=SEGMENT).open("runner")
    assert sorted(m.id for m in queue.live()) == sorted(acknowledged + [new])
    queue.close()


def test_a_made_segment_is_never_half_linked(spool, monkeypatch):
    """The header is written whole before the name exists: a short write (disk full)
    leaves no segment behind, only an error."""
    queue = Queue(spool, segment_size=SEGMENT).open("runner")
    real = os.write

    def short(fd, data):
        if os.readlink("/proc/self/fd/%d" % fd).endswith(".new.%d" % os.getpid()):
            return real(fd, bytes(data)[:10]) if len(data) > 10 else 0
        return real(fd, data)
    monkeypatch.setattr(os, "write", short)
    with pytest.raises(log_mod.LogError):
        write_text(queue, None, 2 << 20)
    monkeypatch.undo()
    assert [n for n in segment_numbers(spool)
            if os.path.getsize(os.path.join(spool, segment_name(n))) < 32] == []
    assert not [name for name in os.listdir(spool) if ".new." in name]
    queue.close()


def _daemon_conf(tmp_path):
    from helpers import write_config
    spool = str(tmp_path / "spool")
    extra = "\toption queue_segment_size '65536'\n\toption max_message_size '64M'\n"
    return spool, write_config(str(tmp_path / "masq.conf"), spool, extra)


def _port(conf):
    for line in open(conf):
        if "smtp://127.0.0.1:" in line:
            return int(line.rsplit(":", 1)[1].strip().strip("'"))
    raise AssertionError("no listener in " + conf)


def _large_text(size):
    line = b"z" * 78 + b"\r\n"
    return b"Subject: large\r\n\r\n" + line * (size // len(line))


def _sane(spool):
    """Open the spool as its runner (recovery runs); return the live texts (from their
    Subject: line on) and what recovery said; nothing quarantined, no damage in the log."""
    said = []
    queue = Queue(spool, segment_size=SEGMENT, report=said.append).open("runner")
    try:
        texts = {b"Subject:" + b"".join(queue.body(m.id)).split(b"\r\nSubject:", 1)[1]
                 for m in queue.live()}             # without the Received: line
        assert not [m for m in queue.listed() if m.quarantined]
        assert queue.store.damage == []
        return texts, said
    finally:
        queue.close()


@pytest.mark.parametrize("when", ["before its 250", "after its 250"])
def test_sigkill_of_the_daemon_while_a_large_message_arrives(tmp_path, when):
    """The daemon is killed (SIGKILL) while a large text has made several segments and
    before its 250, or right after the 250: restarted, the spool is sane, an acknowledged
    message is whole, an unacknowledged one is not there."""
    import signal
    import smtplib
    import socket

    from helpers import Daemon, reply, wait_for

    spool, conf = _daemon_conf(tmp_path)
    port = _port(conf)
    daemon = Daemon(conf, wait_port=port).start()
    try:
        first = b"Subject: first\r\n\r\nacknowledged before\r\n"
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.sendmail("a@example.org", ["far@example.net"], first)
        start = set(segment_numbers(spool))
        text = _large_text(6 << 20)
        if when == "after its 250":
            with smtplib.SMTP("127.0.0.1", port) as client:
                client.sendmail("a@example.org", ["far@example.net"], text)
            daemon.stop(signal.SIGKILL)          # at once after the 250
            expected = {first, text}
        else:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            reply(sock, b"220 ")
            for line in (b"EHLO kill.example", b"MAIL FROM:<a@example.org>",
                         b"RCPT TO:<far@example.net>", b"DATA"):
                sock.sendall(line + b"\r\n")
                reply(sock, b"354 " if line == b"DATA" else b"250 ")
            sock.sendall(text[:5 << 20])
            assert wait_for(lambda: len(set(segment_numbers(spool)) - start) >= 4, 60)
            daemon.stop(signal.SIGKILL)          # several segments made, no final dot
            sock.close()
            expected = {first}
        texts, _ = _sane(spool)
        assert texts == expected
        daemon = Daemon(conf, wait_port=port).start()    # it starts on it, and goes on
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.sendmail("a@example.org", ["far@example.net"], b"Subject: after\r\n\r\nx\r\n")
        daemon.stop()
        texts, _ = _sane(spool)
        assert texts == expected | {b"Subject: after\r\n\r\nx\r\n"}
    finally:
        daemon.stop(signal.SIGKILL)
