"""Greylisting (issue 15 part 1): the decision on a driven clock, the state file (bounded,
surviving a restart, a torn file never stopping the daemon), and the SMTP dialogue of a
daemon's listener (450 4.7.1 at RCPT; at DATA for the null sender), all on a FakeClock:
no sleeps. A real retrying client (Postfix) is in test_greylist_postfix.py."""

import os
import socket

import pytest

from fakes import FakeClock, FakeHost
from helpers import free_port
from masq.base.logger import Logger
from masq.config import schema
from masq.inbound.listener import Listener
from masq.policy import greylist, greylist_state
from masq.policy.relay import Peer
from masq.queue.spool import Queue

T0 = 1_800_000_000
STRANGER = Peer("192.0.2.7")


def settings(extra=""):
    return greylist.Settings(schema.loads("config masq 'main'\n\toption greylist '1'\n"
                                          + extra).main)


@pytest.fixture
def state(tmp_path):
    return greylist_state.State(str(tmp_path / "greylist.db"), 10000)


def ask(state, opts, now, peer=STRANGER, sender="s@sender.example", rcpt="r@test.example"):
    reply = greylist.check(state, opts, peer, sender, rcpt, now)
    return reply.code if reply else 250


def test_a_window_no_longer_than_the_delay_is_a_config_error():
    with pytest.raises(schema.ConfigError) as err:
        settings("\toption greylist_delay '1h'\n\toption greylist_window '30m'\n")
    assert str(err.value).startswith("<string>:4: ") and "greylist_window" in str(err.value)
    with pytest.raises(schema.ConfigError):
        settings("\toption greylist_delay '2d'\n")


def test_first_attempt_450_then_a_retry_after_the_delay_passes(state):
    opts = settings()
    assert greylist.GREYLISTED.code == 450 and greylist.GREYLISTED.enhanced == "4.7.1"
    assert ask(state, opts, T0) == 450
    assert ask(state, opts, T0 + 299) == 450          # too early: the delay is not restarted
    assert ask(state, opts, T0 + 300) == 250
    assert ask(state, opts, T0 + 40 * 86400) == 250   # passed triplets stay passed
    assert ask(state, opts, T0 + 300, rcpt="other@test.example") == 450


def test_a_retry_after_the_window_starts_again(state):
    opts = settings("\toption greylist_delay '1m'\n\toption greylist_window '1h'\n")
    assert ask(state, opts, T0) == 450
    assert ask(state, opts, T0 + 3601) == 450         # too late: a new first attempt
    assert ask(state, opts, T0 + 3601 + 59) == 450
    assert ask(state, opts, T0 + 3601 + 60) == 250


@pytest.mark.parametrize("first, retry, same", [
    ("192.0.2.7", "192.0.2.200", True), ("192.0.2.7", "192.0.3.7", False),
    ("2001:db8::1", "2001:db8::ffff:2", True), ("2001:db8::1", "2001:db8:0:1::1", False),
    ("::ffff:192.0.2.7", "192.0.2.9", True)])
def test_the_client_network_is_the_slash_24_or_slash_64(state, first, retry, same):
    opts = settings()
    assert ask(state, opts, T0, Peer(first)) == 450
    assert ask(state, opts, T0 + 600, Peer(retry)) == (250 if same else 450)


def test_trusted_clients_and_exempt_recipients_are_never_greylisted(state):
    opts = settings("\tlist greylist_exempt 'postmaster'\n\tlist greylist_exempt '@open.example'\n"
                    "\tlist greylist_exempt 'info@test.example'\n")
    assert ask(state, opts, T0, Peer("10.0.0.1", trusted_net=True)) == 250
    assert ask(state, opts, T0, Peer("192.0.2.7", auth_user="alice")) == 250
    for rcpt in ("Postmaster@test.example", "x@open.example", "INFO@test.example"):
        assert ask(state, opts, T0, rcpt=rcpt) == 250
    assert ask(state, opts, T0, rcpt="info@else.example") == 450
    assert state.triplets and len(state.triplets) == 1


