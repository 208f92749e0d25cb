"""BINARYMIME (RFC 3030), in and out (issue 17 part 1).

In: the SMTP server offers BINARYMIME with CHUNKING; BODY=BINARYMIME text comes by BDAT
only (DATA gets 503 5.5.1), without a line length limit, and its body is stored exactly
as received (bare CR, bare LF, NUL), with the envelope saying BINARYMIME. Out: masq to
masq, the text goes as it is (BDAT, BODY=BINARYMIME); to Postfix's smtpd (no BINARYMIME)
its binary parts arrive in base64, decoding to the same octets, parsed back with Python's
email package part by part; to a local mbox the same conversion; what cannot be converted
(a binary body without MIME) bounces 5.6.3, and the bounce quotes only the headers."""

import email
import email.policy
import smtplib

import pytest
from hypothesis import assume, given, settings, strategies as st

from masq.mail import downgrade as D
from masq.proto import smtp_client as C
from masq.proto.smtp_server import (DECISIONS, NEED_DATA, PAUSED, DataChunk, EndOfData,
                                    SMTPServer)
from masq.queue.spool import Queue

from helpers import Daemon, free_port, masq, wait_for, write_config
from postfix_peer import PostfixSmtpd
from sinks import SmtpSink
from test_smtp_client import EHLO_CHUNKING, envelope, feed, ready

BLOB = bytes(range(256)) + b"\r\r\n\n\x00--not-the-boundary\r\n.\r\n" + b"x" * 3000 + b"\r"
BINARY = (b"From: a@example.org\r\nTo: far@example.org\r\nSubject: binary\r\n"
          b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_B\"\r\n\r\n"
          b"--=_B\r\nContent-Type: text/plain; charset=utf-8\r\n"
          b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n"
          b"--=_B\r\nContent-Type: application/octet-stream\r\n"
          b"Content-Transfer-Encoding: binary\r\n\r\n" + BLOB + b"\r\n"
          b"--=_B--\r\n")
NOT_MIME = b"From: a@example.org\r\nSubject: raw\r\n\r\nraw\x00binary\nbody"


def head_and_body(text):
    head, _, body = text.partition(b"\r\n\r\n")
    return head, body


def leaves(text):
    """Return [(content type, decoded payload)] of a message's leaf parts."""
    msg = email.message_from_bytes(text, policy=email.policy.default)
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in msg.walk()
            if not p.is_multipart()]


# The engine

def engine(**kw):
    srv = SMTPServer("mx.test", max_size=1 << 20, max_data_line=1000, **kw)
    srv.greeting()
    return srv


def talk(srv, data):
    """Feed data; answer every decision with the default; return (replies, events)."""
    srv.receive_data(data)
    events = []
    while True:
        event = srv.next_event()
        if event is NEED_DATA or event is PAUSED:
            break
        events.append(event)
        if isinstance(event, DECISIONS):
            srv.respond(None)
    return srv.data_to_send(), events


def test_engine_offers_binarymime_only_with_chunking():
    replies, _ = talk(engine(), b"EHLO c.test\r\n")
    assert b"250-CHUNKING\r\n250 BINARYMIME\r\n" in replies
    srv = engine(chunking=False)
    replies, _ = talk(srv, b"EHLO c.test\r\nMAIL FROM:<a@b.test> BODY=BINARYMIME\r\n")
    assert b"BINARYMIME" not in replies.split(b"\r\n501")[0]
    assert replies.endswith(b"501 5.5.4 Malformed BODY parameter\r\n")


def test_engine_refuses_data_after_binarymime_and_takes_long_lines_by_bdat():
    srv = engine()
    replies, _ = talk(srv, b"EHLO c.test\r\nMAIL FROM:<a@b.test> BODY=BINARYMIME\r\n"
                           b"RCPT TO:<c@d.test>\r\nDATA\r\n")
    assert replies.endswith(b"503 5.5.1 BODY=BINARYMIME text must come by BDAT; send RSET\r\n")
    text = b"Subject: x\r\n\r\n" + b"y" * 5000 + b"\rz\nw\x00"
    replies, events = talk(srv, b"BDAT %d LAST\r\n" % len(text) + text)
    assert replies.startswith(b"250 "), replies            # no 552 for the 5000-octet line
    assert b"".join(e.data for e in events if isinstance(e, DataChunk)) == text
    assert isinstance(events[-1], EndOfData)


# The daemons

