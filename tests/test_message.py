"""Tests for masq.mail.message: sendmail input normalisation (docs/FAULTS.md 4.1 #5, #13,
4.5 #77), the header block (4.1 #23, 4.5 #76), Received: lines (4.1 #20) and loop counts
(4.1 #35)."""

import ast
import email.utils
import pathlib
import re
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from masq.mail.message import (HeaderReader, Headers, HeaderTooLong, InputNormalizer, count_hops,
                               delivered_to, format_date, make_message_id, received_line)

ROOT = pathlib.Path(__file__).resolve().parent.parent


def normalise(pieces, dot_ends=True):
    norm = InputNormalizer(dot_ends=dot_ends)
    out = b"".join(norm.feed(piece) for piece in pieces) + norm.finish()
    return out, norm.ended


def reference(data, dot_ends=True):
    """The rules stated plainly, on the whole input at once."""
    text = re.sub(rb"\r+\n", b"\n", data).replace(b"\r", b"\n")
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        if dot_ends and line == b".":
            return b"".join(out), True
        out.append(line + b"\r\n")
    return b"".join(out), False


def pieces_of(data, cuts):
    bounds = sorted({0, len(data), *[c % (len(data) + 1) for c in cuts]})
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


# ---- InputNormalizer: line ends (FAULTS 4.1 #5) ----

@pytest.mark.parametrize("raw, expected", [
    (b"a\nb\n", b"a\r\nb\r\n"),
    (b"a\r\nb\r\n", b"a\r\nb\r\n"),
    (b"a\rb\r", b"a\r\nb\r\n"),
    (b"a\r\r\nb", b"a\r\nb\r\n"),
    (b"a\r\r\r\n", b"a\r\n"),
    (b"a\n\rb", b"a\r\n\r\nb\r\n"),
    (b"a\r\rb", b"a\r\n\r\nb\r\n"),
    (b"no newline at end", b"no newline at end\r\n"),
    (b"", b""),
    (b"\n", b"\r\n"),
    (b"\r", b"\r\n"),
])
def test_line_ends_become_crlf(raw, expected):
    assert normalise([raw]) == (expected, False)
    assert normalise([bytes([b]) for b in raw]) == (expected, False)


def test_output_has_only_crlf_line_ends():
    out, _ = normalise([b"x\ry\nz\r\r\n\r\n\n\r.\r\n"], dot_ends=False)
    assert out.count(b"\r") == out.count(b"\n") == out.count(b"\r\n")


@pytest.mark.parametrize("byte", [b"\x00", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x85",
                                  "\u2028".encode(), b"\xff\xfe", b"\xed\xa0\x80"])
def test_opaque_bytes_pass_unchanged(byte):
    raw = b"Subject: a" + byte + b"b\nbody " + byte + b" end\n"
    out, _ = normalise([raw])
    assert out == raw.replace(b"\n", b"\r\n")
    assert out.count(b"\r\n") == 2


# ---- InputNormalizer: the lone dot (FAULTS 4.5 #77) ----

@pytest.mark.parametrize("raw", [b"a\n.\nafter\n", b"a\r\n.\r\nafter", b"a\n.\r\r\nafter",
                                 b"a\n.\rafter", b"a\n.", b"a\n.\n", b"a\r.\r"])
def test_lone_dot_ends_input(raw):
    assert normalise([raw]) == (b"a\r\n", True)
    assert normalise([bytes([b]) for b in raw]) == (b"a\r\n", True)


def test_lone_dot_as_first_line():
    assert normalise([b".\nSubject: x\n"]) == (b"", True)


def test_rest_after_lone_dot_is_discarded():
    norm = InputNormalizer()
    assert norm.feed(b"a\n.\n") == b"a\r\n"
    assert norm.ended
    assert norm.feed(b"more\n") == b""
    assert norm.finish() == b""


@pytest.mark.parametrize("raw", [b"a\n.\nb\n", b".\n", b"..\n", b"a\n.", b". \n"])
def test_dash_i_keeps_lone_dot(raw):
    out, ended = normalise([raw], dot_ends=False)
    assert not ended
    assert out == reference(raw, dot_ends=False)[0]
    assert b"." in out


@pytest.mark.parametrize("line", [b"..", b"..\n", b".x", b". ", b"...", b" .", b"x."])
def test_dots_are_not_unstuffed(line):
    raw = b"a\n" + line + b"\nb\n"
    out, ended = normalise([raw])
    assert not ended
    assert out == raw.replace(b"\n", b"\r\n")