def test_a_network_that_passed_n_times_is_whitelisted_for_a_while(state):
    opts = settings("\toption greylist_whitelist_after '3'\n"
                    "\toption greylist_whitelist_time '30d'\n")
    for n in range(3):
        rcpt = "r%d@test.example" % n
        assert ask(state, opts, T0, rcpt=rcpt) == 450
        assert ask(state, opts, T0 + 300, rcpt=rcpt) == 250
    assert ask(state, opts, T0 + 400, Peer("192.0.2.99"), rcpt="new@test.example") == 250
    assert ask(state, opts, T0 + 400 + 31 * 86400, rcpt="newer@test.example") == 450


def test_the_state_is_bounded_oldest_dropped_first(tmp_path):
    state = greylist_state.State(str(tmp_path / "greylist.db"), 80)
    opts = settings()
    for n in range(200):
        ask(state, opts, T0 + n, rcpt="r%d@test.example" % n)
    assert len(state.triplets) <= 80
    assert ask(state, opts, T0 + 600, rcpt="r199@test.example") == 250   # the newest kept
    assert ask(state, opts, T0 + 600, rcpt="r0@test.example") == 450     # the oldest gone


def test_the_state_survives_a_restart(tmp_path, state):
    opts = settings()
    ask(state, opts, T0)
    ask(state, opts, T0, rcpt="passed@test.example")
    ask(state, opts, T0 + 300, rcpt="passed@test.example")
    state.save()
    again = greylist_state.State(state.path, 10000)
    again.load()
    assert ask(again, opts, T0 + 300) == 250                         # waited long enough
    assert ask(again, opts, T0 + 40 * 86400, rcpt="passed@test.example") == 250
    assert sorted(os.listdir(os.path.dirname(state.path))) == ["greylist.db"]
    with open(state.path, "rb") as src:
        data = src.read()
    assert b"test.example" not in data and b"192.0.2" not in data      # keys only


def test_a_reloaded_state_still_drops_the_least_recently_seen(tmp_path):
    path = str(tmp_path / "greylist.db")
    state, opts = greylist_state.State(path, 8), settings()
    for n in range(8):
        ask(state, opts, T0 + n, rcpt="r%d@test.example" % n)
    ask(state, opts, T0 + 300, rcpt="r0@test.example")          # r0 passes: now the newest
    state.save()
    again = greylist_state.State(path, 8)
    again.load()
    ask(again, opts, T0 + 301, rcpt="new@test.example")          # one too many: r1 goes
    assert ask(again, opts, T0 + 302, rcpt="r0@test.example") == 250
    assert ask(again, opts, T0 + 310, rcpt="r2@test.example") == 250
    assert ask(again, opts, T0 + 320, rcpt="r1@test.example") == 450


def test_a_temporary_file_left_by_a_crash_is_removed_at_load(tmp_path, state):
    ask(state, settings(), T0)
    state.save()
    left = tmp_path / "greylist.db.4242.tmp"
    left.write_bytes(b"half a file")
    again = greylist_state.State(state.path, 10000)
    again.load()
    assert not left.exists() and len(again.triplets) == 1


def test_expiry_forgets_stale_triplets_and_networks(state):
    opts = settings()
    ask(state, opts, T0, rcpt="waiting@test.example")
    ask(state, opts, T0, rcpt="passed@test.example")
    ask(state, opts, T0 + 300, rcpt="passed@test.example")
    state.expire(T0 + 2 * 86400, opts.window, opts.keep)
    assert len(state.triplets) == 1 and state.networks
    state.expire(T0 + 31 * 86400, opts.window, opts.keep)
    assert not state.triplets and not state.networks


