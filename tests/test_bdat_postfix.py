"""CHUNKING out, against Postfix's own smtpd (started by the test, tests/postfix_peer.py):
masq sends the queued text in BDAT chunks when the next hop offers CHUNKING, and after DATA
when it does not; either way the text arrives as it was queued (a line that starts with a
dot included), and the message leaves the queue."""

import pytest

from helpers import Daemon, free_port, masq, status, wait_for, write_config
from postfix_peer import PostfixSmtpd
from sinks import SmtpSink

TEXT = (b"Subject: chunks\nFrom: me@test.example\n\n.a line that starts with a dot\n"
        + b"".join(b"line %06d of the body, long enough to need several chunks\n" % i
                   for i in range(20000)) + b".\n..\nlast line\n")


@pytest.mark.parametrize("chunking", [True, False])
def test_message_leaves_by_bdat_when_postfix_offers_chunking(tmp_path, chunking):
    masq_port, postfix_port, sink_port = free_port(), free_port(), free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), routes=(
        "config route 'postfix'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
        % postfix_port), extra="\tlist listen 'smtp://127.0.0.1:%d'\n" % masq_port)
    params = {} if chunking else {"smtpd_discard_ehlo_keywords": "chunking"}
    with SmtpSink(sink_port, str(tmp_path / "sink")) as sink, \
            PostfixSmtpd(postfix_port, sink_port, **params) as postfix:
        daemon = Daemon(conf).start()
        try:
            done = masq("-C", conf, "-i", "-f", "me@test.example", "far@example.org", input=TEXT)
            assert done.returncode == 0, done.stderr
            (got,) = sink.messages(1, timeout=60)
            assert wait_for(lambda: status(conf)["queue"] == [], timeout=30)
        finally:
            daemon.stop()
    body = got.split(b"\n\n", 1)[1]
    assert body == TEXT.split(b"\n\n", 1)[1] + b"\n"     # smtp-sink ends its dump with a LF
    if chunking:
        assert postfix.commands[-1].endswith(" LAST") and "DATA" not in postfix.commands
        assert len(postfix.commands) > 2            # the 1.2 MB text went in several chunks
    else:
        assert postfix.commands == ["DATA"]
