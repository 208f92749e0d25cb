"""Engine tests for masq/proto/smtp_server.py: bytes in, events out, golden dialogues.

Each docs/FAULTS.md §4.1 row that applies to the engine has a test named `test_faults_NN_...`.
Golden dialogues are data: lists of (client bytes, exact server bytes).
"""

import tracemalloc

import pytest
from hypothesis import given, settings, strategies as st

from masq.proto import smtp_server_states
from masq.proto.errors import ConnectionClosed, UsageError
from masq.proto.reply import Reply
from masq.proto.smtp_server import (
    NEED_DATA, PAUSED, AuthRequest, DataAborted, DataChunk, DataStart,
    EndOfData, Hello, MailFrom, Quit, RcptTo, Reset, SMTPServer, StartTLS)
from masq.proto.smtp_server_framing import has_long_line

HOST = "mx.test"
EHLO_LINES = [b"250-mx.test", b"250-PIPELINING", b"250-SIZE 10000", b"250-ENHANCEDSTATUSCODES",
              b"250-8BITMIME", b"250-DSN", b"250-SMTPUTF8", b"250-CHUNKING", b"250 BINARYMIME"]
EHLO_REPLY = b"\r\n".join(EHLO_LINES) + b"\r\n"
OK = b"250 2.0.0 OK\r\n"
MAIL_OK = b"250 2.1.0 Sender OK\r\n"
RCPT_OK = b"250 2.1.5 Recipient OK\r\n"
GO = b"354 Send the message; end it with a line holding only a dot\r\n"
QUEUED = b"250 2.0.0 Message queued\r\n"
BYE = b"221 2.0.0 Goodbye\r\n"
ENVELOPE = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
ENVELOPE_REPLY = EHLO_REPLY + MAIL_OK + RCPT_OK
EHLO_TLS = EHLO_REPLY.replace(b"250-SIZE 10000\r\n", b"250-SIZE 10000\r\n250-STARTTLS\r\n")


def server(**kw):
    kw.setdefault("max_size", 10000)
    return SMTPServer(HOST, **kw)


class Client:
    """Drive an engine: feed bytes, answer decisions with `answer(event)`, collect events."""

    def __init__(self, srv=None, answer=None, **kw):
        self.srv = srv or server(**kw)
        self.answer = answer or (lambda event: None)
        self.events = []

    def send(self, data):
        """Feed data, drain events; return the bytes the server wants to write."""
        if data is not None:
            self.srv.receive_data(data)
        while True:
            event = self.srv.next_event()
            if event is NEED_DATA:
                break
            if event is PAUSED:
                self.srv.respond(self.answer(self.events[-1]))
                continue
            self.events.append(event)
            if isinstance(event, ConnectionClosed):
                break
        return self.srv.data_to_send()

    def body(self):
        return b"".join(e.data for e in self.events if isinstance(e, DataChunk))

    def kinds(self):
        return [type(e).__name__ for e in self.events]


def converse(client, script):
    """Send each client turn of a golden script; return [(client bytes, server bytes)]."""
    return [(sent, client.send(sent)) for sent, _ in script]


# ---- golden dialogues --------------------------------------------------------------------

GOLDEN_BASIC = [
    (b"EHLO client.example\r\n", EHLO_REPLY),
    (b"MAIL FROM:<alice@example.org> SIZE=100 BODY=8BITMIME\r\n", MAIL_OK),
    (b"RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40example.net\r\n",
     RCPT_OK),
    (b"DATA\r\n", GO),
    (b"Subject: hi\r\n\r\n..dot\r\n.\r\n", QUEUED),
    (b"NOOP\r\n", OK),
    (b"VRFY bob\r\n",
     b"252 2.5.2 Addresses are not verified here; send the mail and masq will try it\r\n"),
    (b"HELP\r\n",
     b"214 2.0.0 masq knows HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT\r\n"),
    (b"RSET\r\n", OK),
    (b"QUIT\r\n", BYE),
]

GOLDEN_PIPELINED = [
    (ENVELOPE + b"DATA\r\n", ENVELOPE_REPLY + GO),
    (b"x\r\n.\r\nMAIL FROM:<> \r\nRCPT TO:<e@f.test>\r\nDATA\r\ny\r\n.\r\nQUIT\r\n",
     QUEUED + MAIL_OK + RCPT_OK + GO + QUEUED + BYE),
]

GOLDEN_HELO = [
    (b"HELO old.client\r\n", b"250 mx.test\r\n"),
    (b"MAIL FROM:<a@b.test>\r\n", MAIL_OK),
    (b"QUIT\r\n", BYE),
]

GOLDEN_SEQUENCE = [  # FAULTS 4.1 #10
    (b"MAIL FROM:<a@b.test>\r\n", b"503 5.5.1 Send EHLO or HELO first\r\n"),
    (b"RCPT TO:<a@b.test>\r\n", b"503 5.5.1 Send MAIL FROM first\r\n"),
    (b"DATA\r\n", b"503 5.5.1 Send MAIL FROM first\r\n"),
    (b"EHLO c.test\r\n", EHLO_REPLY),
    (b"RCPT TO:<a@b.test>\r\n", b"503 5.5.1 Send MAIL FROM first\r\n"),
    (b"MAIL FROM:<a@b.test>\r\n", MAIL_OK),
    (b"DATA\r\n", b"503 5.5.1 Send RCPT TO first\r\n"),
    (b"MAIL FROM:<a@b.test>\r\n", b"503 5.5.1 Sender already given; send RSET to start over\r\n"),
    (b"RCPT TO:<c@d.test>\r\n", RCPT_OK),
    (b"MAIL FROM:<a@b.test>\r\n", b"503 5.5.1 Sender already given; send RSET to start over\r\n"),
    (b"RSET\r\n", OK),
    (b"DATA\r\n", b"503 5.5.1 Send MAIL FROM first\r\n"),
]


