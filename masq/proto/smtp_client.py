"""SMTP client protocol engine (RFC 5321 + ESMTP): replies in, events out; calls in, bytes out.

Owns: reading the server's replies (multi-line, bounded), the session state machine (one
table, `TRANSITIONS`), EHLO with the HELO fallback, the extension list, the STARTTLS step,
the AUTH exchanges (PLAIN, LOGIN, CRAM-MD5) and mechanism choice, MAIL/RCPT parameters
(SIZE, BODY, SMTPUTF8, DSN), PIPELINING (RFC 2920: commands queue until they may be sent,
replies are matched in order), dot-stuffing, RSET and QUIT.
Does not: touch sockets, TLS, clocks or configuration; decide what a reply means for a
recipient (the delivery agent does), or which TLS mode or credentials to use.

Use: `receive_data(bytes)` (b"" = EOF), then `next_event()` until NEED_DATA; after every
call and event write `data_to_send()`. The engine answers the protocol by itself where the
protocol leaves no choice: EHLO after the greeting and after TLS, HELO after a 5xx to EHLO,
AUTH continuations, and a lone "." when a server says 354 with no recipient accepted.

All input is hostile. A reply line longer than MAX_LINE octets, a reply of more than
MAX_LINES lines, a line that is not `ddd[ -]text`, a multi-line reply whose code changes,
an unsolicited reply (one nothing was sent for: after QUIT, during the message text, right
behind a 354), bytes piggy-backed after the 220 to STARTTLS, or a bad CRAM-MD5 challenge raise `RemoteProtocolError` with a 451
4.5.0 reply describing the fault; the engine is then CLOSED. Calls in the wrong state raise
`LocalProtocolError`. Envelopes the server cannot take (SIZE, SMTPUTF8, control characters
in an address) are refused locally with a synthetic 5xx reply, nothing is sent for them.
"""

import base64
import hmac
import re
from collections import deque
from dataclasses import dataclass

from . import Sentinel
from .reply import LocalProtocolError, RemoteProtocolError, Reply
from .smtp_params import xtext_encode

MAX_LINE = 2048   # octets of one reply line, line end included
MAX_LINES = 100   # lines of one reply


NEED_DATA = Sentinel("NEED_DATA")

# Events, in the order a session produces them.


@dataclass(frozen=True)
class Greeting:
    """The server's banner; positive: EHLO is already on its way."""
    reply: Reply


@dataclass(frozen=True)
class Hello:
    """The final answer to EHLO (or to the HELO fallback) and the extensions it named."""
    reply: Reply
    extensions: "Extensions"


@dataclass(frozen=True)
class StartTLSReply:
    """The answer to STARTTLS; 220: run the handshake now, then call tls_done()."""
    reply: Reply


@dataclass(frozen=True)
class AuthReply:
    """The final answer to AUTH (235 or a failure)."""
    reply: Reply


@dataclass(frozen=True)
class BodyRequest:
    """354 with at least one recipient accepted: call send_body()..., then end_body()."""


@dataclass(frozen=True)
class TransactionDone:
    """A mail transaction ended: every reply it got, None where it did not get that far."""
    mail: Reply
    rcpts: tuple
    data: Reply = None
    final: Reply = None


@dataclass(frozen=True)
class ResetReply:
    """The answer to RSET."""
    reply: Reply


@dataclass(frozen=True)
class QuitReply:
    """The answer to QUIT."""
    reply: Reply


@dataclass(frozen=True)
class ConnectionClosed:
    """The server closed the connection; `state` says what was in flight."""
    state: str


# Session states.
GREETING, HELLO, READY, TLS, HANDSHAKE = "greeting", "hello", "ready", "tls", "handshake"
AUTH, TXN, BODY, DOT = "auth", "transaction", "body", "dot"
REFUSED, QUIT, CLOSED = "refused", "quit", "closed"
ANY = "*"

