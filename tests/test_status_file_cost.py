"""The status file costs the same with 10 or 50,000 messages queued (issue 10, case 8): the
document is built at most once per second of loop time however many turns run, nothing wakes
an idle daemon for it, and the file lists the first 100 messages with `queue_total` counting
them all (building it on every turn made accepting slower as the queue grew)."""

import json

from masq.base.loop import Loop
from masq.status import file as status_file
from masq.status import model

from fakes import FakeClock


class Main:
    def __init__(self, path):
        self.status_file = path
        self.hostname = "test.example"


class Cfg:
    def __init__(self, path):
        self.main = Main(path)


class Message:
    """What model.message_json reads of a queued message."""

    def __init__(self, n):
        self.id = "m%05d" % n
        self.quarantined = None
        self.envelope = Env()


class Env:
    sender, size, received, recipients = "s@x.example", 10, 0.0, ()
    client = origin = None


class FakeDaemon:
    """The part of the daemon StatusFile uses: loop, cfg, status(limit), log."""

    def __init__(self, path, clock, queued):
        self.loop = Loop(clock=clock)
        self.cfg = Cfg(path)
        self.messages = [Message(n) for n in range(queued)]
        self.builds = 0

    def status(self, limit=None):
        self.builds += 1
        listed = self.messages[:limit] if limit is not None else self.messages
        return model.document("test.example", 0.0, [], listed, {}, now=0.0,
                              queue_total=len(self.messages))


def test_built_at_most_once_per_second_however_many_turns(tmp_path):
    clock = FakeClock()
    daemon = FakeDaemon(str(tmp_path / "status.json"), clock, 10)
    status_file.StatusFile(daemon).start()
    for turn in range(1000):                   # 1,000 busy turns over 2.5 s of loop time
        clock.advance(0.0025 if turn else 0.0)
        daemon.loop.call_soon(lambda: None)
        daemon.loop.run_once(block=False)
    assert daemon.builds <= 4
    assert daemon.loop.next_deadline() is not None      # the last changes are still due
    clock.advance(10.0)
    daemon.loop.run_once(block=False)
    built = daemon.builds
    assert daemon.loop.next_deadline() is None           # idle: no timer wakes the daemon
    daemon.loop.run_once(block=False)
    assert daemon.builds == built
    daemon.loop.selector.close()


def test_the_file_lists_the_first_messages_and_counts_them_all(tmp_path):
    path = tmp_path / "status.json"
    daemon = FakeDaemon(str(path), FakeClock(), 5000)
    status_file.StatusFile(daemon).start()
    daemon.loop.call_soon(lambda: None)
    daemon.loop.run_once(block=False)
    doc = json.loads(path.read_text())
    assert doc["queue_total"] == 5000
    assert [m["id"] for m in doc["queue"]] == ["m%05d" % n for n in range(100)]
    daemon.loop.selector.close()
