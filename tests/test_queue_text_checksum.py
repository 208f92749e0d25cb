"""A message's text is checked against its records' checksums on every read, not only when
the spool is opened: a byte that rots on flash while the daemon runs makes the delivery a
temporary failure naming the damage, and is never delivered (here: to aiosmtpd)."""

import glob
import os

import pytest

from masq.queue.envelope import Envelope
from masq.queue.spool import Queue
from masq.queue.store import CHUNK, TextUnreadable

from helpers import Daemon, free_port, masq, status, wait_for, write_config
from sinks import Sink

MARK = b"rot-here:"
LINES = (b"y" * 76 + b"\r\n") * (CHUNK // 78)
TEXT = b"Subject: rot\r\n\r\n" + LINES * 2 + MARK + b"\r\n" + LINES


def rot(spool):
    """Flip one bit of the stored text, in place, as flash bit rot would."""
    for path in glob.glob(os.path.join(spool, "**", "*"), recursive=True):
        if not os.path.isfile(path):
            continue
        with open(path, "r+b") as seg:
            data = seg.read()
            at = data.find(MARK)
            if at >= 0:
                seg.seek(at)
                seg.write(bytes([data[at] ^ 0x01]))
                return
    raise AssertionError("the text is not in the spool")


def test_a_text_that_rots_after_the_spool_was_opened_is_not_read(tmp_path):
    spool = str(tmp_path / "spool")
    queue = Queue(spool).open("runner")
    try:
        writer = queue.writer()
        writer.write(TEXT)
        writer.commit(Envelope("a@x.example", ["b@y.example"], received=1.0))
        queue.sync()
        assert b"".join(queue.body(writer.id)) == TEXT
        rot(spool)
        with pytest.raises(TextUnreadable, match="damaged"):
            b"".join(queue.body(writer.id))
    finally:
        queue.close()
    queue = Queue(spool).open("runner")          # the next open quarantines it: kept, listed
    try:
        assert queue.live() == [] and [m.id for m in queue.listed() if m.quarantined] == \
            [writer.id]
    finally:
        queue.close()


def test_the_daemon_never_delivers_a_rotten_text(tmp_path):
    spool, online = str(tmp_path / "spool"), tmp_path / "up"
    port = free_port()
    with Sink(port) as sink:
        conf = write_config(str(tmp_path / "masq.conf"), spool,
                            routes="config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n"
                                   "\toption tls 'none'\n\toption online 'file:%s'\n"
                                   % (port, online))
        daemon = Daemon(conf).start()
        try:
            assert masq("-C", conf, "-i", "-odq", "-f", "a@x.example", "b@y.example",
                        input=TEXT).returncode == 0
            assert wait_for(lambda: len(status(conf)["queue"]) == 1)
            rot(spool)
            assert masq("-C", conf, "online", "isp", "up").returncode == 0
            assert wait_for(lambda: "damaged" in daemon.log_so_far()), daemon.log_so_far()
        finally:
            log = daemon.stop()
    assert sink.messages == []
    assert len(status(conf)["queue"]) == 1 and "4.3.0" in log, log
