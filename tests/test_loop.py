"""The selector loop: timers on a fake clock, fds, signals, children, turn-end hooks."""

import os
import signal
import socket

from masq.base.loop import Loop

from fakes import FakeClock


def test_timers_fire_in_order_on_fake_clock():
    clock = FakeClock()
    loop = Loop(clock)
    fired = []
    loop.call_later(5, lambda: fired.append("b"))
    loop.call_later(1, lambda: fired.append("a"))
    cancelled = loop.call_later(3, lambda: fired.append("never"))
    cancelled.cancel()
    loop.run_once(block=False)
    assert fired == []
    clock.advance(2)
    loop.run_once(block=False)
    assert fired == ["a"]
    clock.advance(10)
    loop.run_once(block=False)
    assert fired == ["a", "b"]
    assert loop.next_deadline() is None
    loop.close()


def test_idle_loop_has_no_deadline_so_select_blocks_forever():
    loop = Loop(FakeClock())
    timer = loop.call_later(1, lambda: None)
    assert loop.next_deadline() == 1001.0
    timer.cancel()
    assert loop.next_deadline() is None
    loop.close()


def test_reader_and_turn_end_hook():
    loop = Loop()
    a, b = socket.socketpair()
    got, ends = [], []
    loop.add_reader(a, lambda: got.append(a.recv(10)))
    loop.at_turn_end(lambda: ends.append(len(got)))
    b.send(b"hi")
    loop.run_once()
    assert got == [b"hi"]
    assert ends == [1]
    loop.remove_reader(a)
    a.close()
    b.close()
    loop.close()


def test_signal_arrives_through_wakeup_fd():
    loop = Loop()
    seen = []
    loop.add_signal(signal.SIGUSR1, lambda: seen.append("usr1"))
    os.kill(os.getpid(), signal.SIGUSR1)
    loop.run_once()
    assert seen == ["usr1"]
    loop.close()


def test_child_is_reaped_without_blocking():
    loop = Loop()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    statuses = []
    loop.watch_child(pid, statuses.append)
    for _ in range(50):
        if statuses:
            break
        loop.run_once()
    assert [os.waitstatus_to_exitcode(s) for s in statuses] == [7]
    loop.close()


def test_callback_error_goes_to_on_error():
    loop = Loop(FakeClock())
    errors = []
    loop.on_error = errors.append
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(lambda: errors.append("after"))
    loop.run_once(block=False)
    assert isinstance(errors[0], ZeroDivisionError)
    assert errors[1] == "after"
    loop.close()


def test_child_reaped_elsewhere_never_reads_as_success():
    loop = Loop()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)                     # someone else took the status
    statuses = []
    loop.watch_child(pid, statuses.append)
    loop.run_once(block=False)
    assert [os.waitstatus_to_exitcode(s) for s in statuses] == [255]
    loop.close()


def test_work_started_by_a_turn_end_hook_gets_the_hooks_again_before_sleeping():
    """A group commit whose waiter queues more work (a bounce of a bounce) must not leave
    the new waiter for a turn that never comes (sendmail hung holding runner.lock)."""
    loop = Loop(FakeClock())
    waiters, synced = [], []

    def commit():
        batch, waiters[:] = list(waiters), []
        for waiter in batch:
            waiter()

    def second():
        synced.append("second")

    def first():
        synced.append("first")
        loop.call_soon(lambda: waiters.append(second))
    loop.at_turn_end(commit)
    waiters.append(first)
    loop.run_once(block=False)
    assert synced == ["first", "second"] and waiters == []
    loop.close()


def test_loop_time_is_the_clocks_wall_time():
    clock = FakeClock()
    loop = Loop(clock)
    clock.advance(30)
    assert (loop.now, loop.time()) == (clock.mono, clock.wall)
    loop.close()


def test_run_until_on_a_fake_clock_moves_it_timer_by_timer():
    clock = FakeClock()
    loop = Loop(clock)
    fired = []
    loop.at_turn_end(lambda: None)                      # hooks run every turn: not work
    loop.call_later(30, lambda: fired.append(loop.now))
    loop.call_later(10, lambda: fired.append(loop.now))
    assert loop.run_until(lambda: len(fired) == 2, 60)
    assert fired == [1010.0, 1030.0] and clock.mono == 1030.0
    assert not loop.run_until(lambda: False, 5)         # nothing left: the clock jumps to the end
    assert clock.mono == 1035.0
    loop.close()


def test_run_until_on_the_real_clock_returns_at_the_event():
    loop = Loop()
    a, b = socket.socketpair()
    got = []
    loop.add_reader(a, lambda: got.append(a.recv(10)))
    loop.call_soon(lambda: b.send(b"hi"))
    assert loop.run_until(lambda: got, 60)
    assert got == [b"hi"]
    assert not loop.run_until(lambda: False, 0.05)      # a timeout with nothing pending
    loop.remove_reader(a)
    a.close()
    b.close()
    loop.close()