def test_dot_held_across_pieces_then_released():
    norm = InputNormalizer()
    assert norm.feed(b"a\n") == b"a\r\n"
    assert norm.feed(b".") == b""
    assert norm.feed(b"x") == b".x"
    assert norm.finish() == b"\r\n"
    assert not norm.ended


@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=12), st.booleans())
@settings(max_examples=800)
def test_output_is_the_same_however_input_is_split(data, cuts, dot_ends):
    whole = normalise([data], dot_ends)
    assert normalise(pieces_of(data, cuts), dot_ends) == whole
    assert whole == reference(data, dot_ends)


ALPHABET = st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b"\x00", b" "])


@given(st.lists(ALPHABET, max_size=60).map(b"".join),
       st.lists(st.integers(min_value=0), max_size=20), st.booleans())
@settings(max_examples=800)
def test_split_invariance_on_line_end_heavy_input(data, cuts, dot_ends):
    assert normalise(pieces_of(data, cuts), dot_ends) == reference(data, dot_ends)


@given(st.lists(ALPHABET, max_size=60).map(b"".join),
       st.lists(st.integers(min_value=0), max_size=20))
@settings(max_examples=800)
def test_bare_cr_and_lf_are_noticed_however_input_is_split(data, cuts):
    """Issue 12 case 4: `option bare_line_ends 'refuse'` relies on these two flags."""
    norm = InputNormalizer(dot_ends=False)
    for piece in pieces_of(data, cuts):
        norm.feed(piece)
    norm.finish()
    assert norm.bare_lf == (re.search(rb"(?<!\r)\n", data) is not None)
    assert norm.bare_cr == (re.search(rb"\r(?!\n)", data) is not None)


