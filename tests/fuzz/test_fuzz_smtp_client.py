"""Fuzz the SMTP client engine (masq/proto/smtp_client.py) with hostile server replies.

Input: replies from the SMTP grammar (every code class, multi-line, enhanced codes right
and wrong, EHLO keyword lists with AUTH, SIZE and STARTTLS, 334 challenges) mixed with
random bytes, cut into reads at random offsets, while an application drives the session
(TLS, AUTH, a pipelined transaction with a body, RSET, another transaction, QUIT) as the
delivery agent would.
Properties: the only exception is ProtocolError with a 451 4.5.0 reply, after which
the engine is CLOSED and inert; every event is one of the documented types carrying Reply
values; a partial reply held is below MAX_LINE octets and MAX_LINES lines; what the engine
writes is CRLF-terminated command lines with no bare CR or LF (message text aside); cut
at any offset, a session that completes gets the same events and sends the same bytes.
"""

from hypothesis import example, given, strategies as st

from fuzzing import fuzz_settings, mixed, splits
from masq.proto import smtp_client as C
from masq.proto.errors import ProtocolError
from masq.proto.reply import Reply

_code = st.sampled_from([b"220", b"221", b"235", b"250", b"251", b"334", b"354", b"421",
                         b"450", b"451", b"452", b"500", b"501", b"502", b"503", b"530",
                         b"535", b"550", b"552", b"553", b"554", b"199", b"600", b"25"])
_text = st.one_of(
    st.sampled_from([b"", b"ok", b"2.1.0 ok", b"5.1.1 no", b"4.4.2 x", b"2.0.0", b"9.9.9 z",
                     b"PIPELINING", b"SIZE 1000", b"SIZE 99999999999999999999999",
                     b"SIZE x", b"STARTTLS", b"AUTH PLAIN LOGIN CRAM-MD5", b"AUTH=LOGIN",
                     b"8BITMIME", b"SMTPUTF8", b"DSN", b"CHUNKING", b"PDw+", b"!!notb64",
                     b"PDEyMzQ1QGV4YW1wbGU+"]),
    st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.integers(100, 3000).map(lambda n: b"y" * n))
_line = st.tuples(_code, st.sampled_from([b" ", b"-", b"", b"_"]), _text,
                  st.sampled_from([b"\r\n", b"\r\n", b"\n", b""])).map(b"".join)
_start = st.sampled_from([b"", b"220 hi\r\n", b"220 hi\r\n250-mx\r\n250-PIPELINING\r\n"
                          b"250-SIZE 100000\r\n250-STARTTLS\r\n250-DSN\r\n250-SMTPUTF8\r\n"
                          b"250 AUTH PLAIN LOGIN CRAM-MD5\r\n", b"220 hi\r\n250 mx\r\n"])
_server = st.tuples(_start, mixed(_line)).map(b"".join)
_plan = st.lists(st.sampled_from(["tls", "auth-plain", "auth-login", "auth-cram", "mail",
                                  "mail", "reset", "quit"]), max_size=8)
_EVENTS = (C.Greeting, C.Hello, C.StartTLSReply, C.AuthReply, C.BodyRequest,
           C.TransactionDone, C.ResetReply, C.QuitReply, C.ConnectionClosed)
ENVELOPE = C.OutgoingEnvelope("a@me.test",
                              ("b@there.test", "c@there.test", "d\u00e9@there.test"),
                              size=700, body8bit=True, notify=("SUCCESS",), orcpt=("rfc822;b@x",))


