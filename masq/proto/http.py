"""Minimal HTTP/1.1 server engine (RFC 9110/9112 subset): bytes in, requests out, in the h11 style.

Owns: request framing (request line, header fields, a Content-Length body), keep-alive and
pipelining (one request at a time: the engine is PAUSED until the application answers),
`Expect: 100-continue`, response serialisation, and small pure parsers for what a status page
reads from a request (form bodies, cookies, Basic credentials).
Does not: route, authenticate, read clocks or sockets; chunked request bodies are refused
(411: send Content-Length), as are obs-fold, absolute URIs other than http(s) and HTTP/2.

Use: `receive_data(bytes)` (b"" = EOF), then `next_event()` until NEED_DATA or PAUSED; answer
each Request with `send(Response)` and write the bytes; close once `closing` is True and the
bytes are out. All input is hostile and bounded (`max_line` for the request line and each
header line, `max_headers` for the header section, `max_body`): a fault raises
`errors.ProtocolError` whose `reply` is the HTTP status to answer (400, 413, 414, 411, 417,
431, 501, 505); `send(error_response(error))` answers it and closes. Misuse by the
application raises `errors.UsageError`.
"""

import base64
import re

from . import NEED_DATA, Sentinel, frozen
from .errors import ConnectionClosed, ProtocolError, UsageError

REASONS = {100: "Continue", 200: "OK", 204: "No Content", 303: "See Other",
           304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
           417: "Expectation Failed", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])\Z")
_ABSOLUTE = re.compile(rb"https?://[^/?#]*", re.IGNORECASE)
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(r"[0-9]{1,18}\Z")
MAX_FIELDS = 100
MAX_BLANK_LINES = 8          # empty lines tolerated before a request line (RFC 9112 2.2)


PAUSED = Sentinel("PAUSED")         # answer the last Request with send()


