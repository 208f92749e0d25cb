"""Fuzz the SMTP server engine (masq/proto/smtp_server.py) with hostile client bytes.

Input: command lines from the SMTP grammar (valid, nearly valid and junk), message text
with dots, bare CR and LF, BDAT chunks with wrong counts, SASL lines, random bytes, cut
into reads at random offsets and answered by an application that accepts or refuses each
decision at random.
Properties: nothing but the documented events comes out and no exception escapes; what the
engine writes parses as SMTP replies with our own client's reply reader; the engine holds
at most one capped line of unprocessed input once it asks for data; and the outcome (the
replies and the events, message text joined) does not depend on where the reads were cut.
"""

import base64

from hypothesis import example, given, strategies as st

from fuzzing import fuzz_settings, mixed, splits
from masq.proto import smtp_auth, smtp_server_events as ev
from masq.proto.errors import ConnectionClosed
from masq.proto.reply import Reply
from masq.proto.smtp_client_wire import ReplyReader
from masq.proto.smtp_server import SMTPServer

_b64 = st.binary(max_size=30).map(base64.b64encode)
_addr = st.sampled_from([b"<a@b.test>", b"<>", b"<\"q x\"@b.test>", b"<a@[127.0.0.1]>",
                         b"a@b", b"<@x,@y:a@b>", b"<\xc3\xa9@b.test>", b"<a@b", b"<" + b"a" * 300 + b">"])
_params = st.sampled_from([b"", b" SIZE=100", b" SIZE=99999999999999999999999", b" BODY=8BITMIME",
                           b" SMTPUTF8", b" RET=HDRS ENVID=x+2Bx", b" NOTIFY=SUCCESS,NEVER",
                           b" ORCPT=rfc822;a+40b", b" SIZE=1 SIZE=2", b" X=\xff", b" AUTH=<>"])
_line = st.one_of(
    st.sampled_from([b"EHLO c.test", b"HELO c.test", b"EHLO", b"HELO a b", b"DATA", b"DATA x",
                     b"RSET", b"NOOP", b"VRFY a", b"HELP", b"QUIT", b"STARTTLS",
                     b"AUTH PLAIN", b"AUTH LOGIN", b"AUTH CRAM-MD5", b"*", b"=", b".", b"..",
                     b"GET / HTTP/1.1", b"Host: x", b"BDAT 0 LAST", b"BDAT x", b"BDAT 5 5",
                     b"BDAT 99999999999999999999999", b"MAIL FROM:<a@b.test> SIZE=20000",
                     b"\x00", b"EHLO \xff", b"NOOP\rx"]),
    st.tuples(st.sampled_from([b"MAIL FROM:", b"RCPT TO:", b"mail from: ", b"RCPT TO: "]),
              _addr, _params).map(b"".join),
    st.tuples(st.sampled_from([b"BDAT ", b"bdat "]), st.integers(0, 60),
              st.sampled_from([b"", b" LAST", b" last"])).map(lambda t: t[0] + b"%d" % t[1] + t[2]),
    st.tuples(st.sampled_from([b"AUTH PLAIN ", b"AUTH LOGIN ", b""]), _b64).map(b"".join),
    st.binary(max_size=60).filter(lambda b: b"\n" not in b),
    st.integers(500, 13000).map(lambda n: b"X" * n),
)
_ending = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b""])
_ENVELOPE = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
_start = st.sampled_from([b"", b"", _ENVELOPE + b"DATA\r\n", _ENVELOPE + b"BDAT 20\r\n",
                          _ENVELOPE + b"DATA\r\nSubject: x\r\n\r\n.", b"EHLO c\r\nAUTH LOGIN\r\n",
                          _ENVELOPE + b"BDAT 5\r\n12345BDAT 3 LAST\r\n"])
_client = st.tuples(_start, mixed(st.tuples(_line, _ending).map(b"".join))).map(b"".join)