class Agent:
    """Play the delivery agent: act on each event as the plan says."""

    def __init__(self, plan):
        self.client = C.Client("me.test")
        self.plan = list(plan)
        self.sent = bytearray()
        self.events = []

    def act(self, event):
        client = self.client
        if isinstance(event, C.BodyRequest):
            client.send_body(b"Subject: x\r\n\r\n.leading dot\r\nline\n.\r\nlast")
            client.end_body()
            return
        if client.state not in (C.READY, C.REFUSED) or not self.plan:
            return
        step = self.plan.pop(0)
        if client.state == C.REFUSED or step == "quit":
            client.quit()
        elif step == "tls" and "STARTTLS" in client.extensions:
            client.starttls()
        elif step.startswith("auth-"):
            client.authenticate({"auth-plain": "PLAIN", "auth-login": "LOGIN",
                                 "auth-cram": "CRAM-MD5"}[step], "user", "pass\u00e9")
        elif step == "reset":
            client.reset()
        else:
            client.send_mail(ENVELOPE)

    def feed(self, data):
        client = self.client
        client.receive_data(data)
        while True:
            event = client.next_event()
            if event is C.NEED_DATA:
                held = client._reader
                assert len(held.buffer) < C.MAX_LINE and len(held._lines) <= C.MAX_LINES
                break
            assert isinstance(event, _EVENTS), event
            self.events.append(event)
            for value in event._fields:
                field = getattr(event, value)
                assert field is None or isinstance(field, (Reply, C.Extensions, tuple, str))
            if isinstance(event, C.StartTLSReply) and client.state == C.HANDSHAKE:
                client.tls_done()
            self.act(event)
            self.sent += client.data_to_send()
        self.sent += client.data_to_send()


def commands_are_clean(sent):
    """Return True if everything outside message text is CRLF lines without CR or LF."""
    lines = bytes(sent).split(b"\r\n")
    return lines[-1] == b"" and all(b"\n" not in line and b"\r" not in line
                                    for line in lines if not line.startswith(b"Subject"))


@fuzz_settings()
@given(_server, st.lists(st.integers(0, 3000), max_size=8), _plan)
@example(b"220 hi\r\n250-x\r\n250-PIPELINING\r\n250 AUTH LOGIN\r\n334 VXNlcg==\r\n"
         b"334 UGFzcw==\r\n334 more\r\n535 no\r\n", [], ["auth-login", "quit"])
@example(b"220 hi\r\n250-x\r\n250 STARTTLS\r\n220 go\r\n250 x\r\n221 bye\r\n", [20, 35],
         ["tls", "quit"])
@example(b"220 hi\r\n250-x\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n550 no\r\n550 no\r\n"
         b"354 go\r\n250 done\r\n", [], ["mail"])
def test_any_server_bytes_end_in_events_or_a_remote_error(data, cuts, plan):
    agent = Agent(plan)
    try:
        for piece in splits(data, cuts) + [b""]:
            agent.feed(piece)
    except ProtocolError as err:
        assert (err.reply.code, err.reply.enhanced) == (451, "4.5.0")
        assert agent.client.state == C.CLOSED
        agent.feed(b"250 more\r\n")          # inert once broken
        assert agent.client.data_to_send() == b""
        return
    assert agent.client.state == C.CLOSED
    body_free = bytes(agent.sent).split(b"Subject: x")[0]
    assert commands_are_clean(body_free) or not body_free


def session(reads, plan):
    """Run one session; return (events, what was sent) or None if the server broke it."""
    agent = Agent(plan)
    try:
        for piece in reads + [b""]:
            agent.feed(piece)
    except ProtocolError:
        return None
    return [repr(e) for e in agent.events], bytes(agent.sent)


@fuzz_settings(weight=4)
@given(_server.filter(lambda d: len(d) <= 400), _plan)
def test_a_session_cut_at_any_offset_ends_the_same_or_in_a_remote_error(data, plan):
    whole = session([data], plan)
    for cut in range(1, len(data)):
        parts = session([data[:cut], data[cut:]], plan)
        # bytes behind a 220 to STARTTLS, a 354 or a QUIT reply are refused only when they
        # arrive in the same read: a cut may turn that error into a session
        assert parts is None or whole is None or parts == whole, cut
