"""Segments and compaction, in one process: rotation, copying forward, a crash or a failed
write at every system call of compaction, damage at every header and record field.

The oracle is what the queue said before: every live message comes back live with its
recipient states and its text, and a damaged one is listed as quarantined, never dropped.
"""

import errno
import os

import pytest

from masq.queue import log as log_mod
from masq.queue import record
from masq.queue.dump import dump_lines
from masq.queue.envelope import DELIVERED, Envelope, Recipient
from masq.queue.log import LogError, segment_name, segment_numbers
from masq.queue.spool import Queue

from helpers import small_tmpfs

SEGMENT = 4096


def commit(queue, n, size=300):
    """Commit message number n (text names n); return its id."""
    writer = queue.writer()
    writer.write(b"Subject: %d\r\n\r\n" % n + b"x" * size + b"\r\n")
    writer.commit(Envelope("s%d@x" % n, ["r%d@y" % n, "q%d@y" % n], received=n))
    return writer.id


def deliver(queue, msgid):
    for index, rcpt in enumerate(queue.get_live(msgid).envelope.recipients):
        queue.record_result(msgid, index, Recipient(rcpt.address, state=DELIVERED))


def snapshot(queue):
    """Return {id: (states, text)} of the live messages."""
    return {m.id: ([r.state for r in m.envelope.recipients], b"".join(queue.body(m.id)))
            for m in queue.live()}


def reopened(spool, segment_size=SEGMENT, volatile_ok=False):
    queue = Queue(spool, volatile_ok=volatile_ok, segment_size=segment_size).open("runner")
    try:
        return snapshot(queue), [(m.id, m.quarantined) for m in queue.listed() if m.quarantined]
    finally:
        queue.close()


def mixed_log(spool, count=60, keep_every=7):
    """Write count messages over several segments; all but every keep_every-th delivered."""
    queue = Queue(spool, segment_size=SEGMENT).open("runner")
    for n in range(count):
        msgid = commit(queue, n)
        if n % keep_every:
            deliver(queue, msgid)
    queue.sync()
    before = snapshot(queue)
    queue.close()
    return before


def test_appends_rotate_and_finished_segments_are_deleted(spool):
    queue = Queue(spool, segment_size=SEGMENT).open("runner")
    peak = 0
    kept = {}
    for n in range(400):                     # sustained: never an idle moment
        msgid = commit(queue, n)
        if n % 50 == 0:
            kept[msgid] = n                  # a few stay queued for long
        else:
            deliver(queue, msgid)
        queue.sync()
        queue.compact_step()
        peak = max(peak, queue.log_size())
    assert queue.compactions > 10
    assert len(segment_numbers(spool)) <= 4
    assert peak <= 5 * SEGMENT
    assert set(snapshot(queue)) == set(kept)
    queue.close()
    live, quarantined = reopened(spool)
    assert set(live) == set(kept) and quarantined == []
    for msgid, n in kept.items():
        assert live[msgid][1].startswith(b"Subject: %d\r\n" % n)


def test_compaction_copies_live_messages_forward(spool):
    before = mixed_log(spool)
    assert len(segment_numbers(spool)) > 3
    queue = Queue(spool, segment_size=SEGMENT).open("runner")
    size = queue.log_size()
    assert queue.compact()
    assert snapshot(queue) == before
    assert queue.log_size() < size / 3
    queue.close()
    assert len(segment_numbers(spool)) <= 2
    assert reopened(spool) == (before, [])


def test_an_old_single_file_log_is_read_and_compacted_away(spool):
    """A spool written by the single-file format (queue.log, 16-byte header) still works."""
    salt = os.urandom(8)
    seed = record.seed(salt)
    body = b"Subject: old\r\n\r\nhello\r\n"
    env = Envelope("a@b", ["c@d"], size=len(body))
    with open(os.path.join(spool, log_mod.LOG_NAME), "wb") as out:
        out.write(b"MASQLOG1" + salt)
        out.write(record.encode(seed, record.BODY, b"0" * 14, body))
        out.write(record.encode(seed, record.COMMIT, b"0" * 14, env.encode()))
    queue = Queue(spool).open("runner")
    assert [m.id for m in queue.live()] == ["0" * 14]
    commit(queue, 1)
    assert queue.compact()
    queue.close()
    assert not os.path.exists(os.path.join(spool, log_mod.LOG_NAME))
    live, _ = reopened(spool)
    assert live["0" * 14][1] == body and len(live) == 2


class Crash(BaseException):
    """A simulated SIGKILL: nothing after it runs, the page cache keeps what was written."""