# (state, trigger) -> next state. Triggers are the public calls and what replies mean.
TRANSITIONS = {
    (GREETING, "greeted"): HELLO,        # 2xx banner: EHLO sent
    (GREETING, "turned away"): REFUSED,  # 4xx/5xx banner
    (HELLO, "hello"): READY,
    (HELLO, "turned away"): REFUSED,     # 4xx to EHLO, anything but 2xx to HELO
    (READY, "starttls"): TLS,
    (TLS, "tls go"): HANDSHAKE,
    (TLS, "tls refused"): READY,
    (HANDSHAKE, "tls_done"): HELLO,      # EHLO again
    (READY, "authenticate"): AUTH,
    (AUTH, "auth reply"): READY,
    (READY, "reset"): READY,
    (READY, "send_mail"): TXN,
    (TXN, "body"): BODY,
    (TXN, "done"): READY,
    (BODY, "send_body"): BODY,
    (BODY, "end_body"): DOT,
    (DOT, "done"): READY,
    (READY, "quit"): QUIT,
    (REFUSED, "quit"): QUIT,
    (QUIT, "quit reply"): CLOSED,
    (ANY, "eof"): CLOSED,
    (ANY, "broken"): CLOSED,
}

# Commands after which more may be sent without waiting (RFC 2920 §3.1).
_GROUPABLE = frozenset(("RSET", "MAIL", "RCPT"))
_LINE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?\Z", re.S)
_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: +|\Z)")
_NOTIFY = re.compile(r"[A-Z]+(?:,[A-Z]+)*\Z")


def _remote(text):
    return RemoteProtocolError(Reply(451, "4.5.0", text))


class Extensions:
    """What an EHLO reply offered: keyword -> parameter words."""

    __slots__ = ("keywords",)

    def __init__(self, lines=()):
        self.keywords = {}
        for line in lines:
            words = line.upper().split()
            if words and words[0].startswith("AUTH="):          # the old AUTH=LOGIN form
                words = ["AUTH", words[0][5:]] + words[1:]
            if words and words[0].isascii() and words[0].replace("-", "").isalnum():
                self.keywords[words[0]] = words[1:]

    def __contains__(self, keyword):
        return keyword in self.keywords

    @property
    def size(self):
        """Return the SIZE limit in octets, or None if there is none (or no SIZE)."""
        words = self.keywords.get("SIZE") or ["0"]
        limit = int(words[0]) if words[0].isdigit() and len(words[0]) < 20 else 0
        return limit or None

    @property
    def auth(self):
        """Return the set of AUTH mechanisms offered."""
        return frozenset(self.keywords.get("AUTH", ()))

    def __repr__(self):
        return "Extensions(%r)" % (sorted(self.keywords),)


def choose_mechanism(offered, encrypted, plaintext_ok=False):
    """Return the AUTH mechanism to use, or None if none is safe and offered.

    Under TLS: PLAIN, LOGIN, CRAM-MD5. On a plain link only CRAM-MD5 (the password does not
    cross the wire), unless `plaintext_ok` (the route said tls 'none'): then any."""
    order = ("PLAIN", "LOGIN", "CRAM-MD5") if encrypted else ("CRAM-MD5", "PLAIN", "LOGIN")
    for mechanism in order:
        if mechanism in offered and (encrypted or plaintext_ok or mechanism == "CRAM-MD5"):
            return mechanism
    return None


@dataclass(frozen=True)
class Envelope:
    """What one mail transaction carries; notify/orcpt are per recipient (None: unset)."""
    sender: str
    recipients: tuple
    size: int = 0
    body8bit: bool = False
    smtputf8: bool = False
    ret: str = None
    envid: str = None
    notify: tuple = ()
    orcpt: tuple = ()


def _clean_address(address):
    return not any(c < " " or c in "\x7f<>" for c in address)


def needs_smtputf8(env):
    """Return True if the envelope needs SMTPUTF8 (asked for, or a non-ASCII address)."""
    return env.smtputf8 or not all(a.isascii() for a in (env.sender,) + env.recipients)


def check_envelope(env, ext):
    """Return the synthetic refusal for an envelope the server cannot take, or None."""
    limit = ext.size
    if limit is not None and env.size > limit:
        return Reply(552, "5.3.4", "message size %d exceeds the server's limit of %d"
                     % (env.size, limit))
    if needs_smtputf8(env) and "SMTPUTF8" not in ext:
        return Reply(553, "5.6.7", "the server does not support SMTPUTF8, which this "
                     "message needs")
    if not _clean_address(env.sender):
        return Reply(553, "5.1.7", "bad sender address")
    return None


