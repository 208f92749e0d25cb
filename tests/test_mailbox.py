"""Maildir and mbox writers: formats read back with Python's mailbox module, quoting,
locking, unsafe mailboxes, disk full, crash before link (FAULTS 4.3 #58, #59, #60)."""

import fcntl
import mailbox as pymailbox
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc

import pytest

from masq.base.loop import Loop
from masq.outbound.mailbox import maildir, mbox, write
from masq.outbound.command import run_in_child
from masq.outbound.local import Identity

from fakes import FakeClock

MESSAGE = (b"From: a@example.org\r\nSubject: hi\r\n\r\nline one\r\nFrom the start\r\n"
           b">From quoted\r\n>>From twice\r\nFromage\r\n")
PREFIX = b"Return-Path: <a@example.org>\r\nDelivered-To: bob@test.example\r\n"
ROOT = os.geteuid() == 0


def chunks(data, size=7):
    return [data[i:i + size] for i in range(0, len(data), size)]


def run_loop(loop, until, timeout=10.0):
    return loop.run_until(until, timeout)


# conversions


def reference_quote(text):
    return re.sub(rb"(?m)^(>*From )", rb">\1", text)


def test_from_quoter_streams_like_the_one_shot_rule():
    rng = random.Random(5)
    pieces = [b"From ", b">From ", b">>From x", b"From", b"Fro", b">", b">>", b"\n", b"x",
              b"F", b"rom ", b"\n\n", b"From\n", b">>>>"]
    for _ in range(300):
        text = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) + b"\n"
        quoter, out, pos = mbox.FromQuoter(), [], 0
        while pos < len(text):
            step = rng.randint(1, 6)
            out.append(quoter.feed(text[pos:pos + step]))
            pos += step
        assert b"".join(out) + quoter.finish() == reference_quote(text), text


def test_from_quoter_adds_a_missing_last_newline():
    quoter = mbox.FromQuoter()
    assert quoter.feed(b"abc\nFrom x") + quoter.finish() == b"abc\n>From x\n"


def test_to_lf_handles_crlf_split_across_chunks():
    assert b"".join(write.to_lf([b"a\r", b"\nb\r\n", b"\r", b"\n", b"c\r"])) == b"a\nb\n\nc\r"


# maildir


def test_maildir_delivery_creates_dirs_and_reads_back(tmp_path):
    path = str(tmp_path / "Maildir")
    outcome = maildir.deliver_maildir(path, chunks(MESSAGE), PREFIX, time.time(), hostname="host")
    assert outcome.is_ok, outcome
    for sub in ("tmp", "new", "cur"):
        assert os.stat(os.path.join(path, sub)).st_mode & 0o777 == 0o700
    assert os.stat(path).st_mode & 0o777 == 0o700
    [message] = list(pymailbox.Maildir(path, factory=None))
    raw = bytes(message)
    assert raw.startswith(b"Return-Path: <a@example.org>\nDelivered-To: bob@test.example\n")
    assert b"\r" not in raw and b"\nFrom the start\n" in raw      # no quoting in maildir
    [name] = os.listdir(os.path.join(path, "new"))
    assert re.fullmatch(r"\d+\.M\d{6}P%dQ\d+\.host" % os.getpid(), name)
    assert os.listdir(os.path.join(path, "tmp")) == []


def test_maildir_names_are_unique_and_hostname_sanitised(tmp_path):
    path = str(tmp_path / "md")
    for _ in range(5):
        assert maildir.deliver_maildir(path, [MESSAGE], b"", hostname="a/b:c d", now=1.5).is_ok
    names = os.listdir(os.path.join(path, "new"))
    assert len(set(names)) == 5
    assert all(n.endswith(".a\\057b\\072c\\040d") and "/" not in n for n in names)