SYSCALLS = ("write", "fdatasync", "fsync", "link", "unlink", "ftruncate")


class Injector:
    """Makes the k-th queue-file system call (of SYSCALLS) fail: Crash, or an OSError."""

    def __init__(self, monkeypatch, spool, at, error=None):
        self.spool, self.at, self.error, self.calls = spool, at, error, 0
        for name in SYSCALLS:
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(name, real))

    def _ours(self, arg):
        if isinstance(arg, int):
            try:
                arg = os.readlink("/proc/self/fd/%d" % arg)
            except OSError:
                return False
        return isinstance(arg, str) and arg.startswith(self.spool)

    def _wrap(self, name, real):
        def call(*args, **kw):
            if self._ours(args[0]):
                self.calls += 1
                if self.calls == self.at:
                    if self.error is None:
                        raise Crash("%s #%d" % (name, self.at))
                    raise OSError(self.error, os.strerror(self.error))
            return real(*args, **kw)
        return call


def compact_crashing(monkeypatch, queue, spool, at):
    """Compact queue with the at-th system call on spool's files crashing, then close it as
    the kernel does for a killed process; return (whether compaction finished, injector)."""
    injector = Injector(monkeypatch, spool, at)
    try:
        queue.compact()
        finished = True
    except Crash:
        finished = False
    monkeypatch.undo()
    queue.close()
    return finished, injector


def test_a_crash_at_every_system_call_of_compaction_loses_nothing(tmp_path, monkeypatch):
    """SIGKILL (simulated) at each write, sync, link, unlink of a whole compaction: the
    reopened queue is the same, and a second compaction finishes the job."""
    master = str(tmp_path / "master")
    os.mkdir(master)
    before = mixed_log(master)
    at = 1
    while True:
        spool = str(tmp_path / ("crash%d" % at))
        os.system("cp -a %s %s" % (master, spool))
        queue = Queue(spool, segment_size=SEGMENT).open("runner")
        finished, injector = compact_crashing(monkeypatch, queue, spool, at)
        assert reopened(spool) == (before, []), "crash at call %d" % at
        queue = Queue(spool, segment_size=SEGMENT).open("runner")
        queue.compact()
        assert snapshot(queue) == before
        queue.close()
        os.system("rm -rf %s" % spool)
        if finished:
            break
        at += 1
    assert injector.calls > 20 and at == injector.calls + 1


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_a_failed_compaction_never_poisons_the_next(tmp_path, monkeypatch, error):
    """Disk full or an I/O error at each system call of compaction, once: the step fails,
    the next compaction succeeds and every live message is still deliverable."""
    master = str(tmp_path / "master")
    os.mkdir(master)
    before = mixed_log(master)
    at = 1
    while True:
        spool = str(tmp_path / ("fail%d" % at))
        os.system("cp -a %s %s" % (master, spool))
        queue = Queue(spool, segment_size=SEGMENT).open("runner")
        injector = Injector(monkeypatch, spool, at, error)
        try:
            queue.compact()
        except (LogError, OSError):
            pass
        monkeypatch.undo()
        queue.compact()
        assert snapshot(queue) == before, "failure at call %d" % at
        queue.close()
        assert reopened(spool) == (before, []), "failure at call %d" % at
        os.system("rm -rf %s" % spool)
        if injector.calls < at:
            break
        at += 1
    assert at > 20


@pytest.mark.parametrize("offset", range(record.FILE_HEADER_SIZE))
def test_a_flipped_bit_in_a_segment_header_loses_nothing(spool, offset):
    queue = Queue(spool).open("runner")
    for n in range(5):
        commit(queue, n)
    queue.sync()
    before = snapshot(queue)
    queue.close()
    path = os.path.join(spool, segment_name(segment_numbers(spool)[-1]))
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))
    assert reopened(spool) == (before, [])


def records_of(spool):
    """Return [(segment, start, end, kind, id)] from the dump."""
    out = []
    for line in dump_lines(spool):
        span, kind, msgid, _ = (line + " ").split(" ", 3)
        seg, _, span = span.partition(":")
        start, end = span.split("-")
        out.append((int(seg), int(start), int(end), kind, msgid))
    return out


# (name, offset in the record, counted from its start, or from its end if negative)
FIELDS = [("magic", 0), ("type", 2), ("version", 3), ("length", 7), ("id", 12),
          ("payload", 30), ("checksum", -2)]


def _flip_cases():
    return [(kind, field) for kind in ("BODY", "COMMIT", "RESULT", "WARNED", "REMOVED")
            for field in FIELDS]


@pytest.mark.parametrize("kind,field", _flip_cases(), ids=lambda v: str(v[0]) if
                         isinstance(v, tuple) else str(v))