def mail_command(env, ext):
    """Return the MAIL FROM line for an envelope and the server's extensions."""
    words = ["MAIL FROM:<%s>" % env.sender]
    if "SIZE" in ext and env.size > 0:
        words.append("SIZE=%d" % env.size)
    if env.body8bit and "8BITMIME" in ext:
        words.append("BODY=8BITMIME")
    utf8 = needs_smtputf8(env)
    if utf8:
        words.append("SMTPUTF8")
    if "DSN" in ext:
        if env.ret and env.ret.upper() in ("FULL", "HDRS"):
            words.append("RET=" + env.ret.upper())
        if env.envid:
            words.append("ENVID=" + xtext_encode(env.envid[:100]))
    return (" ".join(words) + "\r\n").encode("utf-8" if utf8 else "ascii")


def rcpt_command(env, index, ext):
    """Return the RCPT TO line for recipient `index`, or None if the address is unusable."""
    address = env.recipients[index]
    if not address or not _clean_address(address):
        return None
    words = ["RCPT TO:<%s>" % address]
    notify = env.notify[index] if index < len(env.notify) else None
    orcpt = env.orcpt[index] if index < len(env.orcpt) else None
    if "DSN" in ext and notify:
        value = notify if isinstance(notify, str) else ",".join(notify)
        if _NOTIFY.match(value.upper()):
            words.append("NOTIFY=" + value.upper())
    if "DSN" in ext and orcpt:
        kind, value = orcpt if isinstance(orcpt, tuple) else ("rfc822", orcpt)
        if isinstance(orcpt, str) and ";" in orcpt:
            kind, _, value = orcpt.partition(";")
        if kind.isascii() and kind.replace("-", "").isalnum():
            words.append("ORCPT=%s;%s" % (kind, xtext_encode(value)))
    return (" ".join(words) + "\r\n").encode("utf-8")


def stuff(chunk, at_line_start):
    """Return chunk dot-stuffed, given whether it starts at the beginning of a line."""
    if at_line_start and chunk[:1] == b".":
        chunk = b"." + chunk
    return chunk.replace(b"\n.", b"\n..")


def _challenge(text):
    try:
        return base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (ValueError, UnicodeError):
        raise _remote("malformed AUTH challenge") from None


def _plain(user, password):
    return b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + password), []


def _login(user, password):
    return b"AUTH LOGIN", [lambda text: base64.b64encode(user), lambda text: base64.b64encode(password)]


def _cram_md5(user, password):
    def answer(text):
        digest = hmac.new(password, _challenge(text), "md5").hexdigest().encode("ascii")
        return base64.b64encode(user + b" " + digest)
    return b"AUTH CRAM-MD5", [answer]


MECHANISMS = {"PLAIN": _plain, "LOGIN": _login, "CRAM-MD5": _cram_md5}


class _Transaction:
    __slots__ = ("envelope", "mail", "rcpts", "data", "final", "outstanding")

    def __init__(self, envelope):
        self.envelope = envelope
        self.mail = self.data = self.final = None
        self.rcpts = [None] * len(envelope.recipients)
        self.outstanding = 0    # commands queued or sent whose replies have not come

    def skips(self, kind):
        """Return True if a queued RCPT or DATA is pointless given the replies so far."""
        if self.mail is not None and not self.mail.is_positive():
            return True
        return kind == "DATA" and None not in self.rcpts and not self.any_accepted()

    def any_accepted(self):
        return any(r is not None and r.is_positive() for r in self.rcpts)


