"""MAIL/RCPT argument parsing and xtext (FAULTS 4.1 #14, #15 path splitting, #19, #24)."""

import pytest
from hypothesis import given, settings, strategies as st

from masq.proto.errors import ProtocolError
from masq.proto.reply import Reply
from masq.proto.smtp_params import (
    parse_mail, parse_rcpt, split_params, split_path, xtext_decode, xtext_encode)

LIMIT = 10 * 1024 * 1024


def refused(func, *args):
    with pytest.raises(ProtocolError) as info:
        func(*args)
    return info.value.reply


def bad(keyword):
    return Reply(501, "5.5.4", "Malformed %s parameter" % keyword)


def test_mail_with_every_parameter():
    path, params = parse_mail(
        "FROM:<a@b.test> SIZE=1000 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2B1 AUTH=<>", LIMIT)
    assert path == "a@b.test"
    assert params == {"SIZE": 1000, "BODY": "8BITMIME", "SMTPUTF8": True, "RET": "HDRS",
                      "ENVID": "QQ+1", "AUTH": "<>"}


def test_mail_null_sender_lowercase_and_space_after_colon():
    assert parse_mail("from: <>", LIMIT) == ("", {})
    assert parse_mail("FROM:<>  ", LIMIT) == ("", {})


def test_rcpt_with_dsn_parameters():
    path, params = parse_rcpt("TO:<c@d.test> NOTIFY=success,delay ORCPT=rfc822;c+2Bx@d.test",
                              False)
    assert path == "c@d.test"
    assert params == {"NOTIFY": ("SUCCESS", "DELAY"), "ORCPT": ("rfc822", "c+x@d.test")}
    assert parse_rcpt("TO:<c@d.test> NOTIFY=NEVER", False)[1] == {"NOTIFY": ("NEVER",)}


@pytest.mark.parametrize("arg", ["FROM <a@b>", "FROM:a@b.test", "FROM:<a@b.test",
                                 "FROM:<a@b.test>SIZE=1", "TO:<a@b>", "FROM:<a\tb@c>",
                                 'FROM:<"a>b@c'])
def test_mail_path_syntax(arg):
    assert refused(parse_mail, arg, LIMIT) == Reply(501, "5.5.4", "Usage: MAIL FROM:<address>")


def test_rcpt_path_syntax():
    usage = Reply(501, "5.5.4", "Usage: RCPT TO:<address>")
    for arg in ("TO:<>", "FROM:<a@b>", "TO:c@d", "TO:<c@d"):
        assert refused(parse_rcpt, arg, False) == usage


def test_faults_15_path_split_keeps_quoted_and_routed_forms_raw():
    usage = Reply(501, "5.5.4", "x")
    assert split_path('<"a>b"@c> SIZE=1', usage) == ('"a>b"@c', "SIZE=1")
    assert split_path('<"a\\"b"@c>', usage) == ('"a\\"b"@c', "")
    assert split_path("<@x,@y:a@c>", usage) == ("@x,@y:a@c", "")
    assert split_path("<a%b@c>", usage) == ("a%b@c", "")


def test_faults_14_unicode_needs_smtputf8():
    need = Reply(553, "5.6.7", "A non-ASCII address needs SMTPUTF8 on MAIL FROM")
    assert refused(parse_mail, "FROM:<jörg@b.test>", LIMIT) == need
    assert parse_mail("FROM:<jörg@b.test> SMTPUTF8", LIMIT)[0] == "jörg@b.test"
    assert refused(parse_rcpt, "TO:<δ@d.test>", False) == need
    assert parse_rcpt("TO:<δ@d.test>", True)[0] == "δ@d.test"