def test_fault_60_maildir_crash_after_tmp_before_link_leaves_only_tmp(tmp_path):
    path = str(tmp_path / "md")
    pid = os.fork()
    if pid == 0:                                   # the crash: die where link would run
        os.link = lambda *args, **kw: os._exit(9)
        maildir.deliver_maildir(path, [MESSAGE], b"", time.time())
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    assert len(os.listdir(os.path.join(path, "tmp"))) == 1
    assert os.listdir(os.path.join(path, "new")) == []
    assert maildir.deliver_maildir(path, [MESSAGE], b"", time.time()).is_ok
    assert len(os.listdir(os.path.join(path, "new"))) == 1       # no duplicate
    [stale] = os.listdir(os.path.join(path, "tmp"))
    old = time.time() - maildir.TMP_MAX_AGE - 60
    os.utime(os.path.join(path, "tmp", stale), (old, old))
    assert maildir.deliver_maildir(path, [MESSAGE], b"", time.time()).is_ok
    assert os.listdir(os.path.join(path, "tmp")) == []             # cleaned later
    assert len(os.listdir(os.path.join(path, "new"))) == 2


def test_fault_60_maildir_name_collision_never_overwrites(tmp_path, monkeypatch):
    path = str(tmp_path / "md")
    assert maildir.deliver_maildir(path, [b"first\r\n"], b"", time.time()).is_ok
    [taken] = os.listdir(os.path.join(path, "new"))
    real, names = maildir.unique_name, [taken]
    monkeypatch.setattr(maildir, "unique_name",
                        lambda host, now=None: names.pop() if names else real(host, now))
    assert maildir.deliver_maildir(path, [b"second\r\n"], b"", time.time()).is_ok
    new = os.listdir(os.path.join(path, "new"))
    assert len(new) == 2
    with open(os.path.join(path, "new", taken), "rb") as f:
        assert f.read() == b"first\n"


def test_maildir_that_is_a_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), str(tmp_path / "md"))
    outcome = maildir.deliver_maildir(str(tmp_path / "md"), [MESSAGE], b"", time.time())
    assert (outcome.kind, outcome.status) == ("tempfail", "4.2.0")
    assert os.listdir(str(elsewhere)) == []
    md = tmp_path / "md2"
    md.mkdir()
    os.symlink(str(elsewhere), str(md / "new"))
    outcome = maildir.deliver_maildir(str(md), [MESSAGE], b"", time.time())
    assert (outcome.kind, outcome.status) == ("tempfail", "4.2.0")
    assert "new is not a directory" in outcome.text
    assert os.listdir(str(elsewhere)) == [] and os.listdir(str(md / "tmp")) == []


# mbox


def deliver(path, data=MESSAGE, sender="a@example.org", **kw):
    kw.setdefault("lock_timeout", 0.3)
    return mbox.deliver_mbox(str(path), sender, chunks(data), PREFIX, 1700000000.0, **kw)


def test_mbox_delivery_format_and_mboxrd_quoting(tmp_path):
    path = tmp_path / "mbox"
    assert deliver(path, owner_uid=os.geteuid()).is_ok
    assert deliver(path, sender="").is_ok
    raw = path.read_bytes()
    assert os.stat(path).st_mode & 0o777 == 0o600
    first_line = raw.split(b"\n", 1)[0]
    assert re.fullmatch(rb"From a@example.org  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}",
                        first_line)
    assert b"\nFrom MAILER-DAEMON  " in raw
    assert b"\n>From the start\n>>From quoted\n>>>From twice\nFromage\n\nFrom " in raw
    assert b"\r" not in raw and raw.endswith(b"Fromage\n\n")
    messages = list(pymailbox.mbox(str(path)))
    assert len(messages) == 2
    assert messages[0]["Delivered-To"] == "bob@test.example"
    assert messages[0]["Subject"] == "hi"


def test_mbox_without_final_newline_from_another_writer_is_repaired(tmp_path):
    path = tmp_path / "mbox"
    path.write_bytes(b"From x  Thu Jan  1 00:00:00 1970\nSubject: a\n\nno newline")
    assert deliver(path).is_ok
    assert len(list(pymailbox.mbox(str(path)))) == 2


def test_fault_59_mbox_symlink_is_refused_and_target_untouched(tmp_path):
    target = tmp_path / "passwd"
    target.write_bytes(b"root:x:0:0\n")
    os.symlink(str(target), str(tmp_path / "mbox"))
    outcome = deliver(tmp_path / "mbox")
    assert (outcome.kind, outcome.status) == ("tempfail", "4.2.0")
    assert "symbolic link" in outcome.text
    assert target.read_bytes() == b"root:x:0:0\n"


