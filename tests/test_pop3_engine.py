"""The sans-IO POP3 client engine: scripted server bytes in, events and commands out."""

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masq.proto import pop3 as P
from masq.proto.errors import ProtocolError, UsageError


def events(client, data=b""):
    if data:
        client.receive_data(data)
    out = []
    while True:
        event = client.next_event()
        if event is P.NEED_DATA:
            return out
        out.append(event)


def logged_in(caps=b"UIDL\r\nUSER\r\n"):
    client = P.Client()
    events(client, b"+OK ready\r\n")
    client.capa()
    events(client, b"+OK\r\n" + caps + b".\r\n")
    client.user_pass("alice", "pw")
    assert client.data_to_send() == b"CAPA\r\nUSER alice\r\n"
    events(client, b"+OK\r\n")
    assert client.data_to_send() == b"PASS pw\r\n"
    assert events(client, b"+OK logged in\r\n") == [P.LoginReply(P.Status(True, "logged in"))]
    assert client.state == P.TRANSACTION
    return client


def stuff(text):
    """Dot-stuff text (CRLF lines) and end it as a POP3 server does."""
    lines = text.split(b"\r\n")
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines[:-1]) + b".\r\n"


def test_greeting_capabilities_and_apop_timestamp():
    client = P.Client()
    [greeting] = events(client, b"+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>\r\n")
    assert greeting.timestamp == b"<1896.697170952@dbc.mtview.ca.us>"
    client.capa()
    [caps] = events(client, b"+OK\r\nTOP\r\nSASL PLAIN LOGIN\r\nPIPELINING\r\n.\r\n")
    assert caps.names == {"TOP": (), "SASL": ("PLAIN", "LOGIN"), "PIPELINING": ()}
    client.apop("mrose", "tanstaaf")
    # RFC 1939's own example
    assert client.data_to_send() == (b"CAPA\r\nAPOP mrose c4c9334bac560ecc979e58001b3e22fb"
                                     b"\r\n")


def test_sasl_plain_and_login_exchanges():
    client = P.Client()
    events(client, b"+OK hi\r\n")
    client.authenticate("LOGIN", "alice", "secret")
    assert client.data_to_send() == b"AUTH LOGIN\r\n"
    events(client, b"+ " + base64.b64encode(b"Username:") + b"\r\n")
    assert client.data_to_send() == base64.b64encode(b"alice") + b"\r\n"
    events(client, b"+ " + base64.b64encode(b"Password:") + b"\r\n")
    assert client.data_to_send() == base64.b64encode(b"secret") + b"\r\n"
    assert events(client, b"+OK\r\n")[0].status.ok
    assert client.state == P.TRANSACTION


def test_cram_md5():
    import hmac
    client = P.Client()
    events(client, b"+OK hi\r\n")
    client.authenticate("CRAM-MD5", "tim", "tanstaaftanstaaf")
    challenge = b"<1896.697170952@postoffice.example.net>"
    client.data_to_send()
    events(client, b"+ " + base64.b64encode(challenge) + b"\r\n")
    digest = hmac.new(b"tanstaaftanstaaf", challenge, hashlib.md5).hexdigest().encode()
    assert base64.b64decode(client.data_to_send().strip()) == b"tim " + digest


def test_failed_login_returns_to_authorization():
    client = P.Client()
    events(client, b"+OK hi\r\n")
    client.user_pass("alice", "bad")
    events(client, b"+OK\r\n")
    [reply] = events(client, b"-ERR [AUTH] no\r\n")
    assert not reply.status.ok and client.state == P.AUTHORIZATION


def test_stls_refuses_injected_data():
    client = P.Client()
    events(client, b"+OK hi\r\n")
    client.stls()
    with pytest.raises(ProtocolError):
        events(client, b"+OK begin TLS\r\n+OK injected\r\n")
    assert client.state == P.CLOSED


def test_stls_then_capabilities_again():
    client = P.Client()
    events(client, b"+OK hi\r\n")
    client.capa()
    events(client, b"+OK\r\nSTLS\r\n.\r\n")
    client.stls()
    assert events(client, b"+OK go\r\n") == [P.StlsReply(P.Status(True, "go"))]
    client.tls_done()
    assert client.capabilities == {} and client.state == P.AUTHORIZATION