_answers = st.lists(st.sampled_from([None, None, None, "temp", "perm", "421"]), max_size=60)
_REFUSALS = {"temp": Reply(450, "4.7.1", "later"), "perm": Reply(550, "5.7.1", "no"),
             "421": Reply(421, "4.7.0", "go away")}
_INFORMATION = (ev.DataChunk, ev.DataAborted, ev.Reset, ev.Quit, ConnectionClosed)


def engine(**kw):
    kw.setdefault("max_size", 2000)
    kw.setdefault("max_data_line", 300)
    return SMTPServer("mx.test", auth_mechanisms=("PLAIN", "LOGIN"), auth_needs_tls=False,
                      tls_available=True, max_errors=8, **kw)


def run(reads, answers, tls=False, **kw):
    """Drive one session; return (wire output, events with message text joined)."""
    srv, answers = engine(**kw), list(answers)
    out = bytearray(srv.greeting())
    events = []
    for data in reads + [b""]:
        if srv.state == "closed":
            break
        if not srv.wants_data:       # TLS handshake pending: the transport runs it
            srv.start_tls_done()
        srv.receive_data(data)
        while True:
            event = srv.next_event()
            if event is ev.NEED_DATA:
                assert srv.buffered < smtp_auth.MAX_LINE      # one capped line at most
                break
            if event is ev.PAUSED:
                decision = events[-1]
                answer = answers.pop(0) if answers else None
                if isinstance(decision, ev.StartTLS) and not tls:
                    answer = "temp"
                srv.respond(_REFUSALS.get(answer))
                out += srv.data_to_send()
                continue
            assert isinstance(event, ev.DECISIONS + _INFORMATION), event
            if events and isinstance(event, ev.DataChunk) and isinstance(events[-1], ev.DataChunk):
                events[-1] = ev.DataChunk(events[-1].data + event.data)
            elif events and isinstance(event, ev.DataAborted) and \
                    isinstance(events[-1], ev.DataChunk):
                # the text handed out before DataAborted is void (its contract): how much
                # came before the limit was crossed depends on the reads, what is kept not
                events[-1] = event
            else:
                events.append(event)
            out += srv.data_to_send()
            if isinstance(event, ConnectionClosed):
                break
        out += srv.data_to_send()
    return bytes(out), events


def replies(wire):
    """Return the replies in the wire output; fails if any line is not an SMTP reply."""
    reader, found = ReplyReader(), []
    reader.buffer += wire
    while True:
        reply = reader.read()
        if reply is None:
            break
        found.append(reply)
    assert not reader.buffer, "output ends in a partial reply: %r" % wire[-80:]
    return found


@fuzz_settings()
@given(_client, st.lists(st.integers(0, 4000), max_size=8), _answers, st.booleans())
@example(b"HELO x\r\n" * 400, [], [], False)
@example(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3\r\nabcBDAT 2 LAST\r\nxy",
         [20, 21, 22], [], False)
@example(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\n", [], [], True)
def test_any_client_bytes_end_in_replies(data, cuts, answers, tls):
    wire, events = run(splits(data, cuts), answers, tls=tls)
    found = replies(wire)
    assert found and found[0].code == 220
    assert isinstance(events[-1], ConnectionClosed)
    assert all(r.code // 100 in (2, 3, 4, 5) for r in found)


@fuzz_settings(weight=4)
@given(_client.filter(lambda d: len(d) <= 400), _answers)
@example(b"AUTH PLAIN\r\n=\r\nEHLO x\r\nDATA\r\n.\r\n", [])
@example(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n.x\r\n.\r\n", [])
@example(_ENVELOPE + b"DATA\r\nMAIL FROM:<" + b"a" * 2000 + b">\r\n", [])  # both limits
def test_the_outcome_does_not_depend_on_where_reads_are_cut(data, answers):
    whole = run([data], answers)
    for cut in range(1, len(data)):
        assert run([data[:cut], data[cut:]], answers) == whole, cut
