"""A failed login is answered only after FAILURE_DELAY of the loop's clock: SMTP AUTH (535)
and the status page (401). Driven on a fake clock, so the delay is proven without waiting
for it (the daemon tests check the replies themselves against real clients)."""

import base64
import time
from types import SimpleNamespace

from masq.base.loop import Loop
from masq.inbound import auth
from masq.proto import http
from masq.status import serve

from fakes import FakeClock


class Log:
    def __init__(self):
        self.lines = []

    def _add(self, text, *args):
        self.lines.append(text % args if args else text)

    info = warning = error = debug = _add


def turn_until(loop, clock, seconds):
    """Move the clock by seconds and run what came due."""
    clock.advance(seconds)
    loop.run_once(block=False)


def test_smtp_auth_failure_is_answered_after_the_delay():
    clock = FakeClock()
    loop = Loop(clock)
    listener = SimpleNamespace(loop=loop, limiter=auth.Limiter(), log=Log(),
                               settings=SimpleNamespace(users={}), auth_delay=auth.FAILURE_DELAY)
    answers = []
    session = SimpleNamespace(peer=SimpleNamespace(ip="192.0.2.7", auth_user=None),
                              respond=answers.append)
    auth.authenticate(listener, session, SimpleNamespace(username=b"carol", password=b"guess",
                                                         authzid=None))
    loop.run_once(block=False)
    turn_until(loop, clock, auth.FAILURE_DELAY - 0.01)
    assert answers == []
    turn_until(loop, clock, 0.01)
    assert answers == [auth.FAILED]
    assert any("authentication failed" in line for line in listener.log.lines)
    loop.close()


def test_status_page_login_failure_is_answered_after_the_delay():
    clock = FakeClock()
    loop = Loop(clock)
    guard = serve.Guard("the password")
    page = SimpleNamespace(loop=loop, log=Log(), daemon=None, guard=guard)
    answers = []
    conn = SimpleNamespace(ip="192.0.2.7", answer=answers.append)
    value = "Basic " + base64.b64encode(b"admin:guess").decode()
    req = http.Request("GET", "/status.json", "HTTP/1.1", (("authorization", value),), b"")
    assert serve.Context(page, conn, req).authenticate() is False
    loop.run_once(block=False)
    turn_until(loop, clock, serve.FAILURE_DELAY - 0.01)
    assert answers == []
    turn_until(loop, clock, 0.01)
    assert [a.status for a in answers] == [401]
    date = ("Date", http.format_date(time.gmtime(clock.time())))
    assert date in answers[0].headers                       # dated by the loop's clock
    loop.close()
