"""masq.base.child with real children: sh -c, a child that ignores SIGTERM, one that writes
more than the cap, one that exits before reading its stdin (EPIPE), one that outlives its
time limit and leaves grandchildren in its group, a forked function, a program that cannot
start, cancel.

Time limits run on a clock that moves only when the test moves it, once the child said it
is ready. Whether a process is gone is learnt from a pidfd (readable once it has died),
never by sleeping.
"""

import os
import select
import signal

import pytest

from fakes import FakeClock, Frozen
from masq.base.child import STDOUT, Child
from masq.base.loop import Loop

HANG_GUARD = 60.0       # seconds before a test that would hang fails instead


@pytest.fixture
def loop():
    loop = Loop(Frozen())
    yield loop
    loop.close()


def run(loop, predicate):
    """Turn the loop until predicate() is true."""
    assert loop.run_until(predicate, HANG_GUARD)


def advance(loop, seconds):
    """Move the loop's clock (a Frozen one moves only so)."""
    FakeClock.advance(loop.clock, seconds)


def start(loop, argv, **kw):
    """Spawn argv; return (child, reports): reports collects what on_exit was given."""
    reports = []
    options = {k: kw.pop(k) for k in ("time_limit", "cap", "on_data") if k in kw}
    child = Child(loop, reports.append, **options)
    assert child.spawn(argv, **kw)
    return child, reports


def ended(loop, child, reports):
    run(loop, lambda: reports)
    assert reports == [child]
    return child


def gone(pid):
    """Return a pidfd for pid, to wait on (it is readable once pid has died)."""
    return os.pidfd_open(pid)


def wait_dead(pidfd):
    """Return True once the process of pidfd has died (False if it outlives the guard)."""
    try:
        readable, _, _ = select.select([pidfd], [], [], HANG_GUARD)
        return bool(readable)
    finally:
        os.close(pidfd)


def code(child):
    return os.waitstatus_to_exitcode(child.status)


def test_sh_c_output_and_exit_status(loop):
    child, reports = start(loop, ["sh", "-c", "echo out; echo err >&2; exit 3"],
                           stderr=STDOUT)
    ended(loop, child, reports)
    assert code(child) == 3 and bytes(child.output) == b"out\nerr\n"
    assert not child.timed_out and child.error is None and child.feed_error is None


def test_stderr_goes_to_dev_null_by_default(loop):
    child, reports = start(loop, ["sh", "-c", "echo err >&2; echo out"])
    ended(loop, child, reports)
    assert bytes(child.output) == b"out\n"


def test_stdin_fed_from_an_iterator_as_the_child_reads(loop):
    chunks = [b"a" * 100000, b"b" * 300000, b"c"]
    child, reports = start(loop, ["sh", "-c", "wc -c"], stdin=iter(chunks))
    ended(loop, child, reports)
    assert code(child) == 0 and int(child.output) == 400001


def test_a_child_that_exits_before_reading_its_stdin_gets_epipe_quietly(loop):
    fed = []

    def text():                 # 640 MB if anyone read it all
        try:
            for _ in range(10000):
                fed.append(1)
                yield b"x" * 65536
        finally:
            fed.append("closed")
    child, reports = start(loop, ["sh", "-c", "exit 0"], stdin=text())
    ended(loop, child, reports)
    assert code(child) == 0 and child.feed_error is None and child.error is None
    assert fed[-1] == "closed" and len(fed) < 1000       # stopped at EPIPE, then closed


def test_output_over_the_cap_is_kept_to_the_cap_and_the_rest_drained(loop):
    child, reports = start(loop, ["sh", "-c", "head -c 5000000 /dev/zero; echo end >&2"],
                           cap=1000, stderr=STDOUT)
    ended(loop, child, reports)
    assert code(child) == 0 and bytes(child.output) == b"\0" * 1000   # never blocked


def test_output_handed_over_as_it_comes(loop):
    seen = []
    child, reports = start(loop, ["sh", "-c", "echo one; echo two"], on_data=seen.append)
    ended(loop, child, reports)
    assert b"".join(seen) == b"one\ntwo\n" and child.output == b""


