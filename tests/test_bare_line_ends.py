"""Bare CR and bare LF in message text (issue 12 case 4): on the way in they become CRLF
(or, with `option bare_line_ends 'refuse'`, the message is refused with 550 5.6.0), for
SMTP, `-bs` and `sendmail` alike, so what reaches the next hop carries CRLF only and no
`\\r.\\r` can end a message early at a lenient next hop. The next hop is aiosmtpd, which
reads lines up to CRLF and keeps anything else as text: it shows what masq sent."""

import re
import socket

import pytest

from helpers import Daemon, free_port, masq, write_config
from masq.queue.spool import Queue
from sinks import Sink

BARE = re.compile(rb"(?<!\r)\n|\r(?!\n)")
HOSTILE = (b"Subject: bare\r\n\r\none\ntwo\rthree\r\n"
           b"before\r.\rMAIL FROM:<spoof@bank.example>\r\nRCPT TO:<victim@example.org>\r\n")


@pytest.fixture(params=["normalise", "refuse"])
def relay(request, tmp_path):
    """A daemon relaying everything to an aiosmtpd next hop through a route that is down
    until `delivered` has looked at the queued copies."""
    hop, port = free_port(), free_port()
    extra = "\tlist listen 'smtp://127.0.0.1:%d'\n" % port
    if request.param == "refuse":
        extra += "\toption bare_line_ends 'refuse'\n"
    routes = ("config route 'hop'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
              "\toption online 'file:%s'\n" % (hop, tmp_path / "absent"))
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=extra,
                        routes=routes)
    with Sink(hop) as sink:
        daemon = Daemon(conf, wait_port=port).start()
        try:
            yield {"mode": request.param, "conf": conf, "port": port, "sink": sink,
                   "spool": str(tmp_path / "spool")}
        finally:
            daemon.stop()


def delivered(relay, count):
    """Check the queued copies carry CRLF only and their envelopes say so (`crlf`: the
    SMTP client then sends them without a second look); bring the route up; return what
    arrived."""
    assert masq("status", "--json", "-C", relay["conf"]).returncode == 0  # as test_smtpd
    queue = Queue(relay["spool"]).open("read")
    try:
        bodies = [b"".join(queue.body(msg.id)) for msg in queue.live()]
        flags = [msg.envelope.crlf for msg in queue.live()]
    finally:
        queue.close()
    assert len(bodies) == count and not any(BARE.search(body) for body in bodies), bodies
    assert flags == [True] * count
    done = masq("online", "hop", "up", "-C", relay["conf"])
    assert done.returncode == 0, done.stderr
    return relay["sink"].wait(count, timeout=60)


def dialogue(port, script):
    """Send script after the greeting; return every reply line until the server closes."""
    with socket.create_connection(("127.0.0.1", port), 15) as sock:
        sock.sendall(script)
        data = b""
        while True:
            part = sock.recv(65536)
            if not part:
                return data.split(b"\r\n")
            data += part


ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<far@example.org>\r\n"


def test_smtp_data(relay):
    replies = dialogue(relay["port"], ENVELOPE + b"DATA\r\n" + HOSTILE + b".\r\nQUIT\r\n")
    final = [r for r in replies if r[:1] in (b"2", b"5") and b"2.1." not in r][-2]
    if relay["mode"] == "refuse":
        assert final.startswith(b"550 5.6.0"), replies
        return
    assert final.startswith(b"250 2.0.0"), replies
    [(sender, rcpts, text)] = delivered(relay, 1)
    assert (sender, rcpts) == ("a@example.org", ["far@example.org"])
    assert not BARE.search(text)
    assert b"\r\n\r\none\r\ntwo\r\nthree\r\nbefore\r\n.\r\nMAIL FROM:<spoof@bank.example>\r\n" \
        in text


def test_bdat_ending_in_a_bare_lf(relay):
    body = b"Subject: bdat\r\n\r\nlast line\n"
    replies = dialogue(relay["port"], ENVELOPE + b"BDAT %d LAST\r\n" % len(body) + body +
                       b"QUIT\r\n")
    final = replies[-3]
    if relay["mode"] == "refuse":
        assert final.startswith(b"550 5.6.0"), replies
        return
    assert final.startswith(b"250 2.0.0"), replies
    [(_, _, text)] = delivered(relay, 1)
    assert text.endswith(b"\r\n\r\nlast line\r\n") and not BARE.search(text)


def test_bs_session(relay):
    done = masq("-C", relay["conf"], "-bs",
                input=ENVELOPE + b"DATA\r\n" + HOSTILE + b".\r\nQUIT\r\n")
    if relay["mode"] == "refuse":
        assert b"550 5.6.0" in done.stdout
        return
    assert b"250 2.0.0" in done.stdout, done.stdout
    [(_, _, text)] = delivered(relay, 1)
    assert not BARE.search(text) and b"one\r\ntwo\r\nthree\r\nbefore\r\n.\r\nMAIL" in text


def test_sendmail(relay):
    """sendmail input ends its lines with LF by convention: only a bare CR is refused."""
    unix = masq("-C", relay["conf"], "far@example.org", input=b"Subject: lf\n\nunix\ntext\n")
    assert unix.returncode == 0, unix.stderr
    done = masq("-C", relay["conf"], "far@example.org",
                input=b"Subject: cr\n\none\rtwo\r\nthree\r.x\n")
    if relay["mode"] == "refuse":
        assert done.returncode == 65
        assert done.stderr.count(b"\n") == 1 and b"bare CR" in done.stderr
        [(_, _, text)] = delivered(relay, 1)
        assert b"unix\r\ntext\r\n" in text
        return
    assert done.returncode == 0, done.stderr
    texts = [text for _, _, text in delivered(relay, 2)]
    assert len(texts) == 2 and not any(BARE.search(text) for text in texts)
    assert any(b"\r\n\r\none\r\ntwo\r\nthree\r\n.x\r\n" in text for text in texts)
