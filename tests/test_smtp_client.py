"""SMTP client engine: golden dialogues (bytes in, events and bytes out) and hostile servers."""

import base64
import re

import pytest
from hypothesis import given, settings, strategies as st

from masq.proto import smtp_client as C
from masq.proto.errors import ProtocolError, UsageError
from masq.proto.reply import Reply

EHLO_FULL = (b"250-mx.example hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
             b"250-DSN\r\n250-SMTPUTF8\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN CRAM-MD5\r\n")
EHLO_CHUNKING = EHLO_FULL.replace(b"250 AUTH", b"250-AUTH") + b"250 CHUNKING\r\n"
EHLO_PLAIN = b"250-mx.example\r\n250 SIZE\r\n"


def feed(client, data):
    """Feed bytes; return (events until NEED_DATA, bytes the client wants to send)."""
    if data is not None:
        client.receive_data(data)
    events = []
    while True:
        event = client.next_event()
        if event is C.NEED_DATA:
            return events, client.data_to_send()
        events.append(event)


def drain(client):
    """Return the events the engine holds, without feeding anything."""
    return feed(client, None)


def ready(ehlo=EHLO_FULL, **kw):
    client = C.Client("me.example", **kw)
    events, out = feed(client, b"220 mx.example ESMTP\r\n")
    assert out == b"EHLO me.example\r\n"
    assert isinstance(events[0], C.Greeting)
    events, out = feed(client, ehlo)
    assert isinstance(events[0], C.Hello) and events[0].reply.code == 250
    assert client.state == C.READY
    return client


def envelope(*rcpts, **kw):
    return C.OutgoingEnvelope("a@me.example", rcpts or ("b@mx.example",), **kw)


# Golden dialogues


def test_dialogue_without_pipelining_sends_one_command_per_reply():
    client = ready(EHLO_PLAIN)
    client.send_mail(envelope("b@mx.example", "c@mx.example", size=10))
    assert client.data_to_send() == b"MAIL FROM:<a@me.example> SIZE=10\r\n"
    assert feed(client, b"250 2.1.0 Ok\r\n") == ([], b"RCPT TO:<b@mx.example>\r\n")
    assert feed(client, b"250 2.1.5 Ok\r\n") == ([], b"RCPT TO:<c@mx.example>\r\n")
    assert feed(client, b"550 5.1.1 no such user\r\n") == ([], b"DATA\r\n")
    events, out = feed(client, b"354 go ahead\r\n")
    assert events == [C.BodyRequest()] and out == b""
    client.send_body(b".hidden\r\nline\r\n..two\r\n")
    client.end_body()
    assert client.data_to_send() == b"..hidden\r\nline\r\n...two\r\n.\r\n"
    events, out = feed(client, b"250 2.0.0 queued as X\r\n")
    done = events[0]
    assert done.mail.code == 250 and done.final == Reply(250, "2.0.0", "queued as X")
    assert [r.code for r in done.rcpts] == [250, 550]
    assert done.rcpts[1] == Reply(550, "5.1.1", "no such user")
    client.quit()
    assert client.data_to_send() == b"QUIT\r\n"
    assert feed(client, b"221 bye\r\n")[0] == [C.QuitReply(Reply(221, "", "bye"))]
    assert client.state == C.CLOSED


@pytest.mark.parametrize("pieces, wire_end", [
    ((b"x\n",), b"x\n\r\n.\r\n"),              # issue 12 case 5: never \n.\r\n
    ((b"x\r", b"\n"), b"x\r\n.\r\n"),
    ((b"x\r\n", b"y\r"), b"y\r\r\n.\r\n"),
    ((b"x\r\n", b"\n"), b"x\r\n\n\r\n.\r\n"),
    ((b"x",), b"x\r\n.\r\n"),
    ((), b"354 go\r\n.\r\n"),
])
def test_message_text_always_ends_with_crlf_dot_crlf(pieces, wire_end):
    client = ready(EHLO_PLAIN)
    client.send_mail(envelope())
    feed(client, b"250 ok\r\n")
    feed(client, b"250 ok\r\n")
    feed(client, b"354 go\r\n")
    for piece in pieces:
        client.send_body(piece)
    client.end_body()
    assert (b"354 go\r\n" + client.data_to_send()).endswith(wire_end)


