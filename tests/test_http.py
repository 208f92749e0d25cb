"""The sans-IO HTTP/1.1 server engine: bytes in, events out; responses out as bytes.

Requests are fed whole, split at every offset and byte by byte; every fault the engine
knows has its status (400, 411, 413, 414, 417, 431, 505); responses are read back by
Python's own http.client over a fake socket (the client side of the pair).
"""

import http.client
import io
import time

import pytest
from hypothesis import given, settings, strategies as st

from masq.proto import http as h

GET = b"GET /status.json HTTP/1.1\r\nHost: r.lan\r\n\r\n"
POST = (b"POST /flush HTTP/1.1\r\nHost: r.lan\r\nContent-Type: application/x-www-form-urlencoded"
        b"\r\nContent-Length: 20\r\n\r\nroute=isp&csrf=abcde")


def events(engine, data=b"", eof=False):
    """Feed data (and EOF); return the events up to NEED_DATA/PAUSED (inclusive)."""
    if data:
        engine.receive_data(data)
    if eof:
        engine.receive_data(b"")
    out = []
    while True:
        event = engine.next_event()
        out.append(event)
        if event in (h.NEED_DATA, h.PAUSED) or isinstance(event, h.ConnectionClosed):
            return out


def fault(data, **limits):
    """Return the status of the ProtocolError that data provokes."""
    engine = h.HTTPServer(**limits)
    engine.receive_data(data)
    with pytest.raises(h.ProtocolError) as info:
        while engine.next_event() not in (h.NEED_DATA, h.PAUSED):
            pass
    answer = engine.send(h.error_response(info.value))
    assert engine.closing and engine.state == h.CLOSED
    assert answer.startswith(b"HTTP/1.1 %d " % info.value.reply)
    return info.value.reply


class FakeSocket:
    """Just enough socket for http.client.HTTPResponse."""

    def __init__(self, data):
        self.data = data

    def makefile(self, mode):
        return io.BytesIO(self.data)


def parse_response(data, method="GET"):
    """Return (status, headers dict, body) as http.client reads the bytes."""
    response = http.client.HTTPResponse(FakeSocket(data), method=method)
    response.begin()
    return response.status, dict(response.getheaders()), response.read()


# requests

def test_get_is_one_request_then_paused_until_answered():
    engine = h.HTTPServer()
    [request, paused] = events(engine, GET)
    assert request == h.Request("GET", "/status.json", "1.1", (("host", "r.lan"),), b"")
    assert request.header("HOST") == "r.lan" and request.path == "/status.json"
    assert paused is h.PAUSED and engine.next_event() is h.PAUSED


def test_post_body_by_content_length():
    [request, _] = events(h.HTTPServer(), POST)
    assert request.method == "POST" and request.body == b"route=isp&csrf=abcde"
    assert h.parse_form(request.body) == {"route": "isp", "csrf": "abcde"}


@pytest.mark.parametrize("cut", range(1, len(POST)))
def test_every_split_gives_the_same_request(cut):
    engine = h.HTTPServer()
    first = events(engine, POST[:cut])
    assert first == [h.NEED_DATA]
    [request, _] = events(engine, POST[cut:])
    assert request.body == b"route=isp&csrf=abcde"


def test_byte_by_byte():
    engine = h.HTTPServer()
    for byte in POST[:-1]:
        assert events(engine, bytes([byte])) == [h.NEED_DATA]
    [request, _] = events(engine, POST[-1:])
    assert request.headers[-1] == ("content-length", "20")


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=0, max_value=len(GET + POST)), max_size=6))
def test_pipelined_requests_split_anywhere(cuts):
    data, engine, got = GET + POST, h.HTTPServer(), []
    bounds = [0] + sorted(cuts) + [len(data)]
    for start, end in zip(bounds, bounds[1:]):
        if start == end:
            continue                        # b"" would mean EOF
        engine.receive_data(data[start:end])
        while True:
            event = engine.next_event()
            if event is h.NEED_DATA:
                break
            if event is h.PAUSED:
                break
            got.append(event)
            engine.send(h.Response(204))
    assert [r.method for r in got] == ["GET", "POST"]