def held_relay(tmp_path, name, hop_port, held):
    """Configure a daemon listening on a free port that relays everything to hop_port,
    through a route that is down while `held`; return (conf, spool, listen port)."""
    port = free_port()
    folder = tmp_path / name
    folder.mkdir()
    online = "\toption online 'file:%s'\n" % (folder / "absent") if held else ""
    conf = write_config(str(folder / "masq.conf"), str(folder / "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n" % port,
                        routes="config route 'hop'\n\toption smarthost '127.0.0.1:%d'\n"
                               "\toption tls 'none'\n%s" % (hop_port, online))
    return conf, str(folder / "spool"), port


def queued(spool):
    """Return [(envelope, text)] of the live messages in a spool."""
    queue = Queue(spool).open("read")
    try:
        return [(msg.envelope, b"".join(queue.body(msg.id))) for msg in queue.live()]
    finally:
        queue.close()


def send_binary(port, text, mail_options=("BODY=BINARYMIME",), chunk=1000):
    """Send text with smtplib by BDAT (smtplib has no BDAT helper: docmd and send)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("client.example")
        assert smtp.has_extn("binarymime") and smtp.has_extn("chunking")
        assert smtp.mail("a@example.org", list(mail_options))[0] == 250
        assert smtp.rcpt("far@example.org")[0] == 250
        for start in range(0, len(text), chunk):
            piece = text[start:start + chunk]
            last = b" LAST" if start + chunk >= len(text) else b""
            smtp.send(b"BDAT %d%s\r\n" % (len(piece), last) + piece)
            code, answer = smtp.getreply()
            assert code == 250, answer
        return answer


def test_smtplib_bdat_binarymime_stored_as_received_then_masq_to_masq(tmp_path):
    conf_b, spool_b, port_b = held_relay(tmp_path, "b", free_port(), held=True)
    conf_a, spool_a, port_a = held_relay(tmp_path, "a", port_b, held=True)
    daemon_b = Daemon(conf_b, wait_port=port_b).start()
    daemon_a = Daemon(conf_a, wait_port=port_a).start()
    try:
        with smtplib.SMTP("127.0.0.1", port_a, timeout=30) as smtp:   # DATA: 503 5.5.1
            smtp.ehlo("client.example")
            smtp.mail("a@example.org", ["BODY=BINARYMIME"])
            smtp.rcpt("far@example.org")
            code, answer = smtp.docmd("DATA")
            assert (code, answer[:5]) == (503, b"5.5.1"), answer
        send_binary(port_a, BINARY)
        [(env, text)] = queued(spool_a)
        assert env.body == "BINARYMIME" and not env.crlf     # its body is as received
        assert text.startswith(b"Received: ") and head_and_body(text)[1] == \
            head_and_body(BINARY)[1]
        assert text.endswith(BINARY.split(b"Subject: binary\r\n", 1)[1])
        assert masq("online", "hop", "up", "-C", conf_a).returncode == 0
        assert wait_for(lambda: len(queued(spool_b)) == 1, timeout=60), \
            daemon_a.log_so_far()
        assert wait_for(lambda: queued(spool_a) == [], timeout=30)
    finally:
        daemon_a.stop()
        daemon_b.stop()
    [(env, text)] = queued(spool_b)
    assert env.body == "BINARYMIME"                # it went with BODY=BINARYMIME, by BDAT
    assert head_and_body(text)[1] == head_and_body(BINARY)[1]    # octet for octet


def test_to_postfix_binary_parts_arrive_in_base64_and_a_raw_body_bounces(tmp_path):
    postfix_port, sink_port = free_port(), free_port()
    conf, spool, port = held_relay(tmp_path, "a", postfix_port, held=False)
    with SmtpSink(sink_port, str(tmp_path / "sink")) as sink, \
            PostfixSmtpd(postfix_port, sink_port) as postfix:
        daemon = Daemon(conf, wait_port=port).start()
        try:
            send_binary(port, BINARY, chunk=len(BINARY))
            (got,) = sink.messages(1, timeout=60)
            send_binary(port, NOT_MIME)
            assert wait_for(lambda: "dsn=5.6.3" in daemon.log_so_far(), timeout=60), \
                daemon.log_so_far()
            log = daemon.log_so_far()
            assert wait_for(lambda: len(sink.messages(2, timeout=0.2)) == 2, timeout=60)
            bounce = sink.messages(2)[1]
        finally:
            daemon.stop()
    assert postfix.commands[0].startswith("BDAT")           # (CHUNKING without BINARYMIME)
    assert b"Content-Transfer-Encoding: base64" in got and b"\x00" not in got
    assert leaves(got) == [leaves(BINARY)[0],                     # 8-bit text: as it was
                           ("application/octet-stream", BLOB)]    # base64: octet for octet
    assert "does not take BINARYMIME" in log and "not MIME" in log
    assert b"Undelivered Mail" in bounce and b"text/rfc822-headers" in bounce
    assert b"raw\x00binary" not in bounce


def test_local_mbox_gets_the_converted_text_or_it_bounces(tmp_path):
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n"
                              "\tlist local_users 'root'\n" % port)
    daemon = Daemon(conf, wait_port=port).start()
    mbox = tmp_path / "mail" / "root"
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo("client.example")
            smtp.mail("a@example.org", ["BODY=BINARYMIME"])
            assert smtp.rcpt("root@test.example")[0] == 250
            smtp.send(b"BDAT %d LAST\r\n" % len(BINARY) + BINARY)
            assert smtp.getreply()[0] == 250
        assert wait_for(lambda: mbox.exists() and b"\n--=_B--" in mbox.read_bytes(),
                        timeout=30), daemon.log_so_far()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo("client.example")
            smtp.mail("a@example.org", ["BODY=BINARYMIME"])
            assert smtp.rcpt("root@test.example")[0] == 250
            smtp.send(b"BDAT %d LAST\r\n" % len(NOT_MIME) + NOT_MIME)
            assert smtp.getreply()[0] == 250
        assert wait_for(lambda: "dsn=5.6.3" in daemon.log_so_far(), timeout=30), \
            daemon.log_so_far()
        assert "cannot be written here as text" in daemon.log_so_far()
    finally:
        daemon.stop()
    text = mbox.read_bytes().split(b"\n", 1)[1]          # after the From_ line
    assert leaves(text)[1] == ("application/octet-stream", BLOB)


# The conversion

def converted(text, size, seven_bit=False):
    plan = D.Plan(seven_bit=seven_bit, binary=True)
    for _ in D.scan_steps(iter([text[i:i + size] for i in range(0, len(text), size)]), plan):
        pass
    return plan, b"".join(D.convert(iter([text[i:i + size]
                                          for i in range(0, len(text), size)]), plan))


@pytest.mark.parametrize("seven_bit", [False, True])
def test_binary_parts_convert_exactly_and_text_stays(seven_bit):
    plan, out = converted(BINARY, 7, seven_bit)
    assert plan.binary == {3} and out.isascii() == seven_bit
    assert b"\x00" not in out
    text, blob = leaves(out)
    assert text == leaves(BINARY)[0] and blob == ("application/octet-stream", BLOB)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 400), st.booleans())
def test_any_binary_content_round_trips(blob, size, top):
    assume(b"--=_b" not in blob)
    if top:
        text = (b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Transfer-Encoding: binary\r\n\r\n" + blob)
    else:
        text = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n"
                b"\r\n--=_b\r\nContent-Type: application/octet-stream\r\n\r\n" + blob
                + b"\r\n--=_b--\r\n")
    _, out = converted(text, size)
    (part,) = [p for p in leaves(out) if p[0] == "application/octet-stream"]
    assert part[1] == blob


def test_what_cannot_be_converted():
    for text, why in ((NOT_MIME, "not MIME"),
                      (b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; boundary=s\r\n"
                       b"\r\n--s\r\nContent-Type: application/x\r\n\r\n\x00\r\n--s--\r\n",
                       "signed"),
                      (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=m\r\n"
                       b"\r\n--m\r\nContent-Type: a/b\nX: y\r\n\r\nz\r\n--m--\r\n", "header")):
        with pytest.raises(D.Impossible, match=why):
            converted(text, 64)


# The client engine

def test_client_sends_binarymime_as_it_is_only_by_bdat():
    client = ready(EHLO_CHUNKING.replace(b"250 CHUNKING", b"250-CHUNKING\r\n250 BINARYMIME"))
    assert client.takes_binary()
    client.send_mail(envelope(binary=True))
    assert client.data_to_send().startswith(b"MAIL FROM:<a@me.example> BODY=BINARYMIME\r\n")
    assert feed(client, b"250 ok\r\n250 ok\r\n")[0] == [C.BodyRequest(chunked=True)]
    client.send_body(b"x\r\n\r\nno\x00end\r")
    client.end_body()                                   # no CRLF added: it is content
    assert client.data_to_send() == b"BDAT 12\r\nx\r\n\r\nno\x00end\rBDAT 0 LAST\r\n"
    for ehlo in (EHLO_CHUNKING, EHLO_CHUNKING.replace(b"250-PIPELINING\r\n", b"").replace(
            b"250 CHUNKING", b"250-CHUNKING\r\n250 BINARYMIME")):
        client = ready(ehlo)                            # no BINARYMIME; no PIPELINING
        assert not client.takes_binary()
        client.send_mail(envelope(binary=True))
        assert client.data_to_send() == b""             # nothing is sent: refused here
        events = []
        while True:
            event = client.next_event()
            if event is C.NEED_DATA:
                break
            events.append(event)
        assert events[0].mail.code == 554 and events[0].mail.enhanced == "5.6.3"


def test_to_a_qmtp_route_the_converted_text_goes_with_its_own_size(tmp_path):
    """QMTP declares the text's size first: a BINARYMIME text converted to base64 is longer
    than the queued one, and must go with its converted size (not be cut off and deferred
    for ever as 'the message's size changed')."""
    import qmtp_peer
    hop = free_port()
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n" % port,
                        routes="config route 'q'\n\toption smarthost 'qmtp:127.0.0.1:%d'\n"
                               % hop)
    with qmtp_peer.Server(hop) as server:
        daemon = Daemon(conf, wait_port=port).start()
        try:
            send_binary(port, BINARY)
            assert wait_for(lambda: server.packages, timeout=60), daemon.log_so_far()
            assert wait_for(lambda: queued(str(tmp_path / "spool")) == [], timeout=30), \
                daemon.log_so_far()
        finally:
            daemon.stop()
    (body, sender, rcpts), = server.packages
    assert rcpts == [b"far@example.org"]
    assert [data for _, data in leaves(body)] == [data for _, data in leaves(BINARY)]
