"""The sans-IO DNS codec: query bytes, response parsing, compression traps, fuzzing."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masq.proto import dns
from masq.proto.dns import ResourceRecord
from masq.proto.errors import ProtocolError

QID = 0x1234


def header(qid=QID, flags=0x8180, qd=1, an=0, ns=0, ar=0):
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def question(name=b"\x07example\x04test\x00", qtype=dns.MX):
    return name + struct.pack("!HH", qtype, dns.IN)


def rr(name, kind, rdata, ttl=300, klass=dns.IN):
    return name + struct.pack("!HHIH", kind, klass, ttl, len(rdata)) + rdata


def parse(data, name="example.test", qtype=dns.MX):
    return dns.parse_response(data, QID, name, qtype)


def sample_response():
    return dns.build_response(QID, "example.test", dns.MX, answers=[
        ResourceRecord("example.test", dns.MX, 300, (10, "mail.example.test")),
        ResourceRecord("example.test", dns.MX, 300, (20, "backup.example.test")),
        ResourceRecord("mail.example.test", dns.A, 60, "127.0.0.2"),
        ResourceRecord("mail.example.test", dns.AAAA, 60, "2001:db8::1"),
        ResourceRecord("www.example.test", dns.CNAME, 60, "mail.example.test"),
    ], authority=[ResourceRecord("example.test", dns.SOA, 60,
                         ("ns.example.test", "hostmaster.example.test", 1, 2, 3, 4, 30))])


# building queries

def test_query_bytes_are_exact_with_rd_and_edns0():
    query = dns.build_query(QID, "Example.Test.", dns.AAAA)
    expected = (struct.pack("!HHHHHH", QID, 0x0100, 1, 0, 0, 1)
                + b"\x07Example\x04Test\x00" + struct.pack("!HH", 28, 1)
                + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0))
    assert query == expected


def test_query_round_trips_through_parse_query():
    assert dns.parse_query(dns.build_query(7, "mail.example.test", dns.A)) == (
        7, "mail.example.test", dns.A)


@pytest.mark.parametrize("name", [
    "a" * 64 + ".test",                       # label over 63
    ".".join(["a" * 63] * 4),                 # name over 255 octets
    "a..test", ".test", "exämple.test", "ex ample.test", "a\\046b.test", "x\x00y.test",
])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError):
        dns.build_query(1, name, dns.A)


def test_longest_legal_name_is_accepted():
    name = ".".join(["a" * 63] * 3 + ["a" * 61])          # 255 octets on the wire
    assert len(dns.encode_name(name)) == 255
    assert dns.build_query(1, name, dns.A)


def test_root_name_encodes_as_one_zero_octet():
    assert dns.encode_name(".") == b"\x00"
    assert dns.encode_name("") == b"\x00"


# parsing responses

def test_sample_response_parses_every_type():
    response = parse(sample_response())
    assert response.rcode == dns.NOERROR and not response.tc
    assert [r.data for r in response.answers] == [
        (10, "mail.example.test"), (20, "backup.example.test"), "127.0.0.2", "2001:db8::1",
        "mail.example.test"]
    assert response.authority[0].data[-1] == 30


def test_question_echo_is_case_insensitive_and_ignores_trailing_dot():
    assert parse(sample_response(), name="EXAMPLE.Test.").answers


@pytest.mark.parametrize("qid,name,qtype", [
    (QID + 1, "example.test", dns.MX),
    (QID, "other.test", dns.MX),
    (QID, "example.test", dns.A),
    (QID, "example.tes", dns.MX),
])
def test_foreign_answers_are_rejected(qid, name, qtype):
    with pytest.raises(ProtocolError):
        dns.parse_response(sample_response(), qid, name, qtype)


def test_query_instead_of_response_is_rejected():
    with pytest.raises(ProtocolError):
        parse(header(flags=0x0100) + question())


def test_nonzero_opcode_and_two_questions_are_rejected():
    with pytest.raises(ProtocolError):
        parse(header(flags=0x8180 | 0x0800) + question())
    with pytest.raises(ProtocolError):
        parse(header(qd=2) + question() + question())


def test_compression_pointer_to_question_name_is_followed():
    data = header(an=1) + question() + rr(b"\xc0\x0c", dns.MX, b"\x00\x0a\x04mail\xc0\x0c")
    assert parse(data).answers == (
        ResourceRecord("example.test", dns.MX, 300, (10, "mail.example.test")),)


def test_chain_of_backward_pointers_is_followed():
    # answer 1's exchange "mx.example.test" at offset X; answer 2 points at "mx" + pointer
    first = rr(b"\xc0\x0c", dns.MX, b"\x00\x01\x02mx\xc0\x0c")
    exchange_at = 12 + len(question()) + 2 + 10 + 2
    second = rr(b"\xc0\x0c", dns.MX, b"\x00\x02\x03alt" + struct.pack("!H", 0xC000 | exchange_at))
    response = parse(header(an=2) + question() + first + second)
    assert response.answers[1].data == (2, "alt.mx.example.test")


@pytest.mark.parametrize("pointer", [
    b"\xc0\xff",          # forward, past the end
    b"\xc0\x2a",          # at itself, inside its own record data
])
def test_forward_pointers_are_rejected(pointer):
    data = header(an=1) + question() + rr(b"\xc0\x0c", dns.CNAME, pointer)
    with pytest.raises(ProtocolError):
        parse(data, qtype=dns.MX)


def test_pointer_to_itself_is_rejected():
    at = 12 + len(question())
    data = header(an=1) + question() + struct.pack("!H", 0xC000 | at) + b"\x00\x05\x00\x01"
    with pytest.raises(ProtocolError):
        parse(data)


def test_pointer_loop_between_two_names_is_rejected():
    # name at A = "x" + pointer to B; name at B = pointer to A  (B > A: a forward pointer)
    at = 12 + len(question())
    loop_a = b"\x01x" + struct.pack("!H", 0xC000 | (at + 4))
    loop_b = struct.pack("!H", 0xC000 | at)
    data = header(an=1) + question() + loop_a + loop_b + b"\x00\x05\x00\x01"
    with pytest.raises(ProtocolError):
        parse(data)


def test_pointer_into_the_same_name_is_rejected():
    # "a" then a pointer back to the "a" label: would expand forever
    at = 12 + len(question())
    data = header(an=1) + question() + b"\x01a" + struct.pack("!H", 0xC000 | at)
    with pytest.raises(ProtocolError):
        parse(data + b"\x00\x05\x00\x01\x00\x00\x00\x01\x00\x00")


def test_reserved_label_types_are_rejected():
    data = header(an=1) + question() + rr(b"\x40abc\x00", dns.A, b"\x7f\x00\x00\x01")
    with pytest.raises(ProtocolError):
        parse(data)


def test_hostile_octets_in_names_are_escaped_and_unqueryable():
    data = header(an=1) + question() + rr(b"\xc0\x0c", dns.MX, b"\x00\x0a\x05ev.l\x00\x00")
    exchange = parse(data).answers[0].data[1]
    assert exchange == "ev\\046l\\000"
    with pytest.raises(ValueError):
        dns.build_query(1, exchange, dns.A)


def test_null_mx_parses_as_root():
    data = dns.build_response(QID, "example.test", dns.MX,
                              answers=[ResourceRecord("example.test", dns.MX, 300, (0, "."))])
    assert parse(data).answers[0].data == (0, ".")


@pytest.mark.parametrize("kind,rdata", [
    (dns.A, b"\x7f\x00\x00\x01\x00"),         # A of 5 octets
    (dns.AAAA, b"\x00" * 4),                  # AAAA of 4 octets
    (dns.MX, b"\x00\x0a\x04mail\xc0\x0c\x00"),  # trailing octet inside rdata
    (dns.MX, b"\x00\x0a\x04mail"),            # name runs past its rdata
    (dns.SOA, b"\xc0\x0c\xc0\x0c" + b"\x00" * 19),
])
def test_record_data_must_fill_its_length_exactly(kind, rdata):
    data = header(an=1) + question() + rr(b"\xc0\x0c", kind, rdata)
    with pytest.raises(ProtocolError):
        parse(data + b"\x00" * 8)


def test_record_count_beyond_the_data_is_rejected():
    with pytest.raises(ProtocolError):
        parse(header(an=3) + question() + rr(b"\xc0\x0c", dns.A, b"\x7f\x00\x00\x01"))


def test_ttl_with_top_bit_set_means_zero():
    data = header(an=1) + question() + rr(b"\xc0\x0c", dns.A, b"\x7f\x00\x00\x01",
                                          ttl=0x80000000)
    assert parse(data).answers[0].ttl == 0


def test_other_classes_are_skipped_and_unknown_types_kept_raw():
    data = (header(an=2) + question()
            + rr(b"\xc0\x0c", dns.A, b"\x7f\x00\x00\x01", klass=3)
            + rr(b"\xc0\x0c", 99, b"raw"))
    assert parse(data).answers == (ResourceRecord("example.test", 99, 300, b"raw"),)


def test_truncated_flag_stops_parsing_after_the_question():
    data = header(flags=0x8380, an=5) + question() + b"\xff\xff"
    response = parse(data)
    assert response.tc and response.answers == ()


def test_rcode_is_extended_by_the_opt_record():
    opt = b"\x00" + struct.pack("!HHIH", dns.OPT, 1232, 1 << 24, 0)
    data = header(flags=0x8180 | dns.NXDOMAIN, ar=1) + question() + opt
    assert parse(data).rcode == 16 + dns.NXDOMAIN


def test_nxdomain_rcode_is_reported():
    data = dns.build_response(QID, "example.test", dns.MX, rcode=dns.NXDOMAIN)
    assert parse(data).rcode == dns.NXDOMAIN


# meaning: CNAME chains and negative TTLs

def test_chase_follows_cnames_to_the_records_and_keeps_the_lowest_ttl():
    response = dns.Response(0, False, (
        ResourceRecord("www.example.test", dns.CNAME, 50, "web.example.test"),
        ResourceRecord("web.example.test", dns.CNAME, 500, "host.example.test"),
        ResourceRecord("host.example.test", dns.A, 300, "192.0.2.1"),
        ResourceRecord("other.example.test", dns.A, 1, "192.0.2.2")))
    records, canonical, ttl = dns.chase(response, "WWW.example.test.", dns.A)
    assert [r.data for r in records] == ["192.0.2.1"]
    assert (canonical, ttl) == ("host.example.test", 50)


def test_chase_reports_where_the_chain_leaves_the_answer():
    response = dns.Response(0, False, (ResourceRecord("a.test", dns.CNAME, 60, "b.test"),))
    assert dns.chase(response, "a.test", dns.A) == ((), "b.test", 60)
    assert dns.chase(response, "a.test", dns.CNAME)[0] == response.answers


def test_chase_refuses_a_cname_loop():
    response = dns.Response(0, False, (ResourceRecord("a.test", dns.CNAME, 60, "b.test"),
                                       ResourceRecord("b.test", dns.CNAME, 60, "a.test")))
    with pytest.raises(ProtocolError):
        dns.chase(response, "a.test", dns.A)


def test_negative_ttl_is_the_soa_ttl_or_minimum_whichever_is_lower():
    soa = ResourceRecord("test", dns.SOA, 900, ("ns.test", "h.test", 1, 2, 3, 4, 60))
    assert dns.negative_ttl(dns.Response(3, False, (), (soa,))) == 60
    assert dns.negative_ttl(dns.Response(3, False)) == 0


# TCP framing

def test_frame_and_unframe_round_trip_in_pieces():
    message = sample_response()
    stream = dns.frame(message) + dns.frame(b"xy")
    assert dns.unframe(stream[:1]) == (None, stream[:1])
    assert dns.unframe(stream[:10]) == (None, stream[:10])
    first, rest = dns.unframe(stream)
    assert first == message
    assert dns.unframe(rest) == (b"xy", b"")


def test_frame_refuses_oversized_messages():
    with pytest.raises(ValueError):
        dns.frame(b"x" * 65536)


# fuzzing: nothing but ProtocolError, ever

def _parse_or_format_error(data):
    try:
        response = parse(data)
    except ProtocolError:
        return None
    assert isinstance(response, dns.Response)
    return response


@settings(max_examples=400)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_format_errors(data):
    response = _parse_or_format_error(data)
    assert response is None or isinstance(response, dns.Response)


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_random_tails_after_a_valid_question_raise_only_format_errors(tail):
    response = _parse_or_format_error(header(an=2, ns=1, ar=1) + question() + tail)
    assert response is None or len(response.answers) <= 2


@settings(max_examples=600)
@given(st.data())
def test_mutated_valid_responses_raise_only_format_errors(data):
    message = bytearray(sample_response())
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(message) - 1))
        action = data.draw(st.sampled_from(["set", "cut", "insert", "pointer"]))
        if action == "set":
            message[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del message[at:]
            if not message:
                break
        elif action == "insert":
            message[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        else:
            message[at:at + 2] = struct.pack("!H", 0xC000 | data.draw(st.integers(0, 0x3FFF)))
    response = _parse_or_format_error(bytes(message))
    assert response is None or isinstance(response, dns.Response)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_parse_query_raises_only_format_errors(data):
    try:
        dns.parse_query(data)
    except ProtocolError:
        pass
    assert True


@settings(max_examples=200)
@given(st.lists(st.from_regex(r"[a-z0-9_-]{1,20}", fullmatch=True), min_size=1, max_size=5))
def test_valid_names_round_trip(labels):
    name = ".".join(labels)
    assert dns.parse_query(dns.build_query(9, name, dns.A)) == (9, name, dns.A)
