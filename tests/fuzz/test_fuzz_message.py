"""Fuzz what reads message text and addresses from outside: masq/mail/message.py and
masq/mail/address.py.

Input: message text from the RFC 5322 grammar (field lines, folded lines, a `From ` line,
lines without a colon, the blank line, dots, bare CR and LF, CR runs, NUL, 8-bit and
invalid UTF-8, very long names) mixed with random bytes, cut into reads at random offsets;
paths and address lists from the RFC 5321/5322 grammar (quotes, comments, groups, source
routes, address literals, SMTPUTF8) and random text.
Properties: `InputNormalizer` gives CRLF lines only, the same whatever the cuts;
`HeaderReader` raises nothing but HeaderTooLong, never holds more than its cap, loses no
byte of CRLF text (fields + blank line + body = input) and splits the same whatever
the cuts;
`parse_path`, `parse_address_list` and `split` return their values or raise AddressError
with an SMTP reply; what `parse_path` accepts prints back as a path it accepts again.
"""

import re

from hypothesis import given, strategies as st

from fuzzing import fuzz_settings, mixed, splits
from masq.mail import address, message

_text_line = st.one_of(  # the header cap is never below the 1000-octet name probe
    st.integers(1, 5).map(lambda n: b"X-Big: " + b"v" * (n * 1000)),
    st.sampled_from([b"Subject: hi", b"From: a@b", b"From a@b Thu", b"Received: from x",
                     b" folded", b"\tfolded", b"no colon here", b"", b".", b"..", b"X:",
                     b"Name :value", b"\xff\xfe: x", b"Bad Name: x", b"X-\x00: y",
                     b"\xc3\xa9: z", b"A" * 1200 + b": long name"]),
    st.binary(max_size=50).filter(lambda b: b"\n" not in b and b"\r" not in b))
_eol = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b""])
_text = mixed(st.tuples(_text_line, _eol).map(b"".join))
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def normalize(pieces, dot_ends):
    normalizer = message.InputNormalizer(dot_ends=dot_ends)
    out = b"".join(normalizer.feed(p) for p in pieces) + normalizer.finish()
    return out, normalizer.ended


@fuzz_settings()
@given(_text, st.lists(st.integers(0, 3000), max_size=8), st.booleans())
def test_input_normalizer_gives_crlf_lines_whatever_the_cuts(data, cuts, dot_ends):
    whole = normalize([data], dot_ends)
    assert not BARE.search(whole[0])
    assert normalize(splits(data, cuts), dot_ends) == whole


def read_headers(pieces, limit):
    reader = message.HeaderReader(limit=limit)
    body = b""
    try:
        for piece in pieces:
            body += reader.feed(piece)
            assert len(reader._buf) <= limit
        body += reader.finish()
    except message.HeaderTooLong as err:
        assert (err.code, err.enhanced) == (552, "5.3.4")
        return None
    return [raw for _, raw in reader.headers._fields], body


@fuzz_settings()
@given(_text, st.lists(st.integers(0, 3000), max_size=8), st.sampled_from([1500, 4000, 102400]),
       st.booleans())
def test_header_reader_loses_nothing_whatever_the_cuts(data, cuts, limit, crlf):
    if crlf:
        data = normalize([data], False)[0]
    whole = read_headers([data], limit)
    assert read_headers(splits(data, cuts), limit) == whole
    if whole is None or not crlf or data.startswith(b"From "):
        return
    fields, body = whole                    # CRLF input: fields + blank line + body
    joined = b"".join(fields)
    assert data.startswith(joined) and data[len(joined):] in (body, b"\r\n" + body)


_path = st.one_of(
    st.tuples(st.sampled_from(["<", "", "<<"]),
              st.lists(st.sampled_from(["a", "b.c", '"q x"', '"\\""', "%", "!", "@x,@y:",
                                        "@", "[127.0.0.1]", "[IPv6:::1]", "[IPv6:fe80::1%1]",
                                        "[300.1.1.1]", "é", "\u2028", "x" * 70, "-", ".",
                                        "example.test", "\x00", " ", "(c)"]),
                       max_size=6).map("".join),
              st.sampled_from([">", "", ">>"])).map("".join),
    st.text(max_size=40))


@fuzz_settings()
@given(_path, st.booleans(), st.booleans(), st.booleans())
def test_paths_parse_or_fail_with_an_smtp_reply(path, sender, smtputf8, unqualified):
    for text in (path, path.encode("utf-8", "surrogatepass")):
        try:
            addr = address.parse_path(text, sender=sender, smtputf8=smtputf8,
                                      unqualified=unqualified)
        except address.AddressError as err:
            assert 400 <= err.code < 600 and err.enhanced[0] in "45"
            continue
        printed = "<%s>" % addr if str(addr) else "<>"
        again = address.parse_path(printed, sender=sender, smtputf8=smtputf8,
                                   unqualified=unqualified)
        assert str(again) == str(addr)


_list = st.one_of(st.lists(st.sampled_from([
    "a@b", "A <a@b>", '"x, y" <c@d>', "g: a@b, c@d;", "(comment) e@f", "<@r:a@b>", ",",
    "a@", "@b", "<a@b", "x <>", "\"unterminated", "(nested (c))", "=?utf-8?q?x?= <a@b>",
    "a@[1.2.3.4]", "undisclosed-recipients:;"]), max_size=5).map(", ".join), st.text(max_size=40))


@fuzz_settings()
@given(_list)
def test_address_lists_parse_or_fail_with_an_address_error(value):
    try:
        found = address.parse_address_list(value)
        assert all(isinstance(a, str) for a in found)
    except address.AddressError as err:
        assert 400 <= err.code < 600
    try:
        local, domain = address.split(value)
        assert isinstance(local, str)
    except address.AddressError:
        pass