def test_a_child_that_ignores_sigterm_ends_at_its_time_limit_by_sigkill(loop):
    child, reports = start(loop, ["sh", "-c", "trap '' TERM; echo ready; exec sleep 1000"],
                           time_limit=30)
    run(loop, lambda: b"ready" in child.output)
    pidfd = gone(child.pid)
    child.kill(signal.SIGTERM)
    assert select.select([pidfd], [], [], 0)[0] == []   # a signal it ignores: still there
    for _ in range(3):
        loop.run_once(block=False)
    assert reports == [] and child.status is None
    advance(loop, 30)
    ended(loop, child, reports)
    assert child.timed_out and code(child) == -signal.SIGKILL
    assert wait_dead(pidfd)


def test_time_limit_kills_the_whole_group_grandchildren_included(loop):
    script = "sleep 1000 & echo $!; sleep 1000 & echo $!; echo ready; wait"
    child, reports = start(loop, ["sh", "-c", script], time_limit=30)
    run(loop, lambda: b"ready" in child.output)
    grandchildren = [int(word) for word in child.output.split()[:2]]
    pidfds = [gone(pid) for pid in grandchildren]
    assert all(os.getpgid(pid) == child.pid for pid in grandchildren)
    advance(loop, 30)
    ended(loop, child, reports)
    assert child.timed_out and code(child) == -signal.SIGKILL
    assert all(wait_dead(pidfd) for pidfd in pidfds)
    with pytest.raises(ChildProcessError):          # reaped: no zombie left
        os.waitpid(child.pid, os.WNOHANG)


def test_a_grandchild_holding_stdout_after_the_leader_exited_ends_at_the_time_limit(loop):
    child, reports = start(loop, ["sh", "-c", "sleep 1000 & echo $!; exit 0"],
                           time_limit=30)
    run(loop, lambda: child.status is not None and child.output.endswith(b"\n"))
    pidfd = gone(int(child.output))
    for _ in range(3):
        loop.run_once(block=False)
    assert reports == []                            # stdout is still open
    advance(loop, 30)
    ended(loop, child, reports)
    assert code(child) == 0 and not child.timed_out  # the leader's own exit counts
    assert wait_dead(pidfd)


def test_a_failing_stdin_kills_the_child_before_it_sees_the_end(loop):
    def text():
        yield b"first part\n"
        raise OSError(5, "Input/output error")
    child, reports = start(loop, ["sh", "-c", "cat > /dev/null; echo saw-the-end"],
                           stdin=text())
    ended(loop, child, reports)
    assert child.feed_error.strerror == "Input/output error"
    assert code(child) == -signal.SIGKILL and b"saw-the-end" not in child.output


def test_kill_ends_it_early_and_is_still_reported(loop):
    child, reports = start(loop, ["sleep", "1000"], time_limit=30)
    child.kill()
    ended(loop, child, reports)
    assert code(child) == -signal.SIGKILL and not child.timed_out


def test_a_program_that_cannot_start_is_reported_from_the_loop(loop):
    reports = []
    child = Child(loop, reports.append)
    assert child.spawn(["/nonexistent/program"]) is False
    assert reports == []                            # not from inside spawn
    ended(loop, child, reports)
    assert child.status is None and "No such file" in child.error


def test_cancel_kills_and_never_reports(loop):
    child, reports = start(loop, ["sh", "-c", "sleep 1000 & echo ready; wait"], time_limit=30)
    run(loop, lambda: b"ready" in child.output)
    pidfd = gone(child.pid)
    child.cancel()
    assert wait_dead(pidfd)
    for _ in range(5):
        loop.run_once(block=False)
    advance(loop, 30)
    for _ in range(5):
        loop.run_once(block=False)
    assert reports == []


def test_a_forked_function_reports_through_its_pipe(loop):
    reports = []
    child = Child(loop, reports.append, time_limit=30)

    def work(fd):
        os.write(fd, b"from the child %d" % os.getpid())
        os._exit(4)
    assert child.fork(work)
    ended(loop, child, reports)
    assert code(child) == 4 and bytes(child.output) == b"from the child %d" % child.pid


def test_a_forked_function_that_hangs_is_killed_at_the_time_limit(loop):
    reports = []
    child = Child(loop, reports.append, time_limit=30)
    never_r, never_w = os.pipe()

    def work(fd):
        os.write(fd, b"ready")
        os.read(never_r, 1)                         # never comes
    assert child.fork(work)
    run(loop, lambda: b"ready" in child.output)
    advance(loop, 30)
    ended(loop, child, reports)
    os.close(never_r)
    os.close(never_w)
    assert child.timed_out and code(child) == -signal.SIGKILL