def test_a_flipped_byte_in_any_record_costs_at_most_its_message(spool, kind, field):
    """Every acknowledged message is live afterwards, or listed as quarantined with a
    reason (the one the damaged record belonged to); a damaged COMMIT's text is saved."""
    queue = Queue(spool).open("runner")
    ids = [commit(queue, n, size=200) for n in range(6)]
    queue.record_result(ids[1], 0, Recipient("r1@y", state="deferred", attempts=1,
                                             last_error="451 4.3.0 later"))
    queue.mark_warned(ids[2], 12345.0)
    extra = commit(queue, 99)
    queue.remove(extra, "test")
    queue.sync()
    queue.close()
    victim = ids[3] if kind != "REMOVED" else extra
    rows = [r for r in records_of(spool) if r[3] == kind]
    seg, start, end, _, owner = rows[0] if kind not in ("BODY", "COMMIT") else [
        r for r in rows if r[4] == victim][0]
    name, where = field
    pos = start + where if where >= 0 else end + where
    path = os.path.join(spool, segment_name(seg))
    with open(path, "r+b") as f:
        f.seek(pos)
        byte = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([byte ^ 0x04]))
    live, quarantined = reopened(spool)
    listed = set(live) | {i for i, _ in quarantined}
    assert set(ids) - {owner} <= set(live), (name, quarantined)
    assert set(ids) <= listed, (name, quarantined)
    assert all(why for _, why in quarantined)
    if kind == "COMMIT" and owner not in live:
        saved = os.path.join(spool, "corrupt", "%s.body" % owner)
        assert open(saved, "rb").read().startswith(b"Subject: 3\r\n")
    if quarantined:
        assert os.listdir(os.path.join(spool, "corrupt"))


def test_damage_running_to_the_end_is_saved_before_it_is_cut(spool):
    queue = Queue(spool).open("runner")
    ids = [commit(queue, n) for n in range(3)]
    queue.sync()
    queue.close()
    path = os.path.join(spool, segment_name(segment_numbers(spool)[-1]))
    size = os.path.getsize(path)
    with open(path, "ab") as out:
        out.write(b"Mq" + bytes([record.RESULT, 1]) + b"\0\0\0\x40" + ids[0].encode() + b"torn")
    live, quarantined = reopened(spool)
    assert set(live) == set(ids) and quarantined == []
    assert os.path.getsize(path) == size
    saved = os.listdir(os.path.join(spool, "corrupt"))
    assert len(saved) == 1
    assert open(os.path.join(spool, "corrupt", saved[0]), "rb").read().endswith(b"torn")


def test_an_append_after_a_torn_tail_cuts_and_saves_it_first(spool):
    """A one-shot appender (as sendmail) finds a torn RESULT for an acknowledged message at
    the end: it is saved and cut before the new message lands, so it stays torn, not damage."""
    queue = Queue(spool).open("runner")
    acked = commit(queue, 1)
    queue.sync()
    queue.close()
    path = os.path.join(spool, segment_name(segment_numbers(spool)[-1]))
    with open(path, "ab") as out:
        full = record.encode(0, record.RESULT, acked.encode(), b'{"a":"r1@y","st":"delivered"}')
        out.write(full[:-5])
    appender = Queue(spool).open("append")
    fresh = commit(appender, 2)
    appender.sync()
    appender.close()
    live, quarantined = reopened(spool)
    assert set(live) == {acked, fresh} and quarantined == []
    assert os.listdir(os.path.join(spool, "corrupt"))


def test_a_failed_fdatasync_withdraws_the_commit_instead_of_quarantining(spool, monkeypatch):
    appender = Queue(spool).open("append")
    writer = appender.writer()
    writer.write(b"Subject: x\r\n\r\nhi\r\n")
    writer.commit(Envelope("a@b", ["c@d"]))

    def failing(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(log_mod.os, "fdatasync", failing)
    with pytest.raises(LogError):
        appender.sync()
    writer.abort()
    monkeypatch.undo()
    appender.close()
    assert reopened(spool) == ({}, [])
    kinds = [r[3] for r in records_of(spool)]
    assert kinds.count("ABORTED") == 1


# A property over a model of the queue: random appends, deliveries, compaction steps,
# crashes and byte flips; every acknowledged message that was not delivered and whose
# records were not hit is live or listed as quarantined, and without damage the live set
# is exactly the model's.

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(10, 3000)),
    st.tuples(st.just("deliver"), st.integers(0, 10 ** 6)),
    st.tuples(st.just("compact"), st.integers(1, 5)),
    st.tuples(st.just("crash"), st.just(0)),
    st.tuples(st.just("damage"), st.integers(0, 10 ** 9)),
), min_size=1, max_size=60)


