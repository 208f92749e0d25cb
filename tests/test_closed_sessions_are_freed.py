"""A closed SMTP session is freed at once (issue 10, case 8: the daemon's RSS grew by ~8 KB
per accepted message): no timer may keep it alive for its timeout after the client said
QUIT or went away. Sessions on a socketpair in one loop, as in test_hostile_clients."""

import gc
import socket
import weakref

import pytest

from masq.inbound.session import SMTPServerSession
from masq.base.loop import Loop
from masq.base.net import Stream
from masq.proto.smtp_server import SMTPServer


class Host:
    """What an SMTPServerSession asks of its listener."""

    def __init__(self, loop):
        self.loop = loop
        self.settings = type("Settings", (), {"min_data_rate": 500, "refuse_bare": False,
                                                "defer_all": False, "save_envelope_to": False,
                                                "greet_delay": 0, "archive": None,
                                                "greylist": None})
        self.log = type("Log", (), {"info": lambda *a: None, "error": lambda *a: None})
        self.closed = 0

    def timeout(self):
        return 300.0

    def session_closed(self, session):
        self.closed += 1


@pytest.mark.parametrize("client", [b"HELO x\r\nQUIT\r\n", b"HELO x\r\n"])
def test_a_session_that_ended_leaves_no_timer_and_is_freed(client):
    ours, theirs = socket.socketpair()
    loop = Loop()
    host = Host(loop)
    try:
        transport = Stream(loop, ours, None, None)
        session = SMTPServerSession(host, transport, None, SMTPServer("mx.test", max_size=1000))
        transport.on_data, transport.on_close = session.on_data, session.on_close
        session.start()
        theirs.sendall(client)
        if not client.endswith(b"QUIT\r\n"):
            theirs.shutdown(socket.SHUT_WR)         # the client went away without QUIT
        for _ in range(50):
            loop.run_once(block=False)
            if host.closed:
                break
        assert host.closed == 1
        assert [t for t in loop.timers if not t.cancelled] == []
        gone = weakref.ref(session)
        del session, transport
        gc.collect()
        assert gone() is None
    finally:
        loop.close()
        ours.close()
        theirs.close()
