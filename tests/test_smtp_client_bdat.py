"""SMTP client engine, CHUNKING (RFC 3030): the text in BDAT chunks, never dot-stuffed,
once every RCPT is answered; a refused chunk ends the transaction with no more chunks; DATA
when the server does not offer CHUNKING with PIPELINING."""

from masq.proto import smtp_client as C

from test_smtp_client import EHLO_CHUNKING, EHLO_FULL, envelope, feed, ready

EHLO_CHUNKING_ONLY = b"250-mx.example\r\n250-SIZE 1000\r\n250 CHUNKING\r\n"


def test_bdat_after_the_rcpt_replies_with_the_text_as_is():
    client = ready(EHLO_CHUNKING)
    client.send_mail(envelope("b@mx.example", "c@mx.example", size=10))
    assert client.data_to_send() == (b"MAIL FROM:<a@me.example> SIZE=10\r\n"
                                     b"RCPT TO:<b@mx.example>\r\nRCPT TO:<c@mx.example>\r\n")
    events, out = feed(client, b"250 ok\r\n250 ok\r\n")
    assert events == [] and out == b""                  # one RCPT still unanswered
    events, out = feed(client, b"550 5.1.1 no\r\n")
    assert events == [C.BodyRequest(chunked=True)] and client.state == C.BODY
    client.send_body(b".dot first\r\n")                 # no stuffing in a chunk
    client.send_body(b"no end")
    client.end_body()
    assert client.data_to_send() == (b"BDAT 12\r\n.dot first\r\nBDAT 6\r\nno end"
                                     b"BDAT 2 LAST\r\n\r\n")
    events, _ = feed(client, b"250 2.0.0 12 octets\r\n250 2.0.0 6 octets\r\n")
    assert events == []                                 # LAST not answered yet
    events, _ = feed(client, b"250 2.0.0 queued as X\r\n")
    (done,) = events
    assert [r.code for r in done.rcpts] == [250, 550] and done.data is None
    assert done.final.text == ("queued as X",) and client.state == C.READY


def test_text_ending_in_crlf_ends_with_bdat_0_last():
    client = ready(EHLO_CHUNKING)
    client.send_mail(envelope())
    client.data_to_send()
    feed(client, b"250 ok\r\n250 ok\r\n")
    client.send_body(b"line\r\n")
    client.end_body()
    assert client.data_to_send() == b"BDAT 6\r\nline\r\nBDAT 0 LAST\r\n"


def test_a_refused_chunk_stops_the_text_and_keeps_the_refusal():
    client = ready(EHLO_CHUNKING)
    client.send_mail(envelope())
    client.data_to_send()
    feed(client, b"250 ok\r\n250 ok\r\n")
    client.send_body(b"a" * 100)
    client.send_body(b"b" * 100)
    events, _ = feed(client, b"552 5.3.4 too big\r\n")
    assert events == [] and client.state == C.DOT       # no more chunks may be queued
    events, _ = feed(client, b"503 5.5.1 no transaction\r\n")
    (done,) = events
    assert done.final.code == 552 and done.final.enhanced == "5.3.4"
    assert client.state == C.READY


def test_no_valid_recipient_sends_no_bdat():
    client = ready(EHLO_CHUNKING)
    client.send_mail(envelope())
    client.data_to_send()
    events, out = feed(client, b"250 ok\r\n550 5.1.1 unknown\r\n")
    assert out == b"" and events[0].rcpts[0].code == 550 and client.state == C.READY


def test_data_without_chunking_or_without_pipelining_or_when_disabled():
    for ehlo, kw in ((EHLO_FULL, {}), (EHLO_CHUNKING_ONLY, {}),
                     (EHLO_CHUNKING, {"chunking": False})):
        client = ready(ehlo, **kw)
        client.send_mail(envelope())
        out = client.data_to_send()
        while not out.endswith(b"DATA\r\n"):
            out = feed(client, b"250 ok\r\n")[1]
        assert b"BDAT" not in out