def test_keep_alive_then_eof_between_requests_is_a_clean_close():
    engine = h.HTTPServer()
    events(engine, GET)
    raw = engine.send(h.Response(200, (("Content-Type", "text/plain"),), b"hi"))
    assert parse_response(raw) == (200, {"Content-Type": "text/plain", "Content-Length": "2"},
                                   b"hi")
    assert not engine.closing and engine.state == h.HEAD
    assert events(engine, eof=True) == [h.ConnectionClosed()]


def test_pipelined_second_request_waits_for_the_first_answer():
    engine = h.HTTPServer()
    first = events(engine, GET + GET)
    assert len(first) == 2 and first[1] is h.PAUSED
    engine.send(h.Response(204))
    assert events(engine)[0].method == "GET"


def test_connection_close_and_http10_close_after_the_answer():
    for data in (GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
                 b"GET / HTTP/1.0\r\n\r\n"):
        engine = h.HTTPServer()
        events(engine, data)
        raw = engine.send(h.Response(200, body=b"x"))
        assert b"\r\nConnection: close\r\n" in raw
        assert engine.closing and engine.state == h.CLOSED
        assert engine.next_event() == h.ConnectionClosed()


def test_http10_keep_alive_is_honoured():
    engine = h.HTTPServer()
    events(engine, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    engine.send(h.Response(200))
    assert not engine.closing and engine.state == h.HEAD


def test_response_connection_close_header_closes():
    engine = h.HTTPServer()
    events(engine, GET)
    raw = engine.send(h.Response(200, (("Connection", "close"),)))
    assert raw.count(b"Connection") == 1 and engine.state == h.CLOSED


def test_head_gets_headers_without_body():
    engine = h.HTTPServer()
    events(engine, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = engine.send(h.Response(200, body=b"0123456789"))
    assert raw.endswith(b"Content-Length: 10\r\n\r\n")
    assert parse_response(raw, "HEAD")[2] == b""


def test_bare_lf_and_leading_blank_lines_are_tolerated():
    [request, _] = events(h.HTTPServer(), b"\r\n\nGET /a HTTP/1.1\nHost: x\n\n")
    assert request.target == "/a" and request.headers == (("host", "x"),)


def test_absolute_form_target_becomes_a_path():
    [request, _] = events(h.HTTPServer(),
                          b"GET http://r.lan:8025/status.json?x=1 HTTP/1.1\r\nHost: r\r\n\r\n")
    assert request.target == "/status.json?x=1" and request.path == "/status.json"


def test_expect_100_continue():
    engine = h.HTTPServer()
    head = POST.split(b"\r\n\r\n")[0].replace(b"Host", b"Expect: 100-continue\r\nHost") + b"\r\n\r\n"
    [expect, need] = events(engine, head)
    assert expect == h.ExpectContinue() and need is h.NEED_DATA
    assert engine.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    [request, _] = events(engine, b"route=isp&csrf=abcde")
    assert request.body == b"route=isp&csrf=abcde"


# faults: the client broke HTTP

@pytest.mark.parametrize("data, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),                                      # HTTP/0.9
    (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET relative HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                             # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),                 # space before colon
    (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),       # obs-fold
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400),        # bare CR
    (b"GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 411),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n", 417),
    (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 70000\r\n\r\n",
     413),
])
def test_faults_have_their_status(data, status):
    assert fault(data) == status


def test_same_content_length_twice_is_accepted():
    [request, _] = events(h.HTTPServer(), b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2"
                                          b"\r\n\r\nab")
    assert request.body == b"ab"


def test_request_line_limit_is_414_even_before_its_end():
    assert fault(b"GET /" + b"a" * 9000) == 414
    assert fault(b"GET /" + b"a" * 8180 + b" HTTP/1.1\r\nHost: x\r\n\r\n") == 414
    [request, _] = events(h.HTTPServer(), b"GET /" + b"a" * 8160 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(request.target) == 8161


def test_header_limits_are_431():
    big = b"X-Big: " + b"b" * 8200 + b"\r\n"
    assert fault(b"GET / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n") == 431
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 4000) for i in range(9))
    assert fault(b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n") == 431
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(101))
    assert fault(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n") == 431
    assert fault(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 9000) == 431   # no end yet


def test_limits_are_configurable():
    assert fault(POST, max_body=10) == 413
    assert fault(GET, max_line=16) == 414


def test_garbage_fails_before_the_head_ends():
    engine = h.HTTPServer()
    engine.receive_data(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n")
    with pytest.raises(h.ProtocolError) as info:
        engine.next_event()
    assert info.value.reply == 400


def test_eof_in_the_middle_of_a_request_is_400():
    engine = h.HTTPServer()
    events(engine, POST[:-3])
    engine.receive_data(b"")
    with pytest.raises(h.ProtocolError) as info:
        engine.next_event()
    assert info.value.reply == 400
    engine = h.HTTPServer()
    engine.receive_data(b"GET / HT")
    engine.receive_data(b"")
    with pytest.raises(h.ProtocolError):
        engine.next_event()


def test_error_response_is_plain_text_and_closes():
    error = h.ProtocolError("header field too large", 431)
    engine = h.HTTPServer()
    engine.receive_data(b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n")
    with pytest.raises(h.ProtocolError):
        engine.next_event()
    status, headers, body = parse_response(engine.send(h.error_response(error)))
    assert status == 431 and headers["Connection"] == "close"
    assert body == b"431 Request Header Fields Too Large: header field too large\n"


def test_wants_data_is_bounded_while_an_answer_is_due():
    engine = h.HTTPServer(max_line=100, max_headers=100, max_body=100)
    events(engine, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert engine.wants_data
    engine.receive_data(b"G" * 301)
    assert not engine.wants_data


# the application's misuse

def test_send_without_a_request_is_local_misuse():
    engine = h.HTTPServer()
    with pytest.raises(h.UsageError):
        engine.send(h.Response(200))
    with pytest.raises(h.UsageError):
        engine.send_continue()


@pytest.mark.parametrize("response", [
    h.Response(200, (("X-Bad", "a\r\nSet-Cookie: x=1"),)),
    h.Response(200, (("Bad Name", "v"),)),
    h.Response(299),
    h.Response(100),
])
def test_bad_responses_are_refused(response):
    engine = h.HTTPServer()
    events(engine, GET)
    with pytest.raises(h.UsageError):
        engine.send(response)


def test_content_length_and_connection_are_the_engines():
    engine = h.HTTPServer()
    events(engine, GET)
    raw = engine.send(h.Response(200, (("Content-Length", "99"),), b"abc"))
    assert raw.count(b"Content-Length") == 1 and b"Content-Length: 3\r\n" in raw


def test_states_are_a_table():
    assert h.TRANSITIONS[(h.HEAD, "request")] == h.ANSWER
    assert h.TRANSITIONS[(h.ANSWER, "keep-alive")] == h.HEAD
    assert all(state in (h.HEAD, h.BODY, h.ANSWER, h.CLOSED) for state in h.TRANSITIONS.values())


# the small parsers

def test_parse_form():
    assert h.parse_form(b"a=1&b=x+y%21&a=2&&c") == {"a": "1", "b": "x y!", "c": ""}
    assert h.parse_form(b"id=%C3%A9") == {"id": "\u00e9"}
    for bad in (b"a=%zz", b"a=%4", b"a=%ff", "a=\u00e9".encode()):
        with pytest.raises(h.ProtocolError) as info:
            h.parse_form(bad)
        assert info.value.reply == 400


def test_parse_cookies():
    assert h.parse_cookies('masq=abc; other="q"; broken; masq=second') == {
        "masq": "abc", "other": "q"}
    assert h.parse_cookies(None) == {}


def test_parse_basic():
    assert h.parse_basic("Basic YWRtaW46cyNjcjN0") == (b"admin", b"s#cr3t")
    assert h.parse_basic("basic  OnB3") == (b"", b"pw")
    for bad in (None, "", "Bearer x", "Basic !!!", "Basic YWRtaW4=", "Basic \u00e9"):
        assert h.parse_basic(bad) is None


def test_host_of_and_format_date():
    assert h.host_of("127.0.0.1:8025") == "127.0.0.1"
    assert h.host_of("[::1]:8025") == "::1" and h.host_of("router.lan") == "router.lan"
    assert h.format_date(time.gmtime(0)) == "Thu, 01 Jan 1970 00:00:00 GMT"
