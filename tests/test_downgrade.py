"""8-bit MIME downgrade (masq.mail.downgrade): the converted text is 7-bit and, parsed back
with Python's email package, holds the same parts with the same decoded content; what needs
no conversion stays byte-identical; signed parts are never touched (conversion impossible
when they hold 8-bit octets); and end to end, a daemon relaying to `smtp-sink -8` (which
does not offer 8BITMIME) sends the converted message, and bounces 5.6.3 what it cannot
convert."""

import email
import email.policy

import pytest
from hypothesis import given, settings, strategies as st

from masq.mail import downgrade as D

from helpers import Daemon, free_port, masq, wait_for, write_config
from sinks import SmtpSink

MIXED = (b"From: a@test.example\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n"
         b"Content-Transfer-Encoding: 8bit\r\n\r\n"
         b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: 8bit\r\n\r\n"
         b"caf\xc3\xa9 = ok \r\n.dot line\r\n" + b"\xc3\xa9" * 100 + b"\r\nend\r\n"
         b"--XX\r\nContent-Type: application/octet-stream\r\n"
         b"Content-Transfer-Encoding: binary\r\n\r\n\x80\x81bin\r\nline2\xff\r\n"
         b"--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
         b"Content-Type: text/plain; charset=latin-1\r\n\r\nna\xefve\r\n"
         b"--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
         b"plain ascii, labelled 8bit\r\n--XX--\r\nepilogue\r\n")

SIGNED = (b"From: a@test.example\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: multipart/signed; boundary=\"S\"; protocol=\"application/"
          b"pgp-signature\"\r\n\r\n--S\r\nContent-Type: text/plain; charset=utf-8\r\n"
          b"Content-Transfer-Encoding: 8bit\r\n\r\nsign\xc3\xa9d\r\n--S\r\n"
          b"Content-Type: application/pgp-signature\r\n\r\nSIG\r\n--S--\r\n")


def pieces(text, size):
    return [text[i:i + size] for i in range(0, len(text), size)]


def leaves(text):
    """Return [(content type, decoded payload)] of a message's leaf parts."""
    msg = email.message_from_bytes(text, policy=email.policy.default)
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in msg.walk()
            if not p.is_multipart() and p.get_content_type() != "message/rfc822"]


def downgraded(text, size=7):
    plan = D.scan(iter(pieces(text, size)))
    return b"".join(D.convert(iter(pieces(text, size)), plan))


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 16])
def test_converted_parts_decode_to_the_original_content(size):
    out = downgraded(MIXED, size)
    assert out.isascii()
    assert leaves(out) == leaves(MIXED)
    assert [p.get_content_type() for p in email.message_from_bytes(out).walk()] == \
        [p.get_content_type() for p in email.message_from_bytes(MIXED).walk()]
    assert b"Content-Transfer-Encoding: quoted-printable" in out
    assert b"Content-Transfer-Encoding: base64" in out
    assert b"Content-Transfer-Encoding: 8bit" not in out       # relabelled 7bit
    assert b"Content-Transfer-Encoding: 7bit\r\n\r\nplain ascii, labelled 8bit" in out
    assert out.startswith(b"From: a@test.example\r\nSubject: t\r\n")


def test_seven_bit_text_needs_nothing_and_passes_byte_identical():
    text = MIXED.replace(b"\xc3\xa9", b"e").replace(b"\x80\x81", b"ab").replace(
        b"\xff", b"f").replace(b"\xef", b"i").replace(b"8bit", b"7bit").replace(
        b"binary", b"7bit")
    plan = D.scan([text])
    assert not plan.needed and plan.convert == set()
    assert b"".join(D.convert([text], plan)) == text


def test_a_plain_message_gets_mime_headers_and_quoted_printable():
    text = b"Subject: x\r\n\r\nna\xc3\xafve\r\n"
    out = downgraded(text)
    assert b"MIME-Version: 1.0\r\n" in out and leaves(out) == [("text/plain",
                                                                 b"na\xc3\xafve\r\n")]


def test_a_long_line_is_converted_in_pieces():
    text = b"Subject: x\r\n\r\n" + b"\xe9abc " * 40000 + b"\r\nend\r\n"
    out = downgraded(text, 1 << 16)
    assert out.isascii() and max(map(len, out.split(b"\r\n"))) <= 76
    assert leaves(out)[0][1] == text.split(b"\r\n\r\n", 1)[1]


def test_signed_parts_stay_intact_or_make_conversion_impossible():
    with pytest.raises(D.Impossible, match="signed"):
        D.scan([SIGNED])
    ascii_signed = SIGNED.replace(b"\xc3\xa9", b"e")
    plan = D.scan([ascii_signed])
    assert b"".join(D.convert([ascii_signed], plan)) == ascii_signed


def test_eight_bit_headers_cannot_be_converted():
    with pytest.raises(D.Impossible, match="header"):
        D.scan([b"Subject: caf\xc3\xa9\r\n\r\nbody\r\n"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=30), st.integers(1, 300))
def test_any_text_part_round_trips(lines, size):
    body = b"\r\n".join(line.replace(b"\r", b"").replace(b"\n", b"") for line in lines)
    text = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n"
            b"--=_b\r\nContent-Type: text/plain\r\n\r\n" + body + b"\r\n--=_b\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + body + b"\r\n--=_b--\r\n")
    out = downgraded(text, size)
    assert out.isascii()
    assert leaves(out) == leaves(text)


def test_daemon_converts_for_a_next_hop_without_8bitmime(tmp_path):
    sink_port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), routes=(
        "config route 'seven'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
        % sink_port))
    with SmtpSink(sink_port, str(tmp_path / "sink"), "-8") as sink:
        daemon = Daemon(conf).start()
        try:
            for text in (MIXED, SIGNED):
                done = masq("-C", conf, "-i", "-f", "me@test.example", "far@example.org",
                            input=text)
                assert done.returncode == 0, done.stderr
            (got,) = sink.messages(1, timeout=30)
            assert wait_for(lambda: "dsn=5.6.3" in daemon.log_so_far(), timeout=30), \
                daemon.log_so_far()
            log = daemon.log_so_far()
        finally:
            daemon.stop()
    body = got.split(b"\n\n", 1)[1]
    assert body.isascii()
    def lf(parts):         # smtp-sink stores LF line ends; base64 keeps the original CRLFs
        return [(t, p.replace(b"\r\n", b"\n") if t.startswith("text/") else p)
                for t, p in parts]
    assert lf(leaves(got)) == lf(leaves(MIXED))
    assert "dsn=5.6.3" in log and "does not offer 8BITMIME" in log


def test_a_seven_bit_text_is_judged_by_the_quick_pass():
    opened = []

    def reopen():
        opened.append(1)
        return iter([MIXED])
    plan = D.Plan()
    for _ in D.scan_steps(iter([b"Subject: x\r\n\r\nascii only\r\n"]), plan, reopen=reopen):
        pass
    assert not plan.needed and opened == []
    plan = D.Plan()
    for _ in D.scan_steps(iter([MIXED]), plan, reopen=reopen):
        pass
    assert plan.needed and plan.convert == {2, 3, 5} and opened == [1]