def saved_file(tmp_path):
    state = greylist_state.State(str(tmp_path / "greylist.db"), 10000)
    opts = settings()
    for n in range(5):
        ask(state, opts, T0, rcpt="r%d@test.example" % n)
        ask(state, opts, T0 + 300, rcpt="r%d@test.example" % n)
    state.save()
    with open(state.path, "rb") as src:
        return state.path, src.read()


def test_a_torn_or_damaged_file_is_set_aside_and_the_greylist_starts_empty(tmp_path):
    path, data = saved_file(tmp_path)
    damaged = [data[:cut] for cut in range(len(data))]
    damaged += [data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:] for i in range(len(data))]
    for text in damaged:
        with open(path, "wb") as out:
            out.write(text)
        state = greylist_state.State(path, 10000)
        if text:
            with pytest.raises(greylist_state.Damaged):
                state.load()
            assert os.path.exists(path + ".bad") and not os.path.exists(path)
        else:
            with pytest.raises(greylist_state.Damaged):
                state.load()
        assert not state.triplets
        assert ask(state, settings(), T0 + 400, rcpt="r1@test.example") == 450


# the dialogue, through a daemon's listener on a FakeClock


class Dialogue:
    """A Listener of a FakeHost (FakeClock, a real spool) and a client socket."""

    def __init__(self, tmp_path, extra=""):
        self.clock = FakeClock()
        cfg = schema.loads("config masq 'main'\n\toption hostname 'test.example'\n"
                           "\tlist local_domain 'test.example'\n\tlist relay_net '10.9.9.0/24'\n"
                           "\toption greylist '1'\n" + extra)
        self.log = Logger("stderr", "info", clock=self.clock)
        queue = Queue(str(tmp_path / "spool"), volatile_ok=True, clock=self.clock).open("runner")
        self.host = FakeHost(cfg, self.log, self.clock, queue=queue)
        self.host.loop.at_turn_end(queue.sync_now)      # the daemon's group commit
        self.port = free_port()
        self.listener = Listener(self.host, "smtp://127.0.0.1:%d" % self.port, {})
        self.listener.start()

    def send(self, commands):
        """Connect, send the commands (pipelined), run the loop until the server closes;
        return the replies' codes."""
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setblocking(False)
        sock.sendall(commands)
        data = b""
        for _ in range(10000):
            self.host.loop.run_once(block=True, longest=0.05)
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
        sock.close()
        return [line[:3].decode() for line in data.split(b"\r\n") if line[3:4] == b" "]

    def close(self):
        self.listener.stop()
        self.host.queue.close()
        self.host.loop.close()


MESSAGE = (b"EHLO client.example\r\nMAIL FROM:<%s>\r\nRCPT TO:<postmaster@test.example>\r\n"
           b"RCPT TO:<root@test.example>\r\nDATA\r\n")
TEXT = b"Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n"


@pytest.fixture
def dialogue(tmp_path):
    d = Dialogue(tmp_path, "\tlist greylist_exempt 'postmaster'\n")
    yield d
    d.close()


def test_rcpt_gets_450_then_the_retry_is_accepted(dialogue):
    first = dialogue.send(MESSAGE % b"s@sender.example" + TEXT)
    assert first == ["220", "250", "250", "250", "450", "354", "250", "221"]  # postmaster
    assert any("greylisted: client=127.0.0.1 from=<s@sender.example> to=<root@test.example>"
               in line for line in dialogue.log.recent)
    dialogue.clock.advance(301)
    again = dialogue.send(MESSAGE % b"s@sender.example" + TEXT)
    assert again == ["220", "250", "250", "250", "250", "354", "250", "221"]
    assert len(dialogue.host.queue.live()) == 2