def test_uidl_list_retr_dele_quit():
    client = logged_in()
    client.uidl()
    [uidl] = events(client, b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n")
    assert uidl.entries == ((1, "whqtswO00WBw418f9t5JxYwZ"), (2, "QhdPYR:00WBw1Ph7x7"))
    client.list()
    [sizes] = events(client, b"+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n")
    assert sizes.entries == ((1, 120), (2, 200))
    client.retr(1)
    text = b"Subject: x\r\n\r\n.hidden\r\n..two\r\nend\r\n"
    got = events(client, b"+OK 120 octets\r\n" + stuff(text))
    assert b"".join(e.data for e in got if isinstance(e, P.MessageText)) == text
    assert got[-1] == P.MessageEnd(1, len(text))
    client.dele(1)
    assert events(client, b"+OK deleted\r\n") == [P.CommandReply("DELE", 1,
                                                                 P.Status(True, "deleted"))]
    client.quit()
    assert events(client, b"+OK bye\r\n") == [P.QuitReply(P.Status(True, "bye"))]
    assert client.state == P.CLOSED


def test_retr_error_is_a_command_reply():
    client = logged_in()
    client.retr(9)
    assert events(client, b"-ERR no such message\r\n") == [
        P.CommandReply("RETR", 9, P.Status(False, "no such message"))]


def test_commands_wait_for_replies_without_pipelining():
    client = logged_in()
    client.dele(1)
    client.dele(2)
    assert client.data_to_send() == b"DELE 1\r\n"
    events(client, b"+OK\r\n")
    assert client.data_to_send() == b"DELE 2\r\n"


def test_pipelining_sends_at_once():
    client = logged_in(b"UIDL\r\nPIPELINING\r\n")
    client.dele(1)
    client.dele(2)
    client.quit()
    assert client.data_to_send() == b"DELE 1\r\nDELE 2\r\nQUIT\r\n"
    assert len(events(client, b"+OK\r\n+OK\r\n+OK bye\r\n")) == 3


@pytest.mark.parametrize("garbage", [
    b"HELLO\r\n", b"+OKAY\r\n", b"x" * (P.MAX_LINE + 10), b"* OK imap\r\n"])
def test_garbage_greeting_is_a_remote_error(garbage):
    client = P.Client()
    with pytest.raises(ProtocolError):
        events(client, garbage)
    assert client.state == P.CLOSED


def test_bad_uidl_values_are_refused():
    client = logged_in()
    client.uidl()
    with pytest.raises(ProtocolError):
        events(client, b"+OK\r\n1 has\x01control\r\n.\r\n")


def test_unsolicited_reply():
    client = logged_in()
    with pytest.raises(ProtocolError):
        events(client, b"+OK surprise\r\n")


def test_oversized_message():
    client = P.Client(max_message=100)
    events(client, b"+OK\r\n")
    client.user_pass("a", "b")
    events(client, b"+OK\r\n+OK\r\n")
    client.retr(1)
    with pytest.raises(ProtocolError):
        events(client, b"+OK\r\n" + b"a" * 200)


def test_eof_mid_message():
    client = logged_in()
    client.retr(1)
    got = events(client, b"+OK\r\nSubject: x\r\n")
    client.receive_data(b"")
    assert events(client) == [P.ConnectionClosed("eof", P.TRANSACTION)]
    assert got == [P.MessageText(1, b"Subject: x\r\n")]


def test_wrong_state_is_local_error():
    client = P.Client()
    with pytest.raises(UsageError):
        client.retr(1)
    events(client, b"+OK hi\r\n")
    with pytest.raises(UsageError):
        client.user_pass("a b", "x")


lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(
    b"\n", b"")) | st.sampled_from([b".", b"..", b".\r", b". x"]), max_size=30)


@settings(max_examples=300, deadline=None)
@given(lines, st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_text_framing_survives_any_split(message_lines, cuts):
    """Dot-stuffed text cut anywhere comes out whole, exactly, and ends once."""
    text = b"".join(line + b"\r\n" for line in message_lines)
    wire = b"+OK\r\n" + stuff(text) + b"+OK deleted\r\n"
    client = logged_in()
    client.retr(1)
    client.dele(1)
    got, pos, i = [], 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        got += events(client, wire[pos:pos + step])
        pos, i = pos + step, i + 1
    body = b"".join(e.data for e in got if isinstance(e, P.MessageText))
    assert body == text
    ends = [e for e in got if isinstance(e, P.MessageEnd)]
    assert ends == [P.MessageEnd(1, len(text))]
    assert got[-1] == P.CommandReply("DELE", 1, P.Status(True, "deleted"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 64))
def test_any_server_bytes_give_events_or_a_remote_error(data, step):
    """Hostile bytes never raise anything but ProtocolError, never hang."""
    client = logged_in(b"UIDL\r\nPIPELINING\r\n")
    client.uidl()
    client.list()
    client.retr(1)
    client.dele(1)
    client.quit()
    try:
        for pos in range(0, len(data), step):
            events(client, data[pos:pos + step])
        client.receive_data(b"")
        events(client)
    except ProtocolError:
        pass
    assert client.state == P.CLOSED