def test_greeting_default_and_refused():
    srv = server()
    assert srv.greeting() == b"220 mx.test ESMTP masq\r\n"
    srv = server()
    assert srv.greeting(Reply(421, "4.3.2", "not now")) == b"421 4.3.2 not now\r\n"
    assert srv.next_event() == ConnectionClosed("refused")


def test_a_554_greeting_answers_503_to_everything_until_quit():
    """RFC 5321 section 3.1: after a 554 greeting the server waits for QUIT and answers any
    other command 503; no command reaches the application."""
    srv = server()
    assert srv.greeting(Reply(554, "5.7.1", "go away")) == b"554 5.7.1 go away\r\n"
    srv.receive_data(b"EHLO a.test\r\nMAIL FROM:<a@a.test>\r\nRCPT TO:<b@b.test>\r\n"
                     b"DATA\r\nBDAT 3 LAST\r\nxyzRSET\r\nNOOP\r\nSTARTTLS\r\nQUIT\r\n")
    events = []
    while not events or type(events[-1]) is not ConnectionClosed:
        events.append(srv.next_event())
    assert [type(e).__name__ for e in events] == ["Quit", "ConnectionClosed"]
    assert srv.data_to_send() == (
        b"503 5.5.1 No mail is taken in this session; send QUIT\r\n" * 8
        + b"221 2.0.0 Goodbye\r\n")


def test_golden_basic_session():
    client = Client()
    assert converse(client, GOLDEN_BASIC) == GOLDEN_BASIC
    assert client.kinds() == ["Hello", "MailFrom", "RcptTo", "DataStart", "DataChunk",
                              "EndOfData", "Reset", "Quit", "ConnectionClosed"]
    assert client.events[1] == MailFrom("alice@example.org", {"SIZE": 100, "BODY": "8BITMIME"})
    assert client.events[2].params == {"NOTIFY": ("SUCCESS", "FAILURE"),
                                       "ORCPT": ("rfc822", "bob@example.net")}
    assert client.body() == b"Subject: hi\r\n\r\n.dot\r\n"


def test_golden_pipelined_two_messages():
    client = Client()
    assert converse(client, GOLDEN_PIPELINED) == GOLDEN_PIPELINED
    assert client.kinds().count("EndOfData") == 2
    assert client.events[-1] == ConnectionClosed("quit")


def test_golden_helo():
    client = Client()
    assert converse(client, GOLDEN_HELO) == GOLDEN_HELO
    assert client.events[0] == Hello("old.client", False)


def test_faults_10_sequence_errors():
    client = Client()
    assert converse(client, GOLDEN_SEQUENCE) == GOLDEN_SEQUENCE


def test_ehlo_advertises_starttls_and_auth_only_when_usable():
    plain = Client(tls_available=True, auth_mechanisms=("PLAIN", "LOGIN"))
    reply = plain.send(b"EHLO c.test\r\n")
    assert b"250-STARTTLS\r\n" in reply and b"AUTH" not in reply
    open_auth = Client(auth_mechanisms=("PLAIN",), auth_needs_tls=False)
    reply = open_auth.send(b"EHLO c.test\r\n")
    assert b"250-AUTH PLAIN\r\n" in reply and b"STARTTLS" not in reply
    tls = Client(tls_available=True, tls_active=True, auth_mechanisms=("LOGIN",))
    reply = tls.send(b"EHLO c.test\r\n")
    assert b"250-AUTH LOGIN\r\n" in reply and b"STARTTLS" not in reply
    assert b"CHUNKING" not in Client(chunking=False).send(b"EHLO c.test\r\n")


def test_transition_table_covers_every_command_and_state():
    columns = len(smtp_server_states.COLUMN)
    assert set(smtp_server_states.TRANSITIONS) == set(SMTPServer._COMMANDS)
    assert all(len(row) == columns for row in smtp_server_states.TRANSITIONS.values())


def test_ehlo_inside_transaction_resets_it():
    script = [(ENVELOPE, ENVELOPE_REPLY), (b"EHLO again.test\r\n", EHLO_REPLY),
              (b"RCPT TO:<x@y.test>\r\n", b"503 5.5.1 Send MAIL FROM first\r\n")]
    client = Client()
    assert converse(client, script) == script
    assert client.kinds()[3:5] == ["Reset", "Hello"]


# ---- the application's answers -----------------------------------------------------------

