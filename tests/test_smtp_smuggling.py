"""SMTP smuggling and DATA framing (FAULTS 4.1 #4, #6): only CRLF.CRLF ends DATA.

CVE-2023-51764/51765/51766: a relay and its next hop disagreeing on where DATA ends lets a
sender smuggle a second message. The engine must see exactly one message, with the smuggled
text inside its body, whatever the variant and however the bytes are split into reads.
"""

import pytest
from hypothesis import given, settings, strategies as st

from masq.proto.errors import ConnectionClosed
from masq.proto.smtp_server import NEED_DATA, PAUSED, DataChunk, SMTPServer

ENVELOPE = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"
QUEUED = b"250 2.0.0 Message queued\r\n"
SMUGGLED = (b"MAIL FROM:<admin@bank.test>\r\nRCPT TO:<victim@d.test>\r\nDATA\r\n"
            b"From: admin@bank.test\r\n\r\nsend money\r\n")
VARIANTS = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
    "crcrlf-dot-crcrlf": b"\r\r\n.\r\r\n",
    "crlf-nul-dot-crlf": b"\r\n\x00.\r\n",
}


def run(pieces, **kw):
    """Feed pieces in order (accepting every decision); return (events, output)."""
    kw.setdefault("max_size", 1 << 20)
    srv = SMTPServer("mx.test", **kw)
    events, out = [], b""
    for piece in list(pieces) + [b""]:
        srv.receive_data(piece)
        while True:
            event = srv.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if event is PAUSED:
                srv.respond(None)
            else:
                events.append(event)
        out += srv.data_to_send()
    return merged(events), out


def merged(events):
    """Join adjacent DataChunks so event lists compare independently of read sizes."""
    out = []
    for event in events:
        if isinstance(event, DataChunk) and out and isinstance(out[-1], DataChunk):
            out[-1] = DataChunk(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def body_of(events):
    return b"".join(e.data for e in events if isinstance(e, DataChunk))


def kinds(events):
    return [type(e).__name__ for e in events]


def reference_decode(wire):
    """Obviously-correct DATA decoding: cut at the first CRLF.CRLF, unstuff each line."""
    text = b"\r\n" + wire
    body = text[2:text.index(b"\r\n.\r\n") + 2]
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in body.split(b"\r\n"))


def stuff(body):
    """Dot-stuff a body that ends in CRLF, as a correct client does."""
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in body.split(b"\r\n"))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_faults_04_smuggling_variant_yields_one_message(name):
    wire = b"Subject: hi\r\n\r\nhello" + VARIANTS[name] + SMUGGLED + b".\r\n"
    events, out = run([ENVELOPE + wire + b"QUIT\r\n"])
    assert kinds(events).count("EndOfData") == 1
    assert kinds(events).count("MailFrom") == 1 and kinds(events).count("DataStart") == 1
    assert out.count(b"250 2.0.0") == 1 and out.endswith(QUEUED + b"221 2.0.0 Goodbye\r\n")
    body = body_of(events)
    assert b"send money" in body and b"admin@bank.test" in body
    assert body == reference_decode(wire)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_faults_04_smuggling_variant_split_at_every_offset(name):
    wire = ENVELOPE + b"x" + VARIANTS[name] + SMUGGLED + b".\r\nQUIT\r\n"
    whole = run([wire])
    start = len(ENVELOPE)
    for cut in range(start, start + len(VARIANTS[name]) + 12):
        assert run([wire[:cut], wire[cut:]]) == whole


def test_faults_04_variant_at_the_very_start_of_data():
    for prefix in (b".\n", b".\r", b".\rx\r\n", b"\x00.\r\n"):
        wire = prefix + SMUGGLED + b".\r\n"
        events, out = run([ENVELOPE + wire])
        assert kinds(events).count("EndOfData") == 1
        assert body_of(events) == reference_decode(wire)


def test_faults_06_dot_lines_unstuffed():
    wire = b".\r\n"
    assert body_of(run([ENVELOPE + wire])[0]) == b""
    wire = b"..\r\n...\r\n.x\r\n..x\r\nmid.dle\r\n. \r\n.\r\n"
    events, out = run([ENVELOPE + wire])
    assert body_of(events) == b".\r\n..\r\nx\r\n.x\r\nmid.dle\r\n \r\n"
    assert out.endswith(QUEUED)


def test_faults_06_dot_line_split_across_reads():
    wire = ENVELOPE + b"a\r\n..\r\n.\r\n"
    whole = run([wire])
    for cut in range(len(ENVELOPE), len(wire)):
        assert run([wire[:cut], wire[cut:]]) == whole
    assert body_of(whole[0]) == b"a\r\n.\r\n"


PIECES = [b".", b"..", b".x", b"\r", b"\n", b"\r\n", b"\x00", b"a", b"hello", b"\r\n.",
          b"\r\n..\r\n", b"\xff", b"MAIL FROM:<x@y>", b"\r\n.\r"]
bodies = st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join)
cuts = st.lists(st.integers(min_value=0, max_value=400), max_size=8)


def split(data, points):
    points = sorted({p % (len(data) + 1) for p in points})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    return [p for p in pieces + [data[last:]] if p]


@settings(max_examples=300)
@given(bodies, cuts)
def test_faults_06_random_bodies_round_trip_in_random_splits(body, points):
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    wire = ENVELOPE + stuff(body) + b".\r\nQUIT\r\n"
    events, out = run(split(wire, points))
    assert body_of(events) == body
    assert kinds(events).count("EndOfData") == 1 and out.count(QUEUED) == 1


@settings(max_examples=200)
@given(bodies, bodies, cuts)
def test_same_input_split_differently_gives_same_events(body, tail, points):
    wire = (ENVELOPE + body + b"\r\n.\r\n" + tail + b"\r\nRSET\r\nMAIL FROM:<e@f>\r\n"
            b"RCPT TO:<g@h>\r\nBDAT 7 LAST\r\n.\r\n.\r\nxNOOP\r\n")
    assert run(split(wire, points)) == run([wire]) == run([bytes([b]) for b in wire])


@settings(max_examples=200)
@given(st.binary(max_size=300), cuts)
def test_bdat_bodies_are_taken_verbatim(body, points):
    half = len(body) // 2
    wire = (ENVELOPE[:-6] + b"BDAT %d\r\n" % half + body[:half] +
            b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:] + b"NOOP\r\n")
    events, out = run(split(wire, points))
    assert body_of(events) == body
    assert out.endswith(QUEUED + b"250 2.0.0 OK\r\n")