class Client:
    """The client side of one SMTP session, from greeting to QUIT."""

    def __init__(self, helo, pipelining=True):
        self.helo = helo                # ASCII: a domain or an address literal
        self.pipelining = pipelining    # use PIPELINING when the server offers it
        self.state = GREETING
        self.extensions = Extensions()
        self.extended = False           # True once EHLO (not HELO) was accepted
        self.replies = 0                # complete replies received so far
        self._in, self._out = bytearray(), bytearray()
        self._lines, self._code = [], None
        self._events = deque()
        self._pending = deque([("GREETING", None)])   # replies awaited, in order
        self._backlog = deque()                        # (kind, index, line) not yet sent
        self._txn = self._auth = None
        self._bol, self._eof = True, False

    @property
    def waiting_for(self):
        """Return the command whose reply is awaited next ("GREETING", "MAIL"...), or None."""
        return self._pending[0][0] if self._pending else None

    def receive_data(self, data):
        """Feed bytes read from the server; b"" means it closed the connection."""
        if self.state == CLOSED or self._eof:
            return
        if data:
            self._in += data
        else:
            self._eof = True

    def next_event(self):
        """Return the next event, or NEED_DATA."""
        try:
            while not self._events:
                if self.state == CLOSED:
                    return NEED_DATA
                reply = self._read_reply()
                if reply is not None:
                    self._on_reply(reply)
                elif self._eof:
                    self._events.append(ConnectionClosed(self.state))
                    self._move("eof")
                else:
                    return NEED_DATA
        except RemoteProtocolError:
            self._move("broken")
            self._in.clear()
            self._out.clear()
            raise
        return self._events.popleft()

    def data_to_send(self):
        """Return (and forget) the bytes queued for the server."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # Calls: each checks the state table, then queues its command.

    def starttls(self):
        """Send STARTTLS (only if the server offered it)."""
        self._move("starttls")
        self._send("STARTTLS", b"STARTTLS\r\n")

    def tls_done(self):
        """Record a finished TLS handshake: forget the extensions and say EHLO again."""
        self._move("tls_done")
        self.extensions, self.extended = Extensions(), False
        self._send("EHLO", b"EHLO %s\r\n" % self.helo.encode("ascii"))

    def authenticate(self, mechanism, user, password):
        """Start an AUTH exchange with one of MECHANISMS."""
        if mechanism not in MECHANISMS:
            raise LocalProtocolError(Reply(504, "5.5.4", "unknown mechanism " + mechanism))
        self._move("authenticate")
        line, self._auth = MECHANISMS[mechanism](user.encode("utf-8"),
                                                 password.encode("utf-8"))
        self._send("AUTH", line + b"\r\n")

    def send_mail(self, envelope):
        """Start a transaction: MAIL, the RCPTs and DATA (pipelined if offered)."""
        self._move("send_mail")
        self._txn, self._bol = _Transaction(envelope), True
        refusal = check_envelope(envelope, self.extensions)
        if refusal is not None:
            self._txn.mail = refusal
            self._check_done()
            return
        self._send("MAIL", mail_command(envelope, self.extensions))
        for i in range(len(envelope.recipients)):
            line = rcpt_command(envelope, i, self.extensions)
            if line is None:
                self._txn.rcpts[i] = Reply(553, "5.1.3", "bad recipient address")
            else:
                self._send("RCPT", line, i)
        self._send("DATA", b"DATA\r\n")

    def send_body(self, chunk):
        """Queue message text (wire form, CRLF lines), dot-stuffed."""
        self._move("send_body")
        if chunk:
            self._out += stuff(chunk, self._bol)
            self._bol = chunk.endswith(b"\n")

    def end_body(self):
        """End the message text with CRLF "." CRLF."""
        self._move("end_body")
        self._out += b".\r\n" if self._bol else b"\r\n.\r\n"
        self._send("DOT", b"")

    def reset(self):
        """Send RSET (before the next transaction on this connection)."""
        self._move("reset")
        self._send("RSET", b"RSET\r\n")

    def quit(self):
        """Send QUIT."""
        self._move("quit")
        self._send("QUIT", b"QUIT\r\n")

    # Machinery

    def _move(self, trigger):
        state = TRANSITIONS.get((self.state, trigger)) or TRANSITIONS.get((ANY, trigger))
        if state is None:
            raise LocalProtocolError(Reply(503, "5.5.1", "%s in state %s" % (trigger,
                                                                          self.state)))
        self.state = state

    def _send(self, kind, line, index=None):
        if self._txn is not None and kind in ("MAIL", "RCPT", "DATA", "DOT"):
            self._txn.outstanding += 1
        self._backlog.append((kind, index, line))
        self._drain()

    def _may_send(self):
        return not self._pending or (self.pipelining and "PIPELINING" in self.extensions
                                     and all(k in _GROUPABLE for k, _ in self._pending))

    def _drain(self):
        while self._backlog and self._may_send():
            kind, index, line = self._backlog.popleft()
            if kind in ("RCPT", "DATA") and self._txn.skips(kind):
                self._txn.outstanding -= 1
                continue
            self._out += line
            self._pending.append((kind, index))
        self._check_done()

    def _check_done(self):
        txn = self._txn
        if txn is not None and txn.outstanding == 0 and self.state in (TXN, DOT):
            self._txn = None
            self._move("done")
            self._events.append(TransactionDone(txn.mail, tuple(txn.rcpts), txn.data,
                                                txn.final))

    def _read_reply(self):
        while True:
            end = self._in.find(b"\n", 0, MAX_LINE)
            if end < 0:
                if len(self._in) >= MAX_LINE:
                    raise _remote("reply line longer than %d octets" % MAX_LINE)
                return None
            line = bytes(self._in[:end])
            del self._in[:end + 1]
            match = _LINE.match(line[:-1] if line.endswith(b"\r") else line)
            if match is None:
                raise _remote("malformed reply line %r" % line[:60])
            code = int(match.group(1))
            if self._code is not None and code != self._code:
                raise _remote("reply code changed within a reply (%d, %d)" % (self._code, code))
            self._code = code
            self._lines.append((match.group(3) or b"").decode("utf-8", "replace"))
            if len(self._lines) > MAX_LINES:
                raise _remote("reply longer than %d lines" % MAX_LINES)
            if match.group(2) != b"-":
                return self._build_reply()

    def _build_reply(self):
        code, lines = self._code, self._lines
        self._code, self._lines = None, []
        match = _ENHANCED.match(lines[0])
        if match is None or match.group(1) != str(code)[0]:
            return Reply(code, "", lines)
        enhanced = "%s.%s.%s" % match.groups()
        text = []
        for line in lines:
            again = _ENHANCED.match(line)
            same = again is not None and "%s.%s.%s" % again.groups() == enhanced
            text.append(line[again.end():] if same else line)
        return Reply(code, enhanced, text)

    def _on_reply(self, reply):
        if not self._pending:
            raise _remote("unsolicited reply %s" % reply)
        kind, index = self._pending.popleft()
        self.replies += 1
        _HANDLERS[kind](self, reply, index)
        self._drain()

    # Reply handlers, one per command (the _HANDLERS table below).

    def _on_greeting(self, reply, index):
        self._move("greeted" if reply.code == 220 else "turned away")
        self._events.append(Greeting(reply))
        if self.state == HELLO:
            self._send("EHLO", b"EHLO %s\r\n" % self.helo.encode("ascii"))

    def _on_ehlo(self, reply, index):
        if reply.code // 100 == 5:
            self._send("HELO", b"HELO %s\r\n" % self.helo.encode("ascii"))
            return
        if reply.code // 100 == 2:
            self.extensions, self.extended = Extensions(reply.lines[1:]), True
        self._on_helo(reply, index)

    def _on_helo(self, reply, index):
        self._move("hello" if reply.code // 100 == 2 else "turned away")
        self._events.append(Hello(reply, self.extensions))

    def _on_starttls(self, reply, index):
        if reply.code == 220 and self._in:
            raise _remote("data after the 220 to STARTTLS (a command injection attempt)")
        self._move("tls go" if reply.code == 220 else "tls refused")
        self._events.append(StartTLSReply(reply))

    def _on_auth(self, reply, index):
        if reply.code == 334:
            steps = self._auth
            answer = steps.pop(0)(reply.lines[0]) if steps else b"*"
            self._send("AUTH", answer + b"\r\n")
            return
        self._auth = None
        self._move("auth reply")
        self._events.append(AuthReply(reply))

    def _on_mail(self, reply, index):
        self._txn.mail = reply
        self._txn.outstanding -= 1

    def _on_rcpt(self, reply, index):
        self._txn.rcpts[index] = reply
        self._txn.outstanding -= 1

    def _on_data(self, reply, index):
        txn = self._txn
        txn.data = reply
        txn.outstanding -= 1
        if reply.code != 354:
            return
        if txn.mail.is_positive() and txn.any_accepted():
            if self._in:
                raise _remote("reply before the message text was sent (transfer aborted)")
            self._move("body")
            self._events.append(BodyRequest())
        else:
            self._send("DOT", b".\r\n")    # RFC 2920 §3.1: end the empty message

    def _on_dot(self, reply, index):
        self._txn.final = reply
        self._txn.outstanding -= 1

    def _on_rset(self, reply, index):
        self._events.append(ResetReply(reply))

    def _on_quit(self, reply, index):
        if self._in:
            raise _remote("data after the reply to QUIT")
        self._move("quit reply")
        self._events.append(QuitReply(reply))


_HANDLERS = {
    "GREETING": Client._on_greeting, "EHLO": Client._on_ehlo, "HELO": Client._on_helo,
    "STARTTLS": Client._on_starttls, "AUTH": Client._on_auth, "MAIL": Client._on_mail,
    "RCPT": Client._on_rcpt, "DATA": Client._on_data, "DOT": Client._on_dot,
    "RSET": Client._on_rset, "QUIT": Client._on_quit,
}