def test_one_megabyte_line_streams_with_bounded_state():
    line = bytes(range(32, 127)) * (1024 * 1024 // 95 + 1)
    norm = InputNormalizer()
    fed = emitted = 0
    for i in range(0, len(line), 65536):
        piece = line[i:i + 65536]
        fed += len(piece)
        emitted += len(norm.feed(piece))
        assert fed - emitted <= 1      # nothing is buffered but a held "."
        assert all(isinstance(v, (bool, int)) for v in vars(norm).values())
    assert emitted + len(norm.finish()) == len(line) + 2


def test_long_line_byte_by_byte_is_never_buffered():
    norm = InputNormalizer()
    for byte in b"x" * 100000:
        assert norm.feed(bytes([byte])) == b"x"
    assert norm.finish() == b"\r\n"


def test_many_short_lines_in_one_piece_are_fast():
    data = b"line\n" * 200000 + b"..\n" * 1000
    out, ended = normalise([data])
    assert not ended and out == data.replace(b"\n", b"\r\n")


def test_huge_cr_run_is_counted_not_stored():
    norm = InputNormalizer()
    for _ in range(100):
        assert norm.feed(b"\r" * 10000) == b""
    assert norm.feed(b"\n") == b"\r\n"
    assert norm.finish() == b""


# ---- HeaderReader ----

def read(data, pieces=None, limit=102400):
    reader = HeaderReader(limit=limit)
    body = b"".join(reader.feed(p) for p in (pieces or [data])) + reader.finish()
    assert reader.done
    return reader.headers, body


MESSAGE = (b"Subject: hello\r\n there\r\n\tworld\r\nTo: a@b.example\r\nBcc: secret@x.example\r\n"
           b"X-Odd : spaced name\r\n\r\nbody line 1\r\n\r\nbody: not a header\r\n")


def test_header_block_and_body_are_split_byte_identically():
    headers, body = read(MESSAGE)
    assert headers.to_bytes() + b"\r\n" + body == MESSAGE
    assert [name for name, _ in headers.items()] == ["Subject", "To", "Bcc", "X-Odd"]
    assert headers.get("subject") == "hello there\tworld"
    assert headers.get("x-odd") == "spaced name"
    assert body == b"body line 1\r\n\r\nbody: not a header\r\n"


def test_bcc_removed_and_rest_untouched():
    headers, body = read(MESSAGE)
    assert headers.remove("BCC") == 1
    assert headers.remove("bcc") == 0
    assert b"secret" not in headers.to_bytes()
    assert headers.to_bytes() == MESSAGE.split(b"Bcc:")[0] + b"X-Odd : spaced name\r\n"


def test_mbox_from_line_is_dropped_only_first():
    headers, body = read(b"From alice@example.org Mon Jan  1 00:00:00 2024\r\nSubject: x\r\n"
                         b"\r\nFrom me, with love\r\n")
    assert headers.items() == [("Subject", "x")]
    assert body == b"From me, with love\r\n"
    headers, body = read(b"Subject: x\r\nFrom someone\r\n\r\nb\r\n")
    assert headers.items() == [("Subject", "x")]
    assert body == b"From someone\r\n\r\nb\r\n"


def test_broken_mua_rule_non_header_line_starts_body():
    data = b"Subject: x\r\nTo: a@b\r\nthis is text\r\nCc: c@d\r\n\r\nmore\r\n"
    headers, body = read(data)
    assert [n for n, _ in headers.items()] == ["Subject", "To"]
    assert body == b"this is text\r\nCc: c@d\r\n\r\nmore\r\n"
    assert headers.to_bytes() + body == data


@pytest.mark.parametrize("data", [b"just a body\r\n", b" indented first line\r\n",
                                  b"\xc3\xa4: umlaut name\r\n", b": empty name\r\n",
                                  b"Subject\r\n", b"a\x00b: x\r\n"])
def test_message_without_headers(data):
    headers, body = read(data)
    assert len(headers) == 0 and body == data


def test_headers_only_message():
    headers, body = read(b"Subject: x\r\nTo: y\r\n")
    assert len(headers) == 2 and body == b""
    headers, body = read(b"Subject: x\r\nTo: y")          # no final CRLF at all
    assert headers.get("To") == "y" and body == b""


def test_empty_header_block():
    headers, body = read(b"\r\nbody\r\n")
    assert len(headers) == 0 and body == b"body\r\n"


def test_header_cap_one_huge_field():
    reader = HeaderReader()
    reader.feed(b"Subject: ")
    with pytest.raises(HeaderTooLong) as info:
        for _ in range(20):
            reader.feed(b"x" * 65536)
    assert (info.value.code, info.value.enhanced) == (552, "5.3.4")
    assert len(reader._buf) <= 102400 + 65536


def test_header_cap_many_continuation_lines():
    with pytest.raises(HeaderTooLong):
        read(b"Subject: x\r\n" + b" y\r\n" * 300000)


def test_header_cap_hundred_thousand_short_fields_is_fast():
    data = b"".join(b"X-H%d: v\r\n" % i for i in range(100000)) + b"\r\nbody\r\n"
    with pytest.raises(HeaderTooLong):
        read(data)
    headers, body = read(data, limit=len(data))
    assert len(headers) == 100000 and body == b"body\r\n"
    lines = data.split(b"\r\n")
    headers, body = read(data, pieces=[line + b"\r\n" for line in lines[:-1]], limit=len(data))
    assert len(headers) == 100000


def test_header_fed_byte_by_byte_is_linear():
    data = b"Subject: " + b"x" * 50000 + b"\r\n\r\n"
    headers, body = read(data, pieces=[bytes([b]) for b in data])
    assert len(headers.get("subject")) == 50000 and body == b""


def test_huge_body_line_after_broken_header_is_not_buffered():
    reader = HeaderReader()
    assert reader.feed(b"Subject: x\r\n") == b""
    out = reader.feed(b"Dear friend, " + b"y" * 1000000)
    assert reader.done and out.startswith(b"Dear friend")
    assert reader.feed(b"z" * 10) == b"z" * 10


def test_long_field_name_like_line_is_body_not_header_overflow():
    reader = HeaderReader()
    out = b"".join(reader.feed(b"y" * 4096) for _ in range(100))
    assert reader.done and len(out) == 409600


def test_blank_line_split_as_cr_then_lf():
    reader = HeaderReader()
    assert reader.feed(b"Subject: x\r\n\r") == b""
    assert reader.feed(b"\nbody") == b"body"


def test_from_bytes_round_trip():
    block = MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n"
    assert Headers.from_bytes(block).to_bytes() == block


HEADER_LINES = st.sampled_from([b"Subject: hi", b"To: a@b", b" folded", b"\tfolded",
                                b"X-A: \xff\x00", b"body text", b"From x", b"", b"Sub",
                                b"ject: y", b"Name : v"])


@given(st.lists(HEADER_LINES, max_size=12), st.binary(max_size=20),
       st.lists(st.integers(min_value=0), max_size=10))
@settings(max_examples=500)
def test_header_reader_same_result_however_split(lines, tail, cuts):
    data = b"".join(line + b"\r\n" for line in lines) + tail
    whole = read(data)
    parts = read(data, pieces=pieces_of(data, cuts))
    assert parts[0].to_bytes() == whole[0].to_bytes() and parts[1] == whole[1]


# ---- Headers ----

def test_get_all_is_case_insensitive_and_ordered():
    headers, _ = read(b"Received: one\r\nreceived: two\r\n\r\n")
    assert headers.get_all("RECEIVED") == ["one", "two"]
    assert headers.count("Received") == 2 and headers.has("received")
    assert headers.get("missing") is None and headers.get("missing", "d") == "d"
    assert not headers.has("missing")


def test_invalid_utf8_is_decoded_with_surrogateescape():
    headers, _ = read(b"Subject: caf\xe9 \xc3\xa9\r\n\r\n")
    value = headers.get("subject")
    assert value == "caf\udce9 \xe9"
    assert value.encode("utf-8", "surrogateescape") == b"caf\xe9 \xc3\xa9"
    headers.append("X-Copy", value)
    assert headers.to_bytes().endswith(b"X-Copy: caf\xe9 \xc3\xa9\r\n")


@pytest.mark.parametrize("value", ["a\r\nBcc: victim@x", "a\nb", "a\rb", "a\x00b",
                                   b"a\r\nb", "x\r\n "])
def test_added_values_cannot_inject(value):
    headers = Headers()
    with pytest.raises(ValueError):
        headers.append("Subject", value)
    with pytest.raises(ValueError):
        headers.prepend("Subject", value)
    assert len(headers) == 0


@pytest.mark.parametrize("name", ["Bad Name", "Bad:Name", "", "Ümlaut", "a\r\nb"])
def test_added_names_are_checked(name):
    with pytest.raises(ValueError):
        Headers().append(name, "v")


def test_prepend_and_append_positions():
    headers, _ = read(b"Subject: x\r\n\r\n")
    headers.prepend("Received", "by here")
    headers.append("Message-ID", "<1@h>")
    assert headers.to_bytes() == b"Received: by here\r\nSubject: x\r\nMessage-ID: <1@h>\r\n"


def test_long_values_are_folded_and_unfold_back():
    value = " ".join("word%d" % i for i in range(60))
    headers = Headers()
    headers.append("X-Long", value)
    raw = headers.to_bytes()
    lines = raw.split(b"\r\n")[:-1]
    assert len(lines) > 3 and all(len(line) <= 78 for line in lines)
    assert all(line[:1] == b" " for line in lines[1:])
    assert headers.get("x-long") == value


def test_folding_never_makes_whitespace_only_lines():
    headers = Headers()
    headers.append("X-Spaces", "a" * 70 + "     " + "b" * 70)
    for line in headers.to_bytes().split(b"\r\n")[1:-1]:
        assert line.strip(b" \t")


def test_rename_keeps_value_bytes():
    headers, _ = read(b"Envelope-To: a@b,\r\n c@d\r\n\r\n")
    assert headers.rename("envelope-to", "X-Orig-Envelope-To") == 1
    assert headers.to_bytes() == b"X-Orig-Envelope-To: a@b,\r\n c@d\r\n"
    assert headers.get("x-orig-envelope-to") == "a@b, c@d"


# ---- Date, Message-ID ----

@pytest.fixture
def zone(monkeypatch):
    def set_zone(tz):
        monkeypatch.setenv("TZ", tz)
        time.tzset()
    yield set_zone
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("tz, suffix", [("CET-1CEST,M3.5.0,M10.5.0/3", "+0100"),
                                        ("NST+3:30", "-0330"), ("UTC0", "+0000")])
def test_format_date_local(zone, tz, suffix):
    zone(tz)
    stamp = 1795768875  # a November date
    text = format_date(stamp)
    assert text.endswith(suffix)
    assert email.utils.parsedate_to_datetime(text).timestamp() == stamp
    assert text == email.utils.formatdate(stamp, localtime=True)


def test_format_date_example_and_utc():
    assert format_date(0, localtime=False) == "Thu, 01 Jan 1970 00:00:00 +0000"
    for stamp in (0, 951782400, 1795768875, 2000000000.7):
        text = format_date(stamp, localtime=False)
        assert email.utils.parsedate_to_datetime(text).timestamp() == int(stamp)


def test_message_id():
    assert make_message_id("1xWV68-3aR-00", "mail.example.org") == "<1xWV68-3aR-00@mail.example.org>"
    assert make_message_id("a.b", "[192.0.2.1]") == "<a.b@[192.0.2.1]>"
    for unique, host in (("a b", "h"), ("a", "h\r\nBcc: x"), ("a>", "h"), ("", "h"), ("a", "")):
        with pytest.raises(ValueError):
            make_message_id(unique, host)


# ---- Received: (FAULTS 4.1 #20) ----

def test_received_line_smtp():
    text = received_line(from_host="client.example", from_rdns="rdns.example",
                         from_ip="192.0.2.1", by_host="mx.example", id="1xWV68-3aR-00",
                         for_rcpt="a@b.example", timestamp=0)
    head, date = text.split("; ")
    assert head == ("from client.example (rdns.example [192.0.2.1]) by mx.example (masq) "
                    "with ESMTP id 1xWV68-3aR-00 for <a@b.example>")
    assert email.utils.parsedate_to_datetime(date).timestamp() == 0


def test_received_line_local_and_protocol_suffixes():
    local = received_line(by_host="box", id="X", from_uid=1000, protocol="local", timestamp=0)
    assert local.startswith("by box (masq, from userid 1000) id X; ")
    tls = received_line(by_host="mx", id="X", from_ip="2001:db8::1", protocol="ESMTP",
                        tls=("TLSv1.3", "TLS_AES_128_GCM_SHA256"), auth="bob", timestamp=0)
    assert "with ESMTPSA" in tls and "[IPv6:2001:db8::1]" in tls
    assert "(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)" in tls
    assert "(authenticated user bob)" in tls
    assert "with SMTP" in received_line(by_host="mx", id="X", from_ip="192.0.2.1",
                                        protocol="SMTP", tls=("v", "c"), timestamp=0)


@pytest.mark.parametrize("helo", ["x" * 65536, "evil\r\nBcc: victim@example.org", "", "a b c",
                                  "[192.0.2.1]", "(comment", "\x00\x00", "ünïcode.example",
                                  "a\\)\"(", "host.example\r\n.\r\nMAIL FROM:<x>"])
def test_received_line_stays_one_logical_line(helo):
    text = received_line(from_host=helo, from_ip="192.0.2.1", from_rdns="evil\nrdns",
                         by_host="mx\r\n", id="ID\r\n", for_rcpt="a@b\r\nX: y",
                         tls=("TLS\r\nv", "c" * 5000), auth="u\r\n" * 1000, timestamp=0)
    assert not re.search("[\x00-\x1f\x7f]", text)
    assert len(text) < 1200
    assert text.count("(") == text.count(")")
    headers = Headers()
    headers.prepend("Received", text)
    raw = headers.to_bytes()
    assert Headers.from_bytes(raw).count("Received") == 1
    reread, body = read(raw + b"\r\nbody\r\n")
    assert reread.get_all("Received") == [text] and body == b"body\r\n"
    for line in raw.split(b"\r\n")[1:-1]:
        assert line[:1] == b" "


def test_received_line_shows_odd_helo_sanitised():
    text = received_line(from_host="evil name(", from_ip="192.0.2.1", by_host="mx", id="X",
                         timestamp=0)
    assert text.startswith("from [192.0.2.1] (unknown [192.0.2.1] helo=evil?name?)")


def test_received_line_ignores_bad_ip():
    text = received_line(from_host="h.example", from_ip="1.2.3.4]\r\n", by_host="mx", id="X",
                         timestamp=0)
    assert text.startswith("from h.example by mx")


# ---- loop checks (FAULTS 4.1 #35) ----

def test_hop_count_and_delivered_to():
    data = b"".join(b"Received: from h%d by x; date\r\n" % i for i in range(60))
    data += b"Delivered-To: Alice@Example.org\r\ndelivered-to: bob@example.org\r\n\r\n"
    headers, _ = read(data)
    assert count_hops(headers) == 60
    assert delivered_to(headers) == ["alice@example.org", "bob@example.org"]
    assert count_hops(Headers()) == 0 and delivered_to(Headers()) == []


# ---- runtime rules ----

def test_imports_are_cheap_and_python3_light_only():
    tree = ast.parse((ROOT / "masq" / "mail" / "message.py").read_text())
    names = {alias.name.split(".")[0] for node in ast.walk(tree)
             if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    assert names <= {"re", "time"}
    calls = {node.func.attr for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert "splitlines" not in calls


def test_works_with_email_package_blocked():
    code = ("import sys\n"
            "for m in ('email', 'logging', 'asyncio', 'unicodedata', 'urllib', 'uuid'):\n"
            "    sys.modules[m] = None\n"
            "from masq.mail.message import InputNormalizer, HeaderReader, received_line\n"
            "n = InputNormalizer()\n"
            "r = HeaderReader()\n"
            "assert r.feed(n.feed(b'Subject: x\\n\\nb\\n.\\n')) == b'b\\r\\n'\n"
            "assert received_line(by_host='h', id='i', timestamp=0)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