def test_fault_59_mbox_hardlink_is_refused(tmp_path):
    target = tmp_path / "shadow"
    target.write_bytes(b"secret\n")
    os.link(str(target), str(tmp_path / "mbox"))
    outcome = deliver(tmp_path / "mbox")
    assert (outcome.kind, outcome.status) == ("tempfail", "4.2.0")
    assert "hard links" in outcome.text
    assert target.read_bytes() == b"secret\n"


def test_fault_59_mbox_directory_and_fifo_are_refused_without_blocking(tmp_path):
    os.mkdir(str(tmp_path / "dir"))
    assert deliver(tmp_path / "dir").status == "4.2.0"
    os.mkfifo(str(tmp_path / "fifo"))
    outcome = deliver(tmp_path / "fifo")                 # opening it would block forever
    assert (outcome.kind, outcome.status) == ("tempfail", "4.2.0")


@pytest.mark.skipif(not ROOT, reason="chown needs root")
def test_fault_59_mbox_owned_by_another_user_is_refused(tmp_path):
    path = tmp_path / "mbox"
    path.write_bytes(b"")
    os.chown(str(path), 65534, 65534)
    outcome = deliver(path, owner_uid=0)
    assert (outcome.kind, outcome.status) == ("tempfail", "4.2.0")
    assert "owned by uid 65534" in outcome.text
    assert path.read_bytes() == b""
    assert deliver(path, owner_uid=65534).is_ok


def test_fault_59_fresh_dot_lock_held_times_out_4_2_1(tmp_path):
    path = tmp_path / "mbox"
    (tmp_path / "mbox.lock").write_bytes(b"12345\n")
    clock = FakeClock(wall=time.time())                    # the lock file is fresh
    outcome = deliver(path, lock_timeout=0.3, clock=clock, sleep=clock.advance)
    assert (outcome.kind, outcome.status) == ("tempfail", "4.2.1")
    assert "locked" in outcome.text
    assert clock.monotonic() - 1000.0 == pytest.approx(0.3)     # waited the lock_timeout
    assert os.path.exists(str(tmp_path / "mbox.lock"))           # not ours: left alone


def test_stale_dot_lock_is_broken(tmp_path):
    lock = tmp_path / "mbox.lock"
    lock.write_bytes(b"1\n")
    old = time.time() - mbox.STALE_LOCK - 10
    os.utime(str(lock), (old, old))
    assert deliver(tmp_path / "mbox").is_ok
    assert not lock.exists()


def test_fault_59_fcntl_lock_held_by_another_process_then_released(tmp_path):
    path = tmp_path / "mbox"
    path.write_bytes(b"")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,sys,time\nf=open(sys.argv[1],'a')\n"
         "fcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(30)",
         str(path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        outcome = deliver(path, lock_timeout=0.3)
        assert (outcome.kind, outcome.status) == ("tempfail", "4.2.1")
        assert path.read_bytes() == b""
        assert not (tmp_path / "mbox.lock").exists()              # our dot-lock undone
    finally:
        holder.kill()
        holder.wait()
    assert deliver(path).is_ok
    with open(str(path), "a") as f:                                # and we unlocked
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_dot_lock_not_possible_in_an_unwritable_directory_still_delivers(tmp_path, monkeypatch):
    real = os.open

    def no_lockfiles(path, flags, *args, **kw):
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied")
        return real(path, flags, *args, **kw)

    monkeypatch.setattr(mbox.os, "open", no_lockfiles)
    assert deliver(tmp_path / "mbox").is_ok


def big_message(size):
    block = b"x" * 70 + b"\r\n" + b"From here\r\n"
    yield b"Subject: big\r\n\r\n"
    sent = 0
    while sent < size:
        yield block * 800
        sent += len(block) * 800


def small_fs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here: %s" % done.stderr.decode().strip())
    return mount


def test_fault_58_mbox_disk_full_half_way_truncates_back(tmp_path):
    mount = small_fs(tmp_path)
    try:
        path = mount / "mbox"
        assert deliver(path).is_ok
        before = path.read_bytes()
        outcome = mbox.deliver_mbox(str(path), "a@example.org", big_message(1 << 20),
                                       PREFIX, 1700000000.0, lock_timeout=0.3)
        assert (outcome.kind, outcome.status) == ("tempfail", "4.3.1")
        assert "disk full" in outcome.text
        assert path.read_bytes() == before                         # not corrupted
        assert not (mount / "mbox.lock").exists()
        assert deliver(path).is_ok                                 # and not left locked
        assert len(list(pymailbox.mbox(str(path)))) == 2
    finally:
        subprocess.run(["umount", str(mount)])


def test_fault_58_maildir_disk_full_leaves_nothing_behind(tmp_path):
    mount = small_fs(tmp_path)
    try:
        path = str(mount / "md")
        outcome = maildir.deliver_maildir(path, big_message(1 << 20), b"", time.time())
        assert (outcome.kind, outcome.status) == ("tempfail", "4.3.1")
        assert os.listdir(os.path.join(path, "tmp")) == []
        assert os.listdir(os.path.join(path, "new")) == []
    finally:
        subprocess.run(["umount", str(mount)])


def test_fault_58_mbox_file_size_limit_truncates_back(tmp_path):
    path = tmp_path / "mbox"
    assert deliver(path).is_ok
    before = path.read_bytes()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 5000, len(before) + 5000))
        outcome = mbox.deliver_mbox(str(path), "a@x", big_message(100000), b"", 0.0)
        os.write(write_fd, ("%s %s" % (outcome.kind, outcome.status)).encode())
        os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as result:
        assert result.read() == b"tempfail 4.2.2"
    assert path.read_bytes() == before