@settings(max_examples=150,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
# both salt checks hit, and the first record too: the salt is found from a later record
@example(ops=[("append", 60), ("damage", 32), ("damage", 1301), ("damage", 592791859)])
def test_model_every_acknowledged_message_is_delivered_or_listed(tmp_path_factory, ops):
    spool = str(tmp_path_factory.mktemp("model"))
    acked, delivered, damaged, hit, unsure = {}, set(), False, set(), False
    queue = Queue(spool, segment_size=2048).open("runner")
    try:
        for n, (op, arg) in enumerate(ops):
            if op == "append":
                msgid = commit(queue, n, size=arg)
                queue.sync()
                acked[msgid] = n
            elif op == "deliver":
                live = [m.id for m in queue.live() if m.id in acked]
                if live:
                    msgid = live[arg % len(live)]
                    deliver(queue, msgid)
                    queue.sync()
                    delivered.add(msgid)
            elif op == "compact":
                for _ in range(arg):
                    queue.compact_step()
            else:
                queue.close()
                if op == "damage":
                    paths = [os.path.join(spool, segment_name(k))
                             for k in segment_numbers(spool)]
                    sizes = [os.path.getsize(p) for p in paths]
                    if sum(sizes) > len(paths) * record.FILE_HEADER_SIZE:
                        pos = arg % sum(sizes)
                        rows = records_of(spool)
                        for number, path, size in zip(segment_numbers(spool), paths, sizes):
                            if pos < size:
                                owner = [r for r in rows if r[0] == number
                                         and r[1] <= pos < r[2]]
                                if owner and owner[0][3] == "DAMAGE":
                                    unsure = True       # a second hit on damaged bytes
                                hit.update(r[4] for r in owner)
                                with open(path, "r+b") as f:
                                    f.seek(pos)
                                    byte = f.read(1)[0]
                                    f.seek(pos)
                                    f.write(bytes([byte ^ 0x20]))
                                damaged = True
                                break
                            pos -= size
                queue = Queue(spool, segment_size=2048).open("runner")
            live = snapshot(queue)
            quarantined = {m.id for m in queue.listed() if m.quarantined}
            waiting = set(acked) - delivered
            if not unsure:
                assert waiting - hit <= set(live) | quarantined, (n, op)
            if not damaged:
                assert set(live) == waiting and not quarantined, (n, op)
                for msgid in live:
                    assert live[msgid][1].startswith(b"Subject: %d\r\n" % acked[msgid])
    finally:
        queue.close()


@pytest.fixture
def tiny_disk():
    """A 1 MiB tmpfs (root only)."""
    with small_tmpfs("1m") as mount:
        yield str(mount)


def test_disk_full_during_compaction_loses_nothing_and_it_resumes(tiny_disk):
    """The disk fills while live messages are copied forward: the step fails, the queue
    stays whole, and once there is room compaction finishes."""
    spool = os.path.join(tiny_disk, "spool")
    queue = Queue(spool, volatile_ok=True, segment_size=SEGMENT).open("runner")
    for n in range(120):
        msgid = commit(queue, n, size=2000)
        if n % 4:
            deliver(queue, msgid)
    queue.sync()
    before = snapshot(queue)
    filler = os.path.join(tiny_disk, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    failures = 0
    for _ in range(200):
        try:
            queue.compact_step()
        except (LogError, OSError):
            failures += 1
    assert failures
    assert snapshot(queue) == before
    queue.close()
    os.unlink(filler)
    assert reopened(spool, volatile_ok=True) == (before, [])
    queue = Queue(spool, volatile_ok=True, segment_size=SEGMENT).open("runner")
    size = queue.log_size()
    assert queue.compact()
    assert queue.log_size() < size
    assert snapshot(queue) == before
    queue.close()


@pytest.mark.parametrize("positions", [(8, 20), (9, 24), (16, 28), (8, 31)])
def test_a_bit_flipped_in_both_salt_copies_loses_nothing(spool, positions):
    """Hits in both copies of the salt (or a copy and the other's check, or the same bit in
    both): the salt is found again from the copies and the first record's checksum."""
    queue = Queue(spool).open("runner")
    for n in range(3):
        commit(queue, n)
    queue.sync()
    before = snapshot(queue)
    queue.close()
    path = os.path.join(spool, segment_name(segment_numbers(spool)[-1]))
    with open(path, "r+b") as f:
        for offset in positions:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0x20]))
    assert reopened(spool) == (before, [])