def test_pipelining_sends_mail_rcpts_and_data_at_once_and_matches_replies_in_order():
    client = ready()
    client.send_mail(envelope("b@mx.example", "c@mx.example", "d@mx.example", size=10))
    assert client.data_to_send() == (
        b"MAIL FROM:<a@me.example> SIZE=10\r\nRCPT TO:<b@mx.example>\r\n"
        b"RCPT TO:<c@mx.example>\r\nRCPT TO:<d@mx.example>\r\nDATA\r\n")
    events, out = feed(client, b"250 ok\r\n250 ok\r\n450 4.2.0 later\r\n550 5.1.1 no\r\n"
                               b"354 go\r\n")
    assert events == [C.BodyRequest()] and client.state == C.BODY
    client.send_body(b"x\r\n")
    client.end_body()
    events, _ = feed(client, b"250 ok\r\n")
    assert [r.code for r in events[0].rcpts] == [250, 450, 550]
    assert events[0].final.code == 250 and client.state == C.READY


def test_second_message_after_rset_is_pipelined_with_it():
    client = ready()
    client.reset()
    client.send_mail(envelope())
    assert client.data_to_send() == (b"RSET\r\nMAIL FROM:<a@me.example>\r\n"
                                     b"RCPT TO:<b@mx.example>\r\nDATA\r\n")
    events, _ = feed(client, b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert events == [C.ResetReply(Reply(250, "", "reset")), C.BodyRequest()]


def test_rset_waits_for_its_reply_without_pipelining():
    client = ready(EHLO_PLAIN)
    client.reset()
    client.send_mail(envelope())
    assert client.data_to_send() == b"RSET\r\n"
    assert feed(client, b"250 ok\r\n")[1] == b"MAIL FROM:<a@me.example>\r\n"


def test_mail_refused_skips_rcpt_and_data_without_pipelining():
    client = ready(EHLO_PLAIN)
    client.send_mail(envelope())
    client.data_to_send()
    events, out = feed(client, b"553 5.7.1 sender rejected\r\n")
    assert out == b"" and events[0].mail.code == 553 and events[0].rcpts == (None,)
    assert client.state == C.READY


def test_all_rcpts_refused_skips_data_without_pipelining():
    client = ready(EHLO_PLAIN)
    client.send_mail(envelope())
    feed(client, b"250 ok\r\n")
    events, out = feed(client, b"550 no\r\n")
    assert out == b"" and events[0].data is None and events[0].rcpts[0].code == 550


def test_354_with_no_recipient_accepted_gets_a_lone_dot():
    client = ready()
    client.send_mail(envelope())
    client.data_to_send()
    events, out = feed(client, b"250 ok\r\n550 no\r\n354 go\r\n")
    assert events == [] and out == b".\r\n"
    events, out = feed(client, b"554 no valid recipients\r\n")
    assert events[0].rcpts[0].code == 550 and client.state == C.READY


def test_a_reply_right_behind_the_354_is_an_aborted_transfer():
    client = ready()
    client.send_mail(envelope())
    with pytest.raises(ProtocolError):
        feed(client, b"250 ok\r\n250 ok\r\n354 go\r\n550 5.3.0 aborted\r\n")


def test_a_reply_during_the_message_text_is_unsolicited():
    client = ready()
    client.send_mail(envelope())
    feed(client, b"250 ok\r\n250 ok\r\n354 go\r\n")
    client.send_body(b"half of it")
    with pytest.raises(ProtocolError):
        feed(client, b"421 4.4.2 timeout\r\n")


def test_data_refused_ends_the_transaction():
    client = ready()
    client.send_mail(envelope())
    events, _ = feed(client, b"250 ok\r\n250 ok\r\n554 5.3.0 no data today\r\n")
    assert events[0].data.code == 554 and events[0].final is None


def test_ehlo_5xx_falls_back_to_helo():
    client = C.Client("me.example")
    feed(client, b"220 old server\r\n")
    events, out = feed(client, b"502 what?\r\n")
    assert events == [] and out == b"HELO me.example\r\n"
    events, _ = feed(client, b"250 hi\r\n")
    assert events[0].reply.code == 250 and not client.extended
    assert "PIPELINING" not in client.extensions and client.state == C.READY


def test_ehlo_421_and_greeting_554_turn_the_session_away():
    client = C.Client("me.example")
    feed(client, b"220 hi\r\n")
    events, out = feed(client, b"421 4.3.2 busy\r\n")
    assert events[0].reply.code == 421 and out == b"" and client.state == C.REFUSED
    other = C.Client("me.example")
    events, out = feed(other, b"554 5.7.1 go away\r\n")
    assert events == [C.Greeting(Reply(554, "5.7.1", "go away"))] and out == b""
    other.quit()
    assert other.data_to_send() == b"QUIT\r\n"


def test_extensions_are_parsed():
    ext = ready().extensions
    assert ext.size == 1000 and ext.auth == {"PLAIN", "LOGIN", "CRAM-MD5"}
    assert all(k in ext for k in ("PIPELINING", "8BITMIME", "DSN", "SMTPUTF8", "STARTTLS"))
    old = C.Extensions(["AUTH=LOGIN PLAIN", "SIZE x"])
    assert old.auth == {"LOGIN", "PLAIN"} and old.size is None


def test_starttls_then_ehlo_again_with_fresh_extensions():
    client = ready()
    client.starttls()
    assert client.data_to_send() == b"STARTTLS\r\n"
    events, _ = feed(client, b"220 2.0.0 ready\r\n")
    assert isinstance(events[0], C.StartTLSReply) and client.state == C.HANDSHAKE
    client.tls_done()
    assert client.data_to_send() == b"EHLO me.example\r\n" and len(client.extensions.keywords) == 0
    events, _ = feed(client, b"250-mx\r\n250 AUTH PLAIN\r\n")
    assert events[0].extensions.auth == {"PLAIN"} and "STARTTLS" not in client.extensions


def test_starttls_454_leaves_the_session_ready():
    client = ready()
    client.starttls()
    events, _ = feed(client, b"454 4.7.0 TLS not available\r\n")
    assert events[0].reply.code == 454 and client.state == C.READY


def test_bytes_piggybacked_on_the_starttls_reply_are_an_injection():
    client = ready()
    client.starttls()
    with pytest.raises(ProtocolError) as err:
        feed(client, b"220 go\r\n250 injected\r\n")
    assert err.value.reply.code == 451 and client.state == C.CLOSED


def test_auth_plain_sends_an_initial_response():
    client = ready()
    client.authenticate("PLAIN", "user", "pässword")
    line = client.data_to_send()
    assert line == b"AUTH PLAIN " + base64.b64encode("\0user\0pässword".encode()) + b"\r\n"
    assert feed(client, b"235 2.7.0 ok\r\n")[0] == [C.AuthReply(Reply(235, "2.7.0", "ok"))]


def test_auth_login_answers_two_prompts():
    client = ready()
    client.authenticate("LOGIN", "user", "pw")
    assert client.data_to_send() == b"AUTH LOGIN\r\n"
    assert feed(client, b"334 VXNlcm5hbWU6\r\n")[1] == b"dXNlcg==\r\n"
    assert feed(client, b"334 UGFzc3dvcmQ6\r\n")[1] == b"cHc=\r\n"
    events, out = feed(client, b"535 5.7.8 bad credentials\r\n")
    assert events[0].reply.code == 535 and client.state == C.READY


def test_auth_cram_md5_matches_rfc_2195():
    client = ready()
    client.authenticate("CRAM-MD5", "tim", "tanstaaftanstaaf")
    assert client.data_to_send() == b"AUTH CRAM-MD5\r\n"
    challenge = base64.b64encode(b"<1896.697170952@postoffice.reston.mci.net>")
    _, out = feed(client, b"334 " + challenge + b"\r\n")
    assert base64.b64decode(out) == b"tim b913a602c7eda7a495b4e6e7334d3890"


def test_auth_extra_challenge_is_cancelled():
    client = ready()
    client.authenticate("PLAIN", "u", "p")
    client.data_to_send()
    assert feed(client, b"334 \r\n")[1] == b"*\r\n"
    assert feed(client, b"501 cancelled\r\n")[0][0].reply.code == 501


def test_bad_cram_md5_challenge_is_a_remote_error():
    client = ready()
    client.authenticate("CRAM-MD5", "u", "p")
    with pytest.raises(ProtocolError):
        feed(client, b"334 !!not base64!!\r\n")


@pytest.mark.parametrize("offered, encrypted, plain_ok, expected", [
    ({"PLAIN", "LOGIN", "CRAM-MD5"}, True, False, "PLAIN"),
    ({"LOGIN", "CRAM-MD5"}, True, False, "LOGIN"),
    ({"PLAIN", "LOGIN", "CRAM-MD5"}, False, False, "CRAM-MD5"),
    ({"PLAIN", "LOGIN"}, False, False, None),
    ({"PLAIN", "LOGIN"}, False, True, "PLAIN"),
    ({"LOGIN"}, False, True, "LOGIN"),
    ({"XOAUTH2"}, True, False, None),
    (set(), True, False, None),
])
def test_choose_mechanism(offered, encrypted, plain_ok, expected):
    assert C.choose_mechanism(offered, encrypted, plain_ok) == expected


# MAIL and RCPT parameters


def test_body_8bitmime_smtputf8_and_dsn_parameters():
    client = ready()
    env = C.OutgoingEnvelope("ä@me.example", ("b@mx.example", "c@mx.example"), size=5,
                             body8bit=True, ret="hdrs", envid="id+1=x",
                             notify=(("SUCCESS", "FAILURE"), "never"),
                             orcpt=(("rfc822", "b+x@mx.example"), "rfc822;ü@mx"))
    client.send_mail(env)
    lines = client.data_to_send().decode("utf-8").split("\r\n")
    assert lines[0] == ("MAIL FROM:<ä@me.example> SIZE=5 BODY=8BITMIME SMTPUTF8 RET=HDRS "
                        "ENVID=id+2B1+3Dx")
    assert lines[1] == "RCPT TO:<b@mx.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@mx.example"
    assert lines[2] == "RCPT TO:<c@mx.example> NOTIFY=NEVER ORCPT=rfc822;+C3+BC@mx"


def test_no_extension_parameters_when_not_offered():
    client = ready(b"250-mx\r\n250 PIPELINING\r\n")
    client.send_mail(envelope(size=5, body8bit=True, ret="FULL", envid="x", notify=("NEVER",)))
    assert client.data_to_send().split(b"\r\n")[:2] == [b"MAIL FROM:<a@me.example>",
                                                        b"RCPT TO:<b@mx.example>"]


def test_size_over_the_servers_limit_is_refused_locally():
    client = ready()
    client.send_mail(envelope(size=1001))
    events, out = drain(client)
    assert out == b"" and events[0].mail.code == 552 and events[0].mail.enhanced == "5.3.4"
    assert client.state == C.READY


def test_smtputf8_needed_but_not_offered_is_a_permanent_5_6_7():
    client = ready(EHLO_PLAIN)
    client.send_mail(C.OutgoingEnvelope("a@me.example", ("ü@mx.example",)))
    events, out = drain(client)
    assert out == b"" and events[0].mail.enhanced == "5.6.7" and events[0].mail.code >= 500


def test_control_characters_in_addresses_never_reach_the_wire():
    client = ready()
    client.send_mail(C.OutgoingEnvelope("a@me.example", ("b@mx\r\nRSET", "c@mx.example")))
    out = client.data_to_send()
    assert b"RSET" not in out and b"RCPT TO:<c@mx.example>" in out
    events, _ = feed(client, b"250 ok\r\n250 ok\r\n354 go\r\n")
    client.send_body(b"x\r\n")
    client.end_body()
    done = feed(client, b"250 ok\r\n")[0][0]
    assert done.rcpts[0].code == 553 and done.rcpts[1].code == 250
    bad = ready()
    bad.send_mail(C.OutgoingEnvelope("a@b>\r\nDATA", ("c@mx.example",)))
    assert bad.data_to_send() == b"" and drain(bad)[0][0].mail.code == 553


# Replies


def test_multiline_reply_with_enhanced_codes():
    client = C.Client("me")
    events, _ = feed(client, b"220-2.0.0 first\r\n220-2.0.0 second\r\n220 2.0.0 third\r\n")
    assert events[0].reply == Reply(220, "2.0.0", ["first", "second", "third"])


def test_enhanced_code_of_the_wrong_class_is_kept_as_text():
    client = C.Client("me")
    events, _ = feed(client, b"220 5.0.0 odd\r\n")
    assert events[0].reply.enhanced == "" and events[0].reply.text == ("5.0.0 odd",)


def test_bare_lf_and_code_only_lines_are_accepted():
    client = C.Client("me")
    events, _ = feed(client, b"220\n")
    assert events[0].reply.code == 220


def test_replies_split_across_reads():
    client = C.Client("me")
    for byte in b"220-a\r\n220 b\r":
        assert feed(client, bytes([byte]))[0] == []
    events, _ = feed(client, b"\n")
    assert events[0].reply.lines == ("a", "b")


@pytest.mark.parametrize("data", [
    b"hello\r\n",                       # garbage
    b"2200 x\r\n",                      # four digits
    b"22 x\r\n",                        # two digits
    b"620 x\r\n",                       # no such class
    b"220_x\r\n",                       # bad separator
    b"220-a\r\n250 b\r\n",              # code changes within a reply
    b"220 " + b"x" * 3000 + b"\r\n",    # overlong line
    b"220 " + b"x" * 3000,              # overlong, no line end yet
    b"220-x\r\n" * 101 + b"220 x\r\n",  # too many lines
    b"220 hi\r\n250 ehlo\r\n250 extra\r\n",  # a reply nothing asked for
])
def test_hostile_replies_raise_remote_protocol_error(data):
    client = C.Client("me")
    with pytest.raises(ProtocolError) as err:
        feed(client, data)
    assert err.value.reply.code == 451 and err.value.reply.enhanced == "4.5.0"
    assert client.state == C.CLOSED
    assert feed(client, b"220 again\r\n") == ([], b"")


def test_reply_after_quit_is_a_remote_error():
    client = ready()
    client.quit()
    with pytest.raises(ProtocolError):
        feed(client, b"221 bye\r\n250 more\r\n")


def test_eof_reports_the_state_it_interrupted():
    client = ready()
    client.send_mail(envelope())
    feed(client, b"250 ok\r\n250 ok\r\n354 go\r\n")
    client.send_body(b"x\r\n")
    client.end_body()
    events, _ = feed(client, b"250 partial line without end")
    assert events == []
    events, _ = feed(client, b"")
    assert events == [C.ConnectionClosed("eof", C.DOT)] and client.state == C.CLOSED


def test_misuse_raises_local_protocol_error():
    client = C.Client("me")
    with pytest.raises(UsageError):
        client.send_mail(envelope())
    with pytest.raises(UsageError):
        ready().send_body(b"x")
    with pytest.raises(UsageError):
        ready().authenticate("XOAUTH2", "u", "p")


def test_the_transition_table_names_only_known_states():
    states = {C.GREETING, C.HELLO, C.READY, C.TLS, C.HANDSHAKE, C.AUTH, C.TXN, C.BODY,
              C.DOT, C.REFUSED, C.QUIT, C.CLOSED}
    for (state, trigger), after in C.TRANSITIONS.items():
        assert state in states | {C.ANY} and after in states, (state, trigger)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_never_raise_anything_but_remote_protocol_error(chunks):
    client = C.Client("me")
    try:
        for chunk in chunks + [b""]:
            feed(client, chunk)
            if client.state == C.READY:
                client.send_mail(envelope())
    except ProtocolError:
        assert client.state == C.CLOSED


# Dot-stuffing


def unstuff(wire):
    """Reference decoder: split at CRLF.CRLF, drop one leading dot per line."""
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    text = wire[:-3]
    return b"".join(line[1:] if line.startswith(b".") else line
                    for line in re.split(rb"(?<=\r\n)", text))


line_text = st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=400)
@given(st.lists(line_text, max_size=12), st.booleans(), st.data())
def test_dot_stuffing_round_trip(lines, final_crlf, data):
    text = b"\r\n".join(lines) + (b"\r\n" if final_crlf and lines else b"")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    chunks = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    client = ready()
    client.send_mail(envelope())
    client.data_to_send()
    feed(client, b"250 ok\r\n250 ok\r\n354 go\r\n")
    for chunk in chunks:
        client.send_body(chunk)
    client.end_body()
    wire = client.data_to_send()
    expected = text if (not text or text.endswith(b"\r\n")) else text + b"\r\n"
    assert unstuff(wire) == expected
    assert b"\r\n.\r\n" not in wire[:-5] and not wire[:-3].startswith(b".\r\n")