@pytest.mark.parametrize("arg, reply", [
    ("FROM:<a@b> SIZE=1 SIZE=1", Reply(501, "5.5.4", "SIZE parameter given twice")),
    ("FROM:<a@b> size=1 SIZE=1", Reply(501, "5.5.4", "SIZE parameter given twice")),
    ("FROM:<a@b> XVERP", Reply(555, "5.5.4", "Parameter XVERP not supported")),
    ("FROM:<a@b> NOTIFY=NEVER", Reply(555, "5.5.4", "Parameter NOTIFY not supported")),
    ("FROM:<a@b> SIZE=", Reply(501, "5.5.4", "Malformed parameter")),
    ("FROM:<a@b> =1", Reply(501, "5.5.4", "Malformed parameter")),
    ("FROM:<a@b> SI_ZE=1", Reply(501, "5.5.4", "Malformed parameter")),
    ("FROM:<a@b> SIZE=1=2", Reply(501, "5.5.4", "Malformed parameter")),
    ("FROM:<a@b> SIZE=\x00", Reply(501, "5.5.4", "Malformed parameter")),
    ("FROM:<a@b> ENVID=a\r\nRCPT", Reply(501, "5.5.4", "Malformed parameter")),
    ("FROM:<a@b> SIZE=ten", bad("SIZE")),
    ("FROM:<a@b> SIZE", bad("SIZE")),
    ("FROM:<a@b> SIZE=١٢", Reply(501, "5.5.4", "Malformed parameter")),
    ("FROM:<a@b> SIZE=" + "9" * 21, bad("SIZE")),
    ("FROM:<a@b> BODY=BINARYMIME", bad("BODY")),
    ("FROM:<a@b> SMTPUTF8=yes", bad("SMTPUTF8")),
    ("FROM:<a@b> RET=ALL", bad("RET")),
    ("FROM:<a@b> ENVID=x+0D+0AMAIL", bad("ENVID")),
    ("FROM:<a@b> ENVID=x+00", bad("ENVID")),
    ("FROM:<a@b> ENVID=x+2", bad("ENVID")),
    ("FROM:<a@b> ENVID=" + "x" * 101, bad("ENVID")),
    ("FROM:<a@b> ENVID=" + "x" * 65536, bad("ENVID")),
    ("FROM:<a@b> AUTH=a+0Ab", bad("AUTH")),
    ("FROM:<a@b> AUTH=+FF", bad("AUTH")),
    ("FROM:<a@b> AUTH=" + "a" * 65536, bad("AUTH")),
])
def test_faults_19_mail_parameter_hygiene(arg, reply):
    assert refused(parse_mail, arg, LIMIT) == reply


@pytest.mark.parametrize("arg, reply", [
    ("TO:<c@d> NOTIFY=NEVER,SUCCESS", bad("NOTIFY")),
    ("TO:<c@d> NOTIFY=SUCCESS,SUCCESS", bad("NOTIFY")),
    ("TO:<c@d> NOTIFY=ALWAYS", bad("NOTIFY")),
    ("TO:<c@d> NOTIFY", bad("NOTIFY")),
    ("TO:<c@d> ORCPT=c@d", bad("ORCPT")),
    ("TO:<c@d> ORCPT=rfc822;", bad("ORCPT")),
    ("TO:<c@d> ORCPT=;c@d", bad("ORCPT")),
    ("TO:<c@d> ORCPT=rfc822;c+0D+0A@d", bad("ORCPT")),
    ("TO:<c@d> ORCPT=rfc822;" + "c" * 65536, bad("ORCPT")),
    ("TO:<c@d> SIZE=1", Reply(555, "5.5.4", "Parameter SIZE not supported")),
    ("TO:<c@d> ORCPT=rfc822;a ORCPT=rfc822;b",
     Reply(501, "5.5.4", "ORCPT parameter given twice")),
])
def test_faults_19_rcpt_parameter_hygiene(arg, reply):
    assert refused(parse_rcpt, arg, False) == reply


def test_faults_24_size_above_limit():
    assert refused(parse_mail, "FROM:<a@b> SIZE=104857600", LIMIT) == Reply(
        552, "5.3.4", "Declared SIZE over the size limit")
    assert parse_mail("FROM:<a@b> SIZE=%d" % LIMIT, LIMIT)[1] == {"SIZE": LIMIT}


def test_split_params_keeps_order_and_flags():
    assert split_params(" A=1  b c-d=x ") == [("A", "1"), ("B", None), ("C-D", "x")]


def test_xtext_examples():
    assert xtext_decode("a+2Bb+3Dc") == "a+b=c"
    assert xtext_decode("caf+C3+A9") == "café"
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    for bad_xtext in ("a+0D+0Ab", "+00", "+C3", "é", "a b", "a=b", "+zz"):
        with pytest.raises(ProtocolError):
            xtext_decode(bad_xtext)


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, exclude_characters="\x7f",
                                     exclude_categories=("Cs",)),
               max_size=80))
def test_xtext_round_trip(text):
    encoded = xtext_encode(text)
    assert encoded.isascii() and " " not in encoded and "=" not in encoded
    assert xtext_decode(encoded) == text


@settings(max_examples=500)
@given(st.text(max_size=120))
def test_parsers_only_ever_raise_remote_protocol_error(arg):
    for parse in (lambda: parse_mail("FROM:" + arg, LIMIT), lambda: parse_mail(arg, LIMIT),
                  lambda: parse_rcpt("TO:" + arg, True), lambda: parse_rcpt(arg, False)):
        try:
            path, params = parse()
        except ProtocolError as err:
            assert err.reply.code in (501, 552, 553, 555)
        else:
            assert not any(c in path for c in "\r\n\x00")
            for value in params.values():
                assert not any(c in str(value) for c in "\r\n\x00")
