"""Fuzz the HTTP engine (masq/proto/http.py) and its small parsers with hostile requests.

Input: request lines and header fields from the HTTP grammar (methods, absolute and
relative targets, versions, Host, Content-Length right and wrong, Transfer-Encoding,
Expect, Connection, obs-fold, bare LF, control characters), bodies, pipelined requests and
random bytes, cut into reads at random offsets; form bodies, cookies and Basic credentials.
Properties: the engine yields Requests, ExpectContinue and ConnectionClosed or raises its
ProtocolError with a 4xx/5xx status whose response it can send; nothing else
escapes; unprocessed input stays within the engine's caps; the parsers return their value
or ProtocolError with reply 400; Requests do not depend on where the reads were cut.
"""

from hypothesis import example, given, strategies as st

from fuzzing import fuzz_settings, mixed, splits
from masq.proto import http

_request_line = st.tuples(
    st.sampled_from([b"GET", b"POST", b"HEAD", b"OPTIONS", b"PUT", b"G(T", b""]),
    st.sampled_from([b" ", b"  ", b"\t"]),
    st.sampled_from([b"/", b"/status.json", b"/?a=b%zz", b"http://x/y", b"HTTPS://h", b"*",
                     b"ftp://x/", b"x", b"/\x7f", b"/" + b"a" * 9000]),
    st.sampled_from([b" HTTP/1.1", b" HTTP/1.0", b" HTTP/2.0", b" HTTP/1.10", b" http/1.1",
                     b""])).map(b"".join)
_field = st.one_of(
    st.sampled_from([b"Host: x", b"Host: y", b"host:", b"Content-Length: 5",
                     b"Content-Length: 0", b"Content-Length: 5, 5", b"Content-Length: 5, 6",
                     b"Content-Length: -1", b"Content-Length: 99999999999999999999999",
                     b"Content-Length: 100000", b"Transfer-Encoding: chunked",
                     b"Expect: 100-continue", b"Expect: x", b"Connection: close",
                     b"Connection: keep-alive", b" folded", b"Bad Name: x", b"X: a\x01b",
                     b"Cookie: a=b; c", b"Authorization: Basic YTpi", b": x", b"X:\rY"]),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    st.integers(1000, 40000).map(lambda n: b"X-Long: " + b"z" * n))
_eol = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"])
_head = st.tuples(_request_line, _eol, st.lists(st.tuples(_field, _eol).map(b"".join),
                                                max_size=6).map(b"".join), _eol,
                  st.binary(max_size=12)).map(b"".join)
_stream = st.one_of(mixed(_head, junk_size=30), st.lists(_head, max_size=4).map(b"".join))
_answers = st.lists(st.sampled_from([200, 204, 303, 404, 500]), max_size=10)


def run(reads, answers, **kw):
    """Drive one connection; return (requests, error status or None, bytes written)."""
    srv = http.HTTPServer(max_line=1024, max_headers=4096, max_body=2048, **kw)
    requests, written, answers = [], bytearray(), list(answers)
    limit = srv.max_line + srv.max_headers + srv.max_body
    try:
        for data in reads + [b""]:
            srv.receive_data(data)
            while True:
                event = srv.next_event()
                if event is http.NEED_DATA:
                    assert len(srv._in) <= limit
                    break
                if event is http.PAUSED:
                    raise AssertionError("paused without an answer due")
                if isinstance(event, http.ConnectionClosed):
                    return requests, None, bytes(written)
                if isinstance(event, http.ExpectContinue):
                    written += srv.send_continue()
                    continue
                assert isinstance(event, http.Request)
                assert all(name == name.lower() and value == value.strip(" \t")
                           for name, value in event.headers)
                assert event.target.startswith("/") or event.target == "*"
                requests.append(event)
                written += srv.send(http.Response(answers.pop(0) if answers else 200,
                                                  (("X-Seen", "1"),), b"ok"))
                if srv.closing:
                    return requests, None, bytes(written)
    except http.ProtocolError as err:
        assert 400 <= err.reply < 600 and err.reply in http.REASONS
        written += srv.send(http.error_response(err))
        assert srv.state == http.CLOSED
        return requests, err.reply, bytes(written)
    return requests, None, bytes(written)


@fuzz_settings()
@given(_stream, st.lists(st.integers(0, 50000), max_size=8), _answers)
@example(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
         b"abcGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", [60], [])
@example(b"\r\n" * 20 + b"GET / HTTP/1.0\r\n\r\n", [], [])
def test_any_request_bytes_end_in_requests_or_an_error_status(data, cuts, answers):
    requests, status, written = run(splits(data, cuts), answers)
    assert written.startswith(b"HTTP/1.1 ") or not written
    assert status is not None or written.count(b"HTTP/1.1 ") >= len(requests)


@fuzz_settings(weight=4)
@given(_stream.filter(lambda d: len(d) <= 300))
def test_requests_do_not_depend_on_where_reads_are_cut(data):
    whole, status, _ = run([data], [])
    for cut in range(1, len(data)):
        cut_requests, cut_status, _ = run([data[:cut], data[cut:]], [])
        assert cut_requests == whole and (cut_status is None) == (status is None), cut


_form = st.lists(st.one_of(st.sampled_from([b"a=b", b"%41=%4", b"x=%zz", b"%e9=1", b"+",
                                            b"=", b"&", b"%c3%a9=%C3%A9"]),
                           st.binary(max_size=12)), max_size=6).map(b"&".join)


@fuzz_settings()
@given(_form, st.text(max_size=60), st.text(max_size=60))
def test_form_cookie_and_basic_parsers_return_a_value_or_400(body, cookie, basic):
    try:
        form = http.parse_form(body)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in form.items())
    except http.ProtocolError as err:
        assert err.reply == 400
    assert isinstance(http.parse_cookies(cookie), dict)
    for value in (basic, "Basic " + basic, "basic YTpi" + basic):
        found = http.parse_basic(value)
        assert found is None or (isinstance(found[0], bytes) and isinstance(found[1], bytes))