def test_writers_stream_with_flat_memory(tmp_path):
    tracemalloc.start()
    try:
        assert mbox.deliver_mbox(str(tmp_path / "mbox"), "a@x", big_message(8 << 20), b"",
                                    0.0).is_ok
        assert maildir.deliver_maildir(str(tmp_path / "md"), big_message(8 << 20), b"",
                                       time.time()).is_ok
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert os.path.getsize(str(tmp_path / "mbox")) > 7 << 20
    assert peak < 2 << 20


# as root: prepare, then write as the user in a child


@pytest.fixture
def public_dir():
    path = tempfile.mkdtemp(dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(not ROOT, reason="needs root to switch users")
@pytest.mark.parametrize("method", ["mbox", "maildir"])
def test_child_prepares_as_root_and_writes_as_the_user(public_dir, method):
    nobody = Identity.of_uid(65534)
    path = os.path.join(public_dir, "spool", "nobody")
    prepare_file = mbox.prepare_mbox if method == "mbox" else maildir.prepare_maildir

    def prepare():
        prepare_file(path, nobody.uid, nobody.gid)
        return iter([MESSAGE])

    def work(data):
        if method == "mbox":
            return mbox.deliver_mbox(path, "a@x", data, PREFIX, 0.0, owner_uid=os.geteuid())
        return maildir.deliver_maildir(path, data, PREFIX, time.time())

    loop, got = Loop(), []
    run_in_child(loop, nobody, prepare, work, got.append, 10.0)
    assert run_loop(loop, lambda: got)
    loop.close()
    assert got[0].is_ok, got[0]
    assert os.stat(os.path.join(public_dir, "spool")).st_uid == 0     # the spool stays root's
    owned = path if method == "mbox" else os.path.join(path, "new")
    assert os.stat(owned).st_uid == 65534
    if method == "maildir":
        [name] = os.listdir(os.path.join(path, "new"))
        assert os.stat(os.path.join(path, "new", name)).st_uid == 65534


def test_child_that_dies_or_hangs_is_a_deferral(tmp_path):
    loop, got = Loop(), []
    run_in_child(loop, None, lambda: None, lambda _: os._exit(3), got.append, 10.0)
    run_in_child(loop, None, lambda: None, lambda _: time.sleep(60), got.append, 0.3)
    run_in_child(loop, None, lambda: None, lambda _: 1 / 0, got.append, 10.0)
    assert run_loop(loop, lambda: len(got) == 3)
    loop.close()
    texts = sorted(o.text for o in got)
    assert all(o.kind == "tempfail" for o in got)
    assert any("ended without a result (status 3)" in t for t in texts)
    assert any("timed out" in t for t in texts)
    assert any("division by zero" in t for t in texts)