def test_app_refusals_and_custom_accepts():
    def answer(event):
        if isinstance(event, RcptTo) and event.address.startswith("nobody"):
            return Reply(550, "5.1.1", "<nobody@d.test>: User unknown")
        if isinstance(event, RcptTo):
            return Reply(251, "2.1.5", "User not local; will forward")
        if isinstance(event, EndOfData):
            return Reply(250, "2.0.0", "Message queued as 42")
        return None
    script = [(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n", EHLO_REPLY + MAIL_OK),
              (b"RCPT TO:<nobody@d.test>\r\n", b"550 5.1.1 <nobody@d.test>: User unknown\r\n"),
              (b"DATA\r\n", b"503 5.5.1 Send RCPT TO first\r\n"),
              (b"RCPT TO:<c@d.test>\r\n", b"251 2.1.5 User not local; will forward\r\n"),
              (b"DATA\r\nhi\r\n.\r\n", GO + b"250 2.0.0 Message queued as 42\r\n")]
    client = Client(answer=answer)
    assert converse(client, script) == script


def test_refused_end_of_data_ends_transaction():
    answer = (lambda e: Reply(554, "5.6.0", "rejected") if isinstance(e, EndOfData) else None)
    script = [(ENVELOPE + b"DATA\r\nx\r\n.\r\n", ENVELOPE_REPLY + GO + b"554 5.6.0 rejected\r\n"),
              (b"RCPT TO:<c@d.test>\r\n", b"503 5.5.1 Send MAIL FROM first\r\n")]
    client = Client(answer=answer)
    assert converse(client, script) == script


def test_end_of_data_answer_may_come_many_turns_later():
    srv = server()
    srv.receive_data(ENVELOPE + b"DATA\r\nhi\r\n.\r\nNOOP\r\n")
    seen = []
    while (event := srv.next_event()) is not NEED_DATA:
        if event is PAUSED:
            if isinstance(seen[-1], EndOfData):
                break
            srv.respond(None)
        else:
            seen.append(event)
    srv.receive_data(b"NOOP\r\n")  # buffered while PAUSED
    assert srv.next_event() is PAUSED and srv.next_event() is PAUSED
    assert srv.data_to_send() == ENVELOPE_REPLY + GO
    srv.respond(None)
    assert srv.next_event() is NEED_DATA
    assert srv.data_to_send() == QUEUED + OK + OK


def test_misuse_raises_local_protocol_error():
    srv = server()
    with pytest.raises(UsageError):
        srv.respond(None)
    srv.receive_data(b"EHLO c.test\r\n")
    assert isinstance(srv.next_event(), Hello)
    with pytest.raises(UsageError):
        srv.respond(Reply(250, "2.0.0", "custom EHLO not allowed"))
    srv.respond(None)
    with pytest.raises(UsageError):
        srv.start_tls_done()


def test_app_421_closes_session():
    answer = (lambda e: Reply(421, "4.3.5", "Server configuration error")
              if isinstance(e, MailFrom) else None)
    client = Client(answer=answer)
    out = client.send(ENVELOPE)
    assert out == EHLO_REPLY + b"421 4.3.5 Server configuration error\r\n"
    assert client.events[-1] == ConnectionClosed("refused")


def test_wants_data_bounds_buffer_while_paused():
    srv = server(max_pending=1024)
    srv.receive_data(b"EHLO c.test\r\n" + b"NOOP\r\n" * 200)
    assert isinstance(srv.next_event(), Hello) and srv.next_event() is PAUSED
    assert not srv.wants_data
    with pytest.raises(UsageError):
        srv.receive_data(b"NOOP\r\n")
    srv.respond(None)
    assert srv.next_event() is NEED_DATA and srv.wants_data and srv.buffered == 0


# ---- FAULTS 4.1 --------------------------------------------------------------------------

def test_faults_01_command_too_long_then_session_continues():
    too_long = b"500 5.5.2 Command line too long\r\n"
    line = b"RCPT TO:<" + b"a" * 10240 + b"@d.test>\r\n"
    script = [(ENVELOPE, ENVELOPE_REPLY), (line, too_long), (b"NOOP\r\n", OK)]
    client = Client()
    assert converse(client, script) == script
    exact = b"NOOP " + b"x" * (512 - 7) + b"\r\n"  # 512 octets with CRLF: allowed
    script = [(exact, OK), (exact[:-2] + b"x\r\n", too_long)]
    client = Client()
    assert converse(client, script) == script


def test_faults_01_megabyte_without_crlf_keeps_memory_bounded():
    srv = server()
    client = Client(srv)
    for _ in range(16):
        assert client.send(b"A" * 65536) == b""
        assert srv.buffered <= srv.max_line
    assert client.send(b"tail\r\nNOOP\r\n") == b"500 5.5.2 Command line too long\r\n" + OK


def test_faults_01_repeated_abuse_ends_in_421():
    out = Client().send(b"X" * 600 + b"\r\n" * 1 + (b"Y" * 600 + b"\r\n") * 25)
    assert out.count(b"500 5.5.2 Command line too long\r\n") == 20
    assert out.endswith(b"421 4.7.0 mx.test Too many errors; closing\r\n")


def test_faults_03_bare_lf_commands_are_normalised():
    script = [(b"EHLO c.test\n", EHLO_REPLY), (b"MAIL FROM:<a@b.test>\n", MAIL_OK),
              (b"RCPT TO:<c@d.test>\r\n", RCPT_OK), (b"DATA\n", GO),
              (b"a\nb\n.\n.\r\n", b""), (b"\r\n.\r\n", QUEUED)]
    client = Client()
    assert converse(client, script) == script
    assert client.body() == b"a\nb\n.\n.\r\n\r\n"  # in DATA bare LF is text, never a terminator


def test_faults_03_bare_cr_in_command_is_refused():
    script = [(b"EHLO c.test\r\n", EHLO_REPLY),
              (b"MAIL FROM:<a@b.test>\rRCPT TO:<x@y.test>\r\n",
               b"500 5.5.2 CR without LF in a command; end lines with CRLF\r\n"),
              (b"NOOP\r\r\n", b"500 5.5.2 CR without LF in a command; end lines with CRLF\r\n")]
    client = Client()
    assert converse(client, script) == script


def test_faults_07_pipelined_plaintext_after_starttls_is_discarded():
    client = Client(tls_available=True)
    out = client.send(b"EHLO c.test\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
    assert out.endswith(b"250 BINARYMIME\r\n220 2.0.0 Go ahead with the TLS handshake\r\n")
    assert not any(isinstance(e, MailFrom) for e in client.events)
    assert not client.srv.wants_data
    with pytest.raises(UsageError):
        client.srv.receive_data(b"more plaintext")
    client.srv.start_tls_done()
    script = [(b"MAIL FROM:<a@b.test>\r\n", b"503 5.5.1 Send EHLO or HELO first\r\n"),
              (b"EHLO c.test\r\n", EHLO_REPLY)]
    assert converse(client, script) == script
    assert client.srv.tls_active


def test_faults_08_starttls_twice_with_argument_after_auth_or_unavailable():
    script = [(b"EHLO c.test\r\n", EHLO_REPLY),
              (b"STARTTLS\r\n", b"502 5.5.1 Command not offered here\r\n")]
    client = Client()
    assert converse(client, script) == script
    script = [(b"STARTTLS now\r\n", b"501 5.5.4 Usage: STARTTLS\r\n"),
              (b"STARTTLS\r\n", b"220 2.0.0 Go ahead with the TLS handshake\r\n")]
    client = Client(tls_available=True)
    assert converse(client, script) == script
    client.srv.start_tls_done()
    script = [(b"EHLO c.test\r\n", EHLO_REPLY),
              (b"STARTTLS\r\n", b"554 5.5.1 TLS is already on\r\n")]
    assert converse(client, script) == script
    auth = Client(tls_available=True, auth_mechanisms=("PLAIN",), auth_needs_tls=False)
    auth.send(b"EHLO c.test\r\nAUTH PLAIN AHUAcA==\r\n")
    assert auth.send(b"STARTTLS\r\n") == b"503 5.5.1 Already logged in\r\n"
    script = [(ENVELOPE + b"STARTTLS\r\n", EHLO_TLS + MAIL_OK + RCPT_OK +
               b"503 5.5.1 Not inside a mail transaction; send RSET first\r\n")]
    client = Client(tls_available=True)
    assert converse(client, script) == script


def test_faults_11_unknown_verb():
    script = [(b"EHLO c.test\r\nFOO bar\r\n", EHLO_REPLY +
               b"500 5.5.2 Unknown command\r\n")]
    client = Client()
    assert converse(client, script) == script


@pytest.mark.parametrize("line", [b"GET / HTTP/1.1", b"POST /x HTTP/1.0",
                                  b"CONNECT mx.test:25 HTTP/1.1", b"Host: mx.test",
                                  b"User-Agent: curl/8"])
def test_faults_11_http_request_disconnects(line):
    client = Client()
    out = client.send(line + b"\r\nHost: x\r\n\r\n")
    assert out == b"221 2.7.0 This is an SMTP server, not HTTP; closing\r\n"
    assert client.events == [ConnectionClosed("junk")]
    assert client.srv.next_event() == ConnectionClosed("junk")


def test_faults_11_too_many_errors_then_421():
    client = Client()
    out = client.send(b"BOGUS\r\n" * 30)
    assert out.count(b"500 5.5.2") == 20
    assert out.endswith(b"421 4.7.0 mx.test Too many errors; closing\r\n")
    assert client.events == [ConnectionClosed("too many errors")]


def test_faults_11_tls_client_hello_on_plain_port():
    hello = bytes.fromhex("160301020001000200fc0303") + bytes(range(256)) * 2 + b"\n"
    client = Client()
    client.send(hello + b"\x16\x03\x01" * 100)
    client.send(b"")
    assert client.events[-1] == ConnectionClosed("eof")


def test_faults_12_nul_in_command():
    script = [(b"EHLO c.test\r\n", EHLO_REPLY),
              (b"MAIL FROM:<a@b.test>\x00 SIZE=1\r\n",
               b"501 5.5.2 NUL octet in a command\r\n"),
              (b"MAIL FROM:<a@b.test>\r\n", MAIL_OK)]
    client = Client()
    assert converse(client, script) == script


def test_faults_13_nul_8bit_and_bad_utf8_in_data_pass_through():
    text = b"a\x00b\r\n\xff\xfe\x85\x0b\x0c\x1c\x1d\x1e\r\n\xe2\x80\xa8\r\n"
    script = [(ENVELOPE + b"DATA\r\n", ENVELOPE_REPLY + GO),
              (text + b".\r\n", QUEUED)]
    client = Client()
    assert converse(client, script) == script
    assert client.body() == text


def test_faults_14_unicode_addresses_need_smtputf8():
    need = b"553 5.6.7 A non-ASCII address needs SMTPUTF8 on MAIL FROM\r\n"
    script = [(b"EHLO c.test\r\n", EHLO_REPLY),
              ("MAIL FROM:<jörg@b.test>\r\n".encode(), need),
              ("MAIL FROM:<jörg@b.test> SMTPUTF8\r\n".encode(), MAIL_OK),
              ("RCPT TO:<δοκιμή@d.test>\r\n".encode(), RCPT_OK),
              (b"RSET\r\nMAIL FROM:<a@b.test>\r\n", OK + MAIL_OK),
              ("RCPT TO:<δοκιμή@d.test>\r\n".encode(), need),
              (b"RCPT TO:<\xc3\x28@d.test>\r\n", b"500 5.5.2 Invalid UTF-8 in a command\r\n")]
    client = Client()
    assert converse(client, script) == script


def test_faults_19_parameters_through_the_engine():
    script = [(b"EHLO c.test\r\n", EHLO_REPLY),
              (b"MAIL FROM:<a@b.test> ENVID=x+0D+0AMAIL\r\n",
               b"501 5.5.4 Malformed ENVID parameter\r\n"),
              (b"MAIL FROM:<a@b.test> SIZE=1 SIZE=2\r\n",
               b"501 5.5.4 SIZE parameter given twice\r\n"),
              (b"MAIL FROM:<a@b.test> XFOO=1\r\n", b"555 5.5.4 Parameter XFOO not supported\r\n"),
              (b"MAIL FROM:<a@b.test> AUTH=" + b"x" * 600 + b"\r\n",
               b"500 5.5.2 Command line too long\r\n")]
    client = Client()
    assert converse(client, script) == script


@pytest.mark.parametrize("line, reply", [
    (b"EHLO\r\n", b"501 5.5.4 Usage: EHLO hostname\r\n"),
    (b"HELO   \r\n", b"501 5.5.4 Usage: HELO hostname\r\n"),
    (b"EHLO " + b"h" * 256 + b"\r\n", b"501 5.5.4 Usage: EHLO hostname\r\n"),
    (b"EHLO a b\r\n", b"501 5.5.4 Usage: EHLO hostname\r\n"),
    (b"EHLO a\rX-Injected: 1\r\n",
     b"500 5.5.2 CR without LF in a command; end lines with CRLF\r\n"),
    (b"EHLO " + b"h" * 65536 + b"\r\n", b"500 5.5.2 Command line too long\r\n"),
])
def test_faults_20_bad_helo_names(line, reply):
    client = Client()
    assert client.send(line) == reply
    assert not any(isinstance(e, Hello) for e in client.events)


def test_faults_20_helo_name_bounded_and_literal_accepted():
    script = [(b"EHLO [192.0.2.1]\r\n", EHLO_REPLY),
              (b"EHLO " + b"h" * 255 + b"\r\n", EHLO_REPLY)]
    client = Client()
    assert converse(client, script) == script
    assert client.events[0].name == "[192.0.2.1]" and len(client.events[1].name) == 255


def test_faults_22_ten_thousand_recipients_keep_memory_flat():
    answer = (lambda e: Reply(452, "4.5.3", "Error: too many recipients")
              if isinstance(e, RcptTo) and client.srv.recipients >= 100 else None)
    client = Client(answer=answer)
    client.send(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(100):
        out = client.send(b"RCPT TO:<user@d.test>\r\n" * 100)
        client.events.clear()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert out.count(b"452 4.5.3 Error: too many recipients\r\n") == 100
    assert client.srv.recipients == 100 and client.srv.errors == 0
    assert grown < 64 * 1024


def test_faults_24_size_parameter_above_limit():
    script = [(b"EHLO c.test\r\nMAIL FROM:<a@b.test> SIZE=104857600\r\n",
               EHLO_REPLY + b"552 5.3.4 Declared SIZE over the size limit\r\n")]
    client = Client()
    assert converse(client, script) == script


def test_faults_25_data_over_max_size_read_to_dot_then_552():
    script = ([(ENVELOPE + b"DATA\r\n", ENVELOPE_REPLY + GO),
               (b"x" * 998 + b"\r\n", b"")] +
              [(b"y" * 998 + b"\r\n", b"")] * 20 +
              [(b".\r\n", b"552 5.3.4 Message over the size limit\r\n"),
               (b"MAIL FROM:<a@b.test>\r\n", MAIL_OK)])
    client = Client()
    assert converse(client, script) == script
    kinds = client.kinds()
    assert "EndOfData" not in kinds and kinds.count("DataAborted") == 1
    assert client.events[kinds.index("DataAborted")] == DataAborted("too big")
    assert kinds[kinds.index("DataAborted") + 1] == "Reset"
    assert len(client.body()) <= 10000


def test_faults_02_long_data_line_streamed_then_552_after_dot():
    client = Client(max_data_line=1000)
    client.send(ENVELOPE + b"DATA\r\n")
    ok_line = b"z" * 998 + b"\r\n"
    assert client.send(ok_line + b".\r\n") == QUEUED
    assert client.body() == ok_line
    client.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
    out = b""
    for _ in range(3):
        out += client.send(b"w" * 500)
    out += client.send(b"\r\n.\r\n")
    assert out == b"552 5.3.4 Message has a line over the length limit\r\n"
    assert DataAborted("line too long") in client.events


def test_faults_26_timeout_reply_closes():
    client = Client()
    client.send(ENVELOPE + b"DATA\r\npartial")
    assert client.srv.timeout_reply() == (
        b"421 4.4.2 mx.test Timed out waiting for the client; closing\r\n")
    client.send(b"more after close is ignored\r\n")
    assert client.kinds()[-2:] == ["DataAborted", "ConnectionClosed"]
    assert client.events[-1] == ConnectionClosed("timeout")


def test_shutdown_flushes_pending_replies_first():
    srv = server()
    srv.receive_data(b"NOOP\r\n")
    assert srv.next_event() is NEED_DATA
    assert srv.shutdown() == OK + b"421 4.3.2 mx.test Server shutting down; try again later\r\n"


def test_faults_28_eof_mid_data_aborts():
    client = Client()
    client.send(ENVELOPE + b"DATA\r\nhalf a message")
    client.send(b"")
    assert client.kinds()[-2:] == ["DataAborted", "ConnectionClosed"]
    assert "EndOfData" not in client.kinds()


def test_faults_28_eof_mid_auth():
    client = Client(auth_mechanisms=("LOGIN",), auth_needs_tls=False)
    assert client.send(b"EHLO c.test\r\nAUTH LOGIN\r\n").endswith(b"334 VXNlcm5hbWU6\r\n")
    client.send(b"")
    assert client.events[-1] == ConnectionClosed("eof")


def test_faults_29_eof_right_after_final_dot_still_commits_once():
    client = Client()
    out = client.send(ENVELOPE + b"DATA\r\nbody\r\n.\r\n")
    client.send(b"")
    assert out.endswith(QUEUED)
    assert client.kinds().count("EndOfData") == 1 and client.kinds()[-1] == "ConnectionClosed"


# ---- BDAT (FAULTS #30) -------------------------------------------------------------------

def test_faults_30_bdat_chunks_and_last():
    script = [(ENVELOPE + b"BDAT 5\r\nhello", ENVELOPE_REPLY +
               b"250 2.0.0 Chunk of 5 octets received\r\n"),
              (b"BDAT 7 LAST\r\n, world", QUEUED),
              (b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 0 LAST\r\n",
               MAIL_OK + RCPT_OK + QUEUED)]
    client = Client()
    assert converse(client, script) == script
    assert client.body() == b"hello, world"
    assert client.kinds().count("DataStart") == 2 and client.kinds().count("EndOfData") == 2


def test_faults_30_bdat_counts_bytes_not_lines():
    script = [(ENVELOPE + b"BDAT 13 LAST\r\n.\r\nMAIL FROM:", ENVELOPE_REPLY + QUEUED),
              (b"NOOP\r\n", OK)]
    client = Client()
    assert converse(client, script) == script
    assert client.body() == b".\r\nMAIL FROM:"


def test_faults_30_bdat_then_data_and_sequence():
    script = [(b"EHLO c.test\r\nBDAT 3\r\nabc",
               EHLO_REPLY + b"503 5.5.1 Send MAIL FROM first\r\n"),
              (b"MAIL FROM:<a@b.test>\r\nBDAT 2\r\nxy", MAIL_OK +
               b"503 5.5.1 Send RCPT TO first\r\n"),
              (b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 1\r\nz",
               MAIL_OK + RCPT_OK + b"250 2.0.0 Chunk of 1 octets received\r\n"),
              (b"DATA\r\n", b"503 5.5.1 DATA cannot follow BDAT; send BDAT LAST or RSET\r\n"),
              (b"RCPT TO:<e@f.test>\r\n",
               b"503 5.5.1 RCPT cannot follow BDAT; send BDAT LAST or RSET\r\n"),
              (b"BDAT 0 LAST\r\n", QUEUED)]
    client = Client()
    assert converse(client, script) == script


def test_faults_30_bdat_bad_syntax_closes():
    for arg in (b"BDAT\r\n", b"BDAT x\r\n", b"BDAT 5 FIRST\r\n", b"BDAT -1\r\n",
                b"BDAT 1 LAST extra\r\n", b"BDAT " + b"9" * 21 + b"\r\n"):
        client = Client()
        out = client.send(ENVELOPE + arg + b"RSET\r\n")
        assert out == ENVELOPE_REPLY + b"521 5.5.4 Usage: BDAT size [LAST]; closing\r\n"
        assert client.events[-1] == ConnectionClosed("protocol")


def test_faults_30_huge_bdat_is_discarded_not_buffered():
    client = Client()
    client.send(ENVELOPE + b"BDAT 4294967296 LAST\r\n")
    for _ in range(64):
        assert client.send(b"\x00" * 65536) == b""
        assert client.srv.buffered == 0
    assert "DataStart" not in client.kinds()
    client = Client()
    client.send(ENVELOPE + b"BDAT %d LAST\r\n" % (4 * 1024 * 1024 + 3))
    for _ in range(64):
        client.send(b"MAIL FROM:<xy>\r\n" * 4096)  # 64 KiB: commands inside count as data
    out = client.send(b"abcNOOP\r\n")
    assert out == b"552 5.3.4 Message over the size limit\r\n" + OK
    assert client.kinds()[3:] == ["Reset"]


def test_faults_30_bdat_over_size_across_chunks():
    script = [(ENVELOPE + b"BDAT 6000\r\n" + b"a" * 6000, ENVELOPE_REPLY +
               b"250 2.0.0 Chunk of 6000 octets received\r\n"),
              (b"BDAT 6000 LAST\r\n" + b"b" * 6000,
               b"552 5.3.4 Message over the size limit\r\n"),
              (b"BDAT 1 LAST\r\nc", b"503 5.5.1 Send MAIL FROM first\r\n")]
    client = Client()
    assert converse(client, script) == script
    assert client.kinds().count("DataAborted") == 1 and "EndOfData" not in client.kinds()


def test_faults_30_bdat_without_chunking_is_skipped():
    ehlo = EHLO_REPLY.replace(b"250-SMTPUTF8\r\n250-CHUNKING\r\n250 BINARYMIME", b"250 SMTPUTF8")
    script = [(ENVELOPE + b"BDAT 4\r\nQUIT", ehlo + MAIL_OK + RCPT_OK +
               b"502 5.5.1 Command not offered here\r\n")]
    client = Client(chunking=False)
    assert converse(client, script) == script


def test_bdat_refused_by_app_skips_chunk():
    answer = (lambda e: Reply(554, "5.5.1", "Error: no valid recipients")
              if isinstance(e, DataStart) else None)
    script = [(ENVELOPE + b"BDAT 4 LAST\r\nQUIT", ENVELOPE_REPLY +
               b"554 5.5.1 Error: no valid recipients\r\n")]
    client = Client(answer=answer)
    assert converse(client, script) == script
    assert "Quit" not in client.kinds() and client.kinds()[-1] == "Reset"


# ---- AUTH (FAULTS #32-#34) ---------------------------------------------------------------

def auth_client(answer=None, **kw):
    kw.setdefault("auth_mechanisms", ("PLAIN", "LOGIN"))
    kw.setdefault("tls_active", True)
    client = Client(answer=answer, **kw)
    client.send(b"EHLO c.test\r\n")
    return client


def test_auth_plain_initial_response_and_prompt():
    client = auth_client()
    assert client.send(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n") == (
        b"235 2.7.0 Logged in\r\n")
    assert client.events[-1] == AuthRequest("PLAIN", b"user", b"pass", b"")
    assert "pass" not in repr(client.events[-1])
    client = auth_client()
    assert client.send(b"AUTH plain\r\n") == b"334 \r\n"
    client.send(b"YWRtaW4AdXNlcgBwYXNz\r\n")
    assert client.events[-1] == AuthRequest("PLAIN", b"user", b"pass", b"admin")


def test_auth_login_two_prompts():
    client = auth_client()
    assert client.send(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert client.send(b"dXNlcg==\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert client.send(b"cGFzcw==\r\n") == b"235 2.7.0 Logged in\r\n"
    assert client.events[-1] == AuthRequest("LOGIN", b"user", b"pass", b"")
    assert client.srv.authenticated


def test_faults_32_auth_before_tls():
    script = [(b"EHLO c.test\r\nAUTH PLAIN AHUAcA==\r\n", EHLO_REPLY +
               b"538 5.7.11 Send STARTTLS before AUTH\r\n")]
    client = Client(auth_mechanisms=("PLAIN",))
    assert converse(client, script) == script
    script = [(b"EHLO c.test\r\nAUTH PLAIN\r\n", EHLO_REPLY +
               b"503 5.5.1 AUTH is not offered here\r\n")]
    client = Client()
    assert converse(client, script) == script
    script = [(b"AUTH PLAIN\r\n", b"503 5.5.1 Send EHLO or HELO first\r\n")]
    client = Client(auth_mechanisms=("PLAIN",))
    assert converse(client, script) == script


def test_faults_33_wrong_passwords_count_as_errors():
    answer = (lambda e: Reply(535, "5.7.8", "Error: authentication failed")
              if isinstance(e, AuthRequest) else None)
    client = auth_client(answer=answer, max_errors=3)
    out = client.send(b"AUTH PLAIN AHUAeA==\r\n" * 5)
    assert out.count(b"535 5.7.8") == 3
    assert out.endswith(b"421 4.7.0 mx.test Too many errors; closing\r\n")


@pytest.mark.parametrize("lines, reply", [
    ([b"AUTH PLAIN !!!!"], b"501 5.5.2 AUTH data is not valid base64\r\n"),
    ([b"AUTH PLAIN AHVzZXIAcGFzcw"], b"501 5.5.2 AUTH data is not valid base64\r\n"),
    ([b"AUTH PLAIN AHVzZXIAcGFzcw==="], b"501 5.5.2 AUTH data is not valid base64\r\n"),
    ([b"AUTH PLAIN dXNlcnBhc3M="], b"501 5.5.2 AUTH data malformed\r\n"),
    ([b"AUTH PLAIN", b"*"], b"334 \r\n501 5.7.0 AUTH cancelled\r\n"),
    ([b"AUTH LOGIN", b"dXNlcg==", b"*"],
     b"334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n501 5.7.0 AUTH cancelled\r\n"),
    ([b"AUTH LOGIN", b"AUTH PLAIN AHUAcA=="],
     b"334 VXNlcm5hbWU6\r\n501 5.5.2 AUTH data is not valid base64\r\n"),
    ([b"AUTH PLAIN " + b"A" * 20480], b"500 5.5.6 AUTH line too long\r\n"),
    ([b"AUTH PLAIN", b"A" * 20480],
     b"334 \r\n500 5.5.6 AUTH line too long\r\n"),
    ([b"AUTH CRAM-MD5"], b"504 5.5.4 AUTH mechanism not offered; see the EHLO reply\r\n"),
    ([b"AUTH"], b"501 5.5.4 Usage: AUTH mechanism\r\n"),
])
def test_faults_34_auth_malformed(lines, reply):
    client = auth_client()
    assert client.send(b"".join(line + b"\r\n" for line in lines)) == reply
    assert not any(isinstance(e, AuthRequest) for e in client.events)
    assert client.send(b"AUTH PLAIN AHUAcA==\r\n") == b"235 2.7.0 Logged in\r\n"


def test_faults_34_auth_in_transaction_and_twice():
    client = auth_client()
    assert client.send(b"MAIL FROM:<a@b.test>\r\nAUTH PLAIN AHUAcA==\r\n") == (
        MAIL_OK + b"503 5.5.1 Not inside a mail transaction; send RSET first\r\n")
    client.send(b"RSET\r\nAUTH PLAIN AHUAcA==\r\n")
    assert client.send(b"AUTH PLAIN AHUAcA==\r\n") == b"503 5.5.1 Already logged in\r\n"


def test_faults_34_authzid_differs_is_the_apps_decision():
    answer = (lambda e: Reply(535, "5.7.8", "Error: authentication failed")
              if isinstance(e, AuthRequest) and e.authzid != e.username else None)
    client = auth_client(answer=answer)
    assert client.send(b"AUTH PLAIN cm9vdAB1AHA=\r\n").startswith(b"535 5.7.8")
    assert not client.srv.authenticated


# ---- robustness --------------------------------------------------------------------------

def test_large_body_and_command_keep_buffers_bounded():
    client = Client(max_size=200 * 1024 * 1024)
    client.send(b"X" * (1024 * 1024))  # 1 MiB command without CRLF
    assert client.srv.buffered <= 512
    assert client.send(b"\r\n" + ENVELOPE + b"DATA\r\n").endswith(GO)
    line = b"0123456789" * 7 + b"\r\n.hidden\r\n"
    block = line * (65536 // len(line))
    tracemalloc.start()
    total = 0
    for _ in range(160):  # 10 MiB, generated lazily
        client.send(block)
        total += sum(len(e.data) for e in client.events if isinstance(e, DataChunk))
        client.events.clear()
        assert client.srv.buffered < 4
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert client.send(b".\r\n") == QUEUED
    assert total == 160 * (len(block) - block.count(b"\r\n."))
    assert peak < 2 * 1024 * 1024


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data):
    client = Client(tls_available=True, auth_mechanisms=("PLAIN", "LOGIN"),
                    auth_needs_tls=False)
    client.send(b"EHLO c.test\r\n" + data)
    client.send(b"")
    assert isinstance(client.events[-1], ConnectionClosed)


def test_quit_with_pending_pipeline_ignores_the_rest():
    client = Client()
    assert client.send(b"QUIT\r\nNOOP\r\n") == BYE
    assert client.events == [Quit(), ConnectionClosed("quit")]
    assert client.srv.next_event() == ConnectionClosed("quit")


def test_starttls_refused_by_app():
    answer = (lambda e: Reply(454, "4.7.0", "TLS not available due to local problem")
              if isinstance(e, StartTLS) else None)
    client = Client(answer=answer, tls_available=True)
    out = client.send(b"EHLO c.test\r\nSTARTTLS\r\nNOOP\r\n")
    assert out.endswith(b"454 4.7.0 TLS not available due to local problem\r\n" + OK)


def test_reset_event_on_rset():
    script = [(b"RSET\r\n", OK)]
    client = Client()
    assert converse(client, script) == script
    assert client.events == [Reset()]


@settings(max_examples=500)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"\n")),
       st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=40))
def test_long_line_probe_matches_naive_scan(data, limit, carry):
    runs = data.split(b"\n")
    naive = max([carry + len(runs[0])] + [len(r) for r in runs[1:]]) >= limit
    assert has_long_line(data, limit, carry) == naive


# ---- the state in one place --------------------------------------------------------------

def test_the_state_alone_says_how_input_is_read():
    """STARTTLS accepted: nothing is read until the handshake; an AUTH prompt: SASL lines;
    DATA: message text; each is a state, and the reading follows from it."""
    client = Client(tls_available=True)
    client.send(b"EHLO c.test\r\nSTARTTLS\r\n")
    assert client.srv.state == smtp_server_states.TLS and not client.srv.wants_data
    client.srv.start_tls_done()
    assert client.srv.state == smtp_server_states.GREET and client.srv.wants_data
    client = auth_client()
    client.send(b"AUTH LOGIN\r\n")
    assert client.srv.state == smtp_server_states.AUTH
    client.send(b"dXNlcg==\r\n")
    assert client.srv.state == smtp_server_states.AUTH      # the second prompt
    client.send(b"cGFzcw==\r\n")
    assert client.srv.state == smtp_server_states.READY and client.srv.authenticated
    client = Client()
    client.send(ENVELOPE + b"DATA\r\nMAIL FROM:<x@y.test>\r\n")
    assert client.srv.state == smtp_server_states.DATA and client.srv.data_to_send() == b""
    assert client.body() == b"MAIL FROM:<x@y.test>\r\n"     # text, not a command
    assert client.send(b".\r\n") == QUEUED and client.srv.state == smtp_server_states.READY


def test_only_the_transition_function_writes_the_state():
    """`_move` is the one place the SMTP server engine's state changes (and no reader mode
    is kept beside it)."""
    import ast
    import inspect
    from masq.proto import smtp_server
    writers = set()
    for node in ast.walk(ast.parse(inspect.getsource(smtp_server))):
        if isinstance(node, ast.FunctionDef):
            for sub in ast.walk(node):
                targets = (sub.targets if isinstance(sub, ast.Assign)
                           else [sub.target] if isinstance(sub, ast.AugAssign) else [])
                for target in targets:
                    for leaf in ast.walk(target):
                        if isinstance(leaf, ast.Attribute) and leaf.attr in ("state", "_reader"):
                            writers.add(node.name)
    assert writers == {"__init__", "_move"}
