"""Cancelled timers hold nothing and do not pile up (issue 10, case 8: the daemon's RSS grew by
~8 KB per accepted message, because every SMTP session re-arms its timeout on each command
and the cancelled timers, each holding the closed session, stayed in the heap for the
whole timeout)."""

import gc
import weakref

from masq.base.loop import Loop

from fakes import FakeClock

FLOOR = 64       # masq.base.loop.MIN_TIMERS: below this the heap is never rebuilt


class Session:
    """Stands for an SMTP session: something a timeout callback refers to."""

    def timed_out(self):
        raise AssertionError("a cancelled timer fired")


def test_a_cancelled_timer_lets_its_callback_go():
    loop = Loop(clock=FakeClock())
    session = Session()
    gone = weakref.ref(session)
    loop.call_later(300, session.timed_out).cancel()
    del session
    gc.collect()
    assert gone() is None
    loop.selector.close()


def test_re_arming_keeps_the_heap_within_twice_the_live_timers():
    clock = FakeClock()
    loop = Loop(clock=clock)
    fired = []
    keep = [loop.call_later(1000 + i, lambda i=i: fired.append(i)) for i in range(10)]
    timer = loop.call_later(300, Session().timed_out)
    largest = 0
    for _ in range(10000):                 # a session re-arming its timeout on each command
        timer.cancel()
        timer = loop.call_later(300, Session().timed_out)
        largest = max(largest, len(loop.timers))
    assert largest <= max(FLOOR, 2 * 11) + 1
    timer.cancel()
    clock.advance(2000.0)
    loop.run_once(block=False)
    assert sorted(fired) == list(range(10)) and all(t.cancelled for t in keep)
    loop.selector.close()