def test_the_null_sender_is_greylisted_at_data(dialogue):
    probe = dialogue.send(MESSAGE.replace(b"DATA\r\n", b"QUIT\r\n") % b"")
    assert probe == ["220", "250", "250", "250", "250", "221"]   # a verification probe
    first = dialogue.send(MESSAGE % b"" + TEXT)
    assert first[:6] == ["220", "250", "250", "250", "250", "450"]
    dialogue.clock.advance(301)
    again = dialogue.send(MESSAGE % b"" + TEXT)
    assert again == ["220", "250", "250", "250", "250", "354", "250", "221"]


def test_the_listener_saves_after_a_while_and_at_stop_never_per_rcpt(tmp_path):
    d = Dialogue(tmp_path)
    path = os.path.join(str(tmp_path / "spool"), greylist_state.NAME)
    try:
        d.send(MESSAGE % b"s@sender.example" + TEXT)
        assert not os.path.exists(path)                            # not written per RCPT
        d.clock.advance(301)
        d.host.loop.run_once(block=False)
        assert os.path.exists(path)                                # written once it was due
        d.send(MESSAGE % b"s@sender.example" + TEXT)
        mtime = os.stat(path).st_mtime_ns
    finally:
        d.close()                                                  # stop: the pass is saved
    assert os.stat(path).st_mtime_ns != mtime
    again = greylist_state.State(path, 10000)
    again.load()
    assert [v & 1 for v in again.triplets.values()] == [1]         # root's passed



def test_a_daemon_with_a_torn_state_file_starts_and_greylists(tmp_path):
    os.makedirs(str(tmp_path / "spool"))
    with open(str(tmp_path / "spool" / greylist_state.NAME), "wb") as out:
        out.write(greylist_state.MAGIC + b"\0" * 30)
    d = Dialogue(tmp_path)
    try:
        assert d.send(MESSAGE % b"s@sender.example" + TEXT)[:5] == [
            "220", "250", "250", "250", "450"]          # postmaster: exempt by default
        assert any("torn or damaged" in line for line in d.log.recent)
    finally:
        d.close()


def test_a_state_that_cannot_be_written_is_logged_and_greylisting_goes_on(tmp_path):
    from masq.inbound.greylisting import Greylisting
    clock = FakeClock()
    log = Logger("stderr", "info", clock=clock)
    host = FakeHost(schema.loads("config masq 'main'\n"), log, clock)
    grey = Greylisting(host, str(tmp_path / "gone"), settings())     # no such folder
    assert grey.check(settings(), STRANGER, "s@x.example", "r@test.example") is not None
    clock.advance(301)
    host.loop.run_once(block=False)                                 # the save is due: fails
    assert any("greylist: cannot write" in line for line in log.recent)
    clock.advance(301)
    assert grey.check(settings(), STRANGER, "s@x.example", "r@test.example") is None
    host.loop.close()


def test_client_networks_are_bounded_too(tmp_path):
    """A client with many IPv6 /64s passing one triplet each must not grow the file
    without bound: networks are dropped oldest first like triplets."""
    state = greylist_state.State(str(tmp_path / "greylist.db"), 80)
    opts = settings()
    for n in range(400):
        peer = Peer("2001:db8:0:%x::1" % n)
        ask(state, opts, T0 + n, peer=peer)
        assert ask(state, opts, T0 + n + 300, peer=peer) == 250
    assert len(state.networks) <= 80 and len(state.triplets) <= 80
    assert state.network(state.key("net", greylist.network("2001:db8:0:18f::1")))[0] == 1


def test_a_save_on_a_full_disk_leaves_no_temporary_file():
    from helpers import fill_disk, small_tmpfs
    with small_tmpfs("64k") as folder:
        state = greylist_state.State(str(folder / "greylist.db"), 100000)
        opts = settings()
        for n in range(5000):                      # 85 kB of records: more than fits
            ask(state, opts, T0, rcpt="r%d@test.example" % n)
        fill_disk(folder)
        os.unlink(folder / "filler")
        with pytest.raises(OSError):
            state.save()
        assert sorted(os.listdir(folder)) == []
        assert state.dirty                          # tried again at the next change