@frozen
class Request:
    """A complete request. Header names are lower case; values are latin-1 str."""

    method: str
    target: str
    version: str
    headers: tuple
    body: bytes

    def header(self, name, default=None):
        """Return the first value of header `name` (any case), or default."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), default)

    @property
    def path(self):
        """Return the target without its query string."""
        return self.target.partition("?")[0]


@frozen
class ExpectContinue:
    """The client waits for `100 Continue` before sending the body: write send_continue()."""


@frozen
class Response:
    """What the application answers: status, extra headers ((name, value) pairs), body."""

    status: int
    headers: tuple = ()
    body: bytes = b""


def error_response(error):
    """Return the response to a ProtocolError (plain text; the connection closes)."""
    return Response(error.reply, (("Content-Type", "text/plain; charset=utf-8"),),
                    ("%d %s: %s\n" % (error.reply, REASONS.get(error.reply, ""),
                                      error.what)).encode())


# States, and the table of what moves the engine between them.
HEAD, BODY, ANSWER, CLOSED = "HEAD", "BODY", "ANSWER", "CLOSED"
TRANSITIONS = {
    (HEAD, "head+body"): BODY,      # a head whose body has yet to arrive
    (HEAD, "request"): ANSWER,
    (BODY, "request"): ANSWER,
    (HEAD, "eof"): CLOSED,
    (BODY, "eof"): CLOSED,
    (ANSWER, "keep-alive"): HEAD,
    (ANSWER, "close"): CLOSED,
    (HEAD, "fault"): ANSWER,        # the error response is the answer, then close
    (BODY, "fault"): ANSWER,
}


class HTTPServer:
    """One HTTP/1.1 server connection as a sans-IO engine."""

    def __init__(self, max_line=8192, max_headers=32768, max_body=65536):
        self.max_line, self.max_headers, self.max_body = max_line, max_headers, max_body
        self.state = HEAD
        self.closing = False          # the connection ends after the current answer
        self._in = bytearray()
        self._eof = False
        self._head = None             # (method, target, version, headers, body length)
        self._continue = False
        self._head_only = False       # answering HEAD: the body is left out

    def _move(self, how):
        try:
            self.state = TRANSITIONS[(self.state, how)]
        except KeyError:
            raise UsageError("%s in state %s" % (how, self.state)) from None

    @property
    def wants_data(self):
        """Return True while more input may be read (bounded while an answer is due)."""
        limit = self.max_line + self.max_headers + self.max_body
        return self.state in (HEAD, BODY) or (self.state == ANSWER and len(self._in) < limit)

    def receive_data(self, data):
        """Add bytes from the client (b"" means it closed its side)."""
        if data:
            self._in += data
        else:
            self._eof = True

    def next_event(self):
        """Return the next Request / ExpectContinue / ConnectionClosed, NEED_DATA or PAUSED."""
        if self.state == ANSWER:
            return PAUSED
        if self.state == CLOSED:
            return ConnectionClosed()
        try:
            return self._next()
        except ProtocolError:
            self.closing = True
            self._move("fault")
            raise

    def _next(self):
        if self.state == HEAD:
            head = self._read_head()
            if head is None:
                return self._need_or_eof()
            self._head = head
            self._move("head+body")
            if self._continue and len(self._in) < head[4]:
                self._continue = False
                return ExpectContinue()
        length = self._head[4]
        if len(self._in) < length:
            return self._need_or_eof(mid_request=True)
        method, target, version, headers, _ = self._head
        body = bytes(self._in[:length])
        del self._in[:length]
        self._move("request")
        self._head, self._head_only = None, method == "HEAD"
        return Request(method, target, version, headers, body)

    def _need_or_eof(self, mid_request=False):
        if not self._eof:
            return NEED_DATA
        if mid_request or self._in.strip():
            raise ProtocolError("connection closed in the middle of a request", 400)
        self._move("eof")
        return ConnectionClosed()

    # the request head

    def _read_head(self):
        """Return the parsed head once all of it is buffered, else None."""
        self._skip_blank_lines()
        end = self._in.find(b"\n")
        if end < 0 and len(self._in) > self.max_line:
            raise ProtocolError("request line too long", 414)
        if 0 <= end and end + 1 > self.max_line:
            raise ProtocolError("request line too long", 414)
        head_end = _find_head_end(self._in)
        if head_end < 0:
            if len(self._in) > self.max_line + self.max_headers:
                raise ProtocolError("header section too large", 431)
            if end >= 0:
                _request_line(bytes(self._in[:end]))     # fail early on garbage
            return None
        lines = bytes(self._in[:head_end]).split(b"\n")
        del self._in[:head_end]
        method, target, version = _request_line(lines[0])
        headers = self._fields(lines[1:])
        length, keep = _framing(version, headers)
        self.closing = not keep
        if length > self.max_body:
            raise ProtocolError("body larger than %d bytes" % self.max_body, 413)
        self._check_expect(version, headers, length)
        return method, target, version, headers, length

    def _skip_blank_lines(self):
        for _ in range(MAX_BLANK_LINES):
            if self._in.startswith(b"\r\n"):
                del self._in[:2]
            elif self._in.startswith(b"\n"):
                del self._in[:1]
            else:
                return

    def _fields(self, lines):
        headers, total = [], 0
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                continue
            total += len(raw) + 1
            if len(raw) + 1 > self.max_line or total > self.max_headers:
                raise ProtocolError("header field too large", 431)
            if len(headers) >= MAX_FIELDS:
                raise ProtocolError("too many header fields", 431)
            headers.append(_field(line))
        return tuple(headers)

    def _check_expect(self, version, headers, length):
        expect = [v.lower() for k, v in headers if k == "expect"]
        self._continue = False
        if not expect:
            return
        if expect != ["100-continue"]:
            raise ProtocolError("only 100-continue is understood", 417)
        self._continue = version == "1.1" and length > 0

    # answering

    def send_continue(self):
        """Return the interim `100 Continue` response as bytes."""
        if self.state != BODY:
            raise UsageError("100 Continue outside of a request body")
        return b"HTTP/1.1 100 Continue\r\n\r\n"

    def send(self, response):
        """Return the bytes of a response to the current request (or to a fault)."""
        if self.state != ANSWER:
            raise UsageError("send() with no request to answer (state %s)" % self.state)
        if response.status not in REASONS or response.status < 200:
            raise UsageError("unsupported status %r" % (response.status,))
        lines = ["HTTP/1.1 %d %s" % (response.status, REASONS[response.status])]
        for name, value in response.headers:
            if not _TOKEN.match(name.encode("latin-1")) or _BAD_VALUE.search(
                    value.encode("latin-1")):
                raise UsageError("bad response header %r" % name)
            if name.lower() == "connection" and "close" in value.lower():
                self.closing = True
            if name.lower() not in ("content-length", "connection"):
                lines.append("%s: %s" % (name, value))
        lines.append("Content-Length: %d" % len(response.body))
        if self.closing:
            lines.append("Connection: close")
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        head_only, self._head_only = self._head_only, False
        self._move("close" if self.closing else "keep-alive")
        return out if head_only else out + response.body


def _find_head_end(buf):
    """Return the offset just past the blank line that ends the head, or -1."""
    match = re.search(rb"\r?\n\r?\n", buf)
    return -1 if match is None else match.end()


def _request_line(line):
    if line.endswith(b"\r"):
        line = line[:-1]
    match = _REQUEST_LINE.match(line)
    if match is None:
        if re.match(rb"[A-Za-z]+ \S+ HTTP/[0-9]+\.[0-9]+\Z", line):
            raise ProtocolError("only HTTP/1.0 and HTTP/1.1 are served", 505)
        raise ProtocolError("malformed request line", 400)
    method, target, major, minor = match.groups()
    if (major, minor) not in ((b"1", b"0"), (b"1", b"1")):
        raise ProtocolError("only HTTP/1.0 and HTTP/1.1 are served", 505)
    absolute = _ABSOLUTE.match(target)
    if absolute:
        target = target[absolute.end():] or b"/"
    if not (target.startswith(b"/") or (target == b"*" and method == b"OPTIONS")):
        raise ProtocolError("request target must be a path", 400)
    return method.decode("ascii"), target.decode("ascii"), "%s.%s" % (
        major.decode(), minor.decode())


def _field(line):
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.match(name):
        raise ProtocolError("malformed header field", 400)
    value = value.strip(b" \t")
    if _BAD_VALUE.search(value) or b"\r" in value:
        raise ProtocolError("control character in a header field", 400)
    return name.decode("ascii").lower(), value.decode("latin-1")


def _framing(version, headers):
    """Return (body length, keep-alive wanted) from the header fields."""
    names = [k for k, _ in headers]
    if version == "1.1" and names.count("host") != 1:
        raise ProtocolError("HTTP/1.1 needs exactly one Host header", 400)
    if names.count("host") > 1:
        raise ProtocolError("more than one Host header", 400)
    if "transfer-encoding" in names:
        raise ProtocolError("send the body with Content-Length, not chunked", 411)
    lengths = {item.strip() for k, v in headers if k == "content-length"
               for item in v.split(",")}
    if len(lengths) > 1 or (lengths and not _DIGITS.match(next(iter(lengths)))):
        raise ProtocolError("bad Content-Length", 400)
    length = int(lengths.pop()) if lengths else 0
    tokens = {t.strip().lower() for k, v in headers if k == "connection" for t in v.split(",")}
    keep = "keep-alive" in tokens if version == "1.0" else "close" not in tokens
    return length, keep


# small helpers for the application

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_date(t):
    """Return a UTC time.struct_time as an HTTP date (IMF-fixdate, locale-free)."""
    return "%s, %02d %s %d %02d:%02d:%02d GMT" % (_DAYS[t.tm_wday], t.tm_mday,
                                                  _MONTHS[t.tm_mon - 1], t.tm_year,
                                                  t.tm_hour, t.tm_min, t.tm_sec)


def host_of(value):
    """Return the host of a Host header value: no port, no IPv6 brackets."""
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.partition(":")[0]


def unquote(text):
    """Return a percent-decoded form value ('+' is a space) as str (UTF-8)."""
    raw = text.replace("+", " ").encode("latin-1")
    parts = raw.split(b"%")
    out = bytearray(parts[0])
    for part in parts[1:]:
        if len(part) >= 2 and re.match(rb"[0-9A-Fa-f]{2}", part):
            out.append(int(part[:2], 16))
            out += part[2:]
        else:
            raise ProtocolError("bad percent escape in the form", 400)
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("form data is not UTF-8", 400) from None


def parse_form(body):
    """Return an application/x-www-form-urlencoded body as {name: value} (first wins)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("form data must be percent-encoded ASCII", 400) from None
    form = {}
    for pair in text.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            form.setdefault(unquote(name), unquote(value))
    return form


def parse_cookies(value):
    """Return a Cookie header as {name: value} (first wins, malformed pairs ignored)."""
    cookies = {}
    for pair in (value or "").split(";"):
        name, eq, val = pair.strip().partition("=")
        if eq and name:
            cookies.setdefault(name, val.strip().strip('"'))
    return cookies


def parse_basic(value):
    """Return (user, password) bytes from an `Authorization: Basic` value, or None."""
    scheme, _, data = (value or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(data.strip().encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None
