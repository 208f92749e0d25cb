"""SMTP client protocol engine (RFC 5321 + ESMTP): replies in, events out; calls in, bytes out.

Owns: the session state machine (one table, `TRANSITIONS`), EHLO with the HELO fallback,
the STARTTLS step, the AUTH exchanges, the mail transaction, PIPELINING (RFC 2920: commands
queue until they may be sent, replies are matched in order), CHUNKING (RFC 3030: the text
in BDAT chunks, when the server offers CHUNKING and PIPELINING), RSET and QUIT.
Does not: touch sockets, TLS, clocks or configuration; decide what a reply means for a
recipient (the delivery agent does), or which TLS mode or credentials to use. The wire
syntax (reply parsing, extensions, MAIL/RCPT parameters, SASL, dot-stuffing) lives in
`smtp_client_wire`; its public names are re-exported here.

Use: `receive_data(bytes)` (b"" = EOF), then `next_event()` until NEED_DATA; after every
call and event write `data_to_send()`. The engine answers the protocol by itself where the
protocol leaves no choice: EHLO after the greeting and after TLS, HELO after a 5xx to EHLO,
AUTH continuations, and a lone "." when a server says 354 with no recipient accepted.

All input is hostile. A malformed or over-long reply (see `smtp_client_wire`), an
unsolicited reply (one nothing was sent for: after QUIT, during the message text, right
behind a 354), or bytes piggy-backed after the 220 to STARTTLS raise `ProtocolError`
with a 451 4.5.0 reply describing the fault; the engine is then CLOSED. Calls in the wrong
state raise `UsageError`. Envelopes the server cannot take (SIZE, SMTPUTF8, control
characters in an address) are refused locally with a synthetic 5xx reply, nothing is sent
for them; so is a BINARYMIME text when the server does not take it by BDAT (the session
converts such a text first: binary text never goes after DATA).
"""

from collections import deque

from . import client_engine, frozen
from .client_engine import CLOSED, ClientEngine
from .errors import ConnectionClosed, UsageError
from .reply import Reply
from .smtp_client_wire import (MAX_LINE, MAX_LINES, MECHANISMS, NOT_BINARY, Extensions,
                               OutgoingEnvelope, ReplyReader, check_envelope, choose_mechanism, mail_command,
                               needs_smtputf8, rcpt_command, remote_error, stuff)

__all__ = [  # the engine, and the wire syntax it re-exports
    "NEED_DATA", "Client", "TRANSITIONS", "Greeting", "Hello", "StartTLSReply", "AuthReply",
    "BodyRequest", "TransactionDone", "ResetReply", "QuitReply", "ConnectionClosed",
    "GREETING", "HELLO", "READY", "TLS", "HANDSHAKE", "AUTH", "TXN", "BODY", "DOT",
    "REFUSED", "QUIT", "CLOSED", "ANY",
    "MAX_LINE", "MAX_LINES", "MECHANISMS", "OutgoingEnvelope", "Extensions", "check_envelope",
    "choose_mechanism", "mail_command", "needs_smtputf8", "rcpt_command", "stuff"]

NEED_DATA = client_engine.NEED_DATA   # next_event(): feed more bytes (every engine's one)

# Events, in the order a session produces them.


@frozen
class Greeting:
    """The server's banner; positive: EHLO is already on its way."""
    reply: Reply


@frozen
class Hello:
    """The final answer to EHLO (or to the HELO fallback) and the extensions it named."""
    reply: Reply
    extensions: "Extensions"


@frozen
class StartTLSReply:
    """The answer to STARTTLS; 220: run the handshake now, then call tls_done()."""
    reply: Reply


@frozen
class AuthReply:
    """The final answer to AUTH (235 or a failure)."""
    reply: Reply


@frozen
class BodyRequest:
    """The text may go (354 to DATA, or, for BDAT, every RCPT answered and one accepted):
    call send_body()..., then end_body(). `chunked`: it goes in BDAT chunks."""
    chunked: bool = False


@frozen
class TransactionDone:
    """A mail transaction ended: every reply it got, None where it did not get that far."""
    mail: Reply
    rcpts: tuple
    data: Reply = None
    final: Reply = None


@frozen
class ResetReply:
    """The answer to RSET."""
    reply: Reply


@frozen
class QuitReply:
    """The answer to QUIT."""
    reply: Reply


# Session states.
GREETING, HELLO, READY, TLS, HANDSHAKE = "greeting", "hello", "ready", "tls", "handshake"
AUTH, TXN, BODY, DOT = "auth", "transaction", "body", "dot"
REFUSED, QUIT = "refused", "quit"
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

# Commands after which more may be sent without waiting (RFC 2920 §3.1, RFC 3030 §4.2).
_GROUPABLE = frozenset(("RSET", "MAIL", "RCPT", "BDAT"))
_COUNTED = frozenset(("MAIL", "RCPT", "DATA", "BODY", "DOT", "BDAT"))   # a transaction's


class _Transaction:
    __slots__ = ("envelope", "mail", "rcpts", "data", "final", "outstanding", "chunked")

    def __init__(self, envelope, chunked):
        self.envelope = envelope
        self.chunked = chunked          # the text goes in BDAT chunks
        self.mail = self.data = self.final = None
        self.rcpts = [None] * len(envelope.recipients)
        self.outstanding = 0    # commands queued or sent whose replies have not come

    def skips(self, kind):
        """Return True if a queued RCPT or DATA is pointless given the replies so far."""
        if self.mail is not None and not self.mail.is_positive():
            return True
        return kind in ("DATA", "BODY") and None not in self.rcpts and not self.any_accepted()

    def any_accepted(self):
        return any(r is not None and r.is_positive() for r in self.rcpts)


class Client(ClientEngine):
    """The client side of one SMTP session, from greeting to QUIT."""

    def __init__(self, helo, pipelining=True, chunking=True):
        super().__init__(GREETING)
        self.helo = helo                # ASCII: a domain or an address literal
        self.pipelining = pipelining    # use PIPELINING when the server offers it
        self.chunking = chunking        # use CHUNKING (BDAT) when the server offers it
        self.extensions = Extensions()
        self.extended = False           # True once EHLO (not HELO) was accepted
        self.replies = 0                # complete replies received so far
        self._reader = ReplyReader()
        self._reader.buffer = self._buffer      # the reader parses what receive_data keeps
        self._pending = deque([("GREETING", None)])   # replies awaited, in order
        self._ungroupable = 1           # of those, the ones after which nothing may follow
        self._backlog = deque()                        # (kind, index, line) not yet sent
        self._txn = self._auth = None
        self._bol, self._tail = True, b""

    @property
    def waiting_for(self):
        """Return the command whose reply is awaited next ("GREETING", "MAIL"...), or None."""
        return self._pending[0][0] if self._pending else None

    def _step(self):
        reply = self._reader.read()
        if reply is None:
            return False
        self._on_reply(reply)
        return True

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
            raise UsageError("unknown mechanism " + mechanism)
        self._move("authenticate")
        line, self._auth = MECHANISMS[mechanism](user.encode("utf-8"),
                                                 password.encode("utf-8"))
        self._send("AUTH", line + b"\r\n")

    def takes_binary(self):
        """Return True if a BINARYMIME text may go as it is (BINARYMIME and BDAT in use)."""
        ext = self.extensions
        return (self.chunking and self.pipelining and "PIPELINING" in ext
                and "CHUNKING" in ext and "BINARYMIME" in ext)

    def send_mail(self, envelope):
        """Start a transaction: MAIL, the RCPTs and DATA (pipelined if offered)."""
        self._move("send_mail")
        chunked = (self.chunking and self.pipelining and "CHUNKING" in self.extensions
                   and "PIPELINING" in self.extensions)
        self._txn, self._bol, self._tail = _Transaction(envelope, chunked), True, b""
        refusal = check_envelope(envelope, self.extensions)
        if refusal is None and envelope.binary and not chunked:
            refusal = NOT_BINARY        # binary text never goes after DATA
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
        if chunked:
            self._send("BODY", b"")     # BodyRequest once every RCPT is answered
        else:
            self._send("DATA", b"DATA\r\n")

    def send_body(self, chunk):
        """Queue message text (wire form, CRLF lines): dot-stuffed after any LF, or as one
        BDAT chunk."""
        self._move("send_body")
        if chunk:
            if self._txn.chunked:
                self._send("BDAT", b"BDAT %d\r\n%s" % (len(chunk), chunk))
            else:
                self._out += stuff(chunk, self._bol)
            self._bol = chunk.endswith(b"\n")
            self._tail = (self._tail + chunk[-2:])[-2:]

    def end_body(self):
        """End the message text with CRLF "." CRLF (or BDAT ... LAST), adding a CRLF unless
        the text ends in one (a bare LF is not a line end to a strict server)."""
        self._move("end_body")
        end = b"" if self._tail in (b"", b"\r\n") or self._txn.envelope.binary else b"\r\n"
        if self._txn.chunked:
            return self._send("BDAT", b"BDAT %d LAST\r\n%s" % (len(end), end))
        self._out += end + b".\r\n"
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
            raise UsageError("%s in state %s" % (trigger, self.state))
        self.state = state

    def _send(self, kind, line, index=None):
        if self._txn is not None and kind in _COUNTED:
            self._txn.outstanding += 1
        self._backlog.append((kind, index, line))
        self._drain()

    def _may_send(self):
        return not self._pending or (self.pipelining and "PIPELINING" in self.extensions
                                     and not self._ungroupable)

    def _drain(self):
        while self._backlog and self._may_send():
            kind, index, line = self._backlog[0]
            if kind == "BODY" and self._pending:
                break                   # BDAT waits for every RCPT reply
            self._backlog.popleft()
            if kind in ("RCPT", "DATA", "BODY") and self._txn.skips(kind):
                self._txn.outstanding -= 1
                continue
            if kind == "BODY":
                self._txn.outstanding -= 1
                self._move("body")
                self._events.append(BodyRequest(chunked=True))
                continue
            self._out += line
            self._pending.append((kind, index))
            self._ungroupable += kind not in _GROUPABLE
        self._check_done()

    def _check_done(self):
        txn = self._txn
        if txn is not None and txn.outstanding == 0 and self.state in (TXN, DOT):
            self._txn = None
            self._move("done")
            self._events.append(TransactionDone(txn.mail, tuple(txn.rcpts), txn.data,
                                                txn.final))

    def _on_reply(self, reply):
        if not self._pending:
            raise remote_error("unsolicited reply %s" % reply)
        kind, index = self._pending.popleft()
        self._ungroupable -= kind not in _GROUPABLE
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
        if reply.code == 220 and self._reader.buffer:
            raise remote_error("data after the 220 to STARTTLS (a command injection attempt)")
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
            if self._reader.buffer:
                raise remote_error("reply before the message text was sent (transfer aborted)")
            self._move("body")
            self._events.append(BodyRequest())
        else:
            self._send("DOT", b".\r\n")    # RFC 2920 §3.1: end the empty message

    def _on_dot(self, reply, index):
        self._txn.final = reply
        self._txn.outstanding -= 1

    def _on_bdat(self, reply, index):
        txn = self._txn
        txn.outstanding -= 1
        if txn.final is None or txn.final.is_positive():
            txn.final = reply           # the last reply, or the first refusal
        if not reply.is_positive() and self.state == BODY:
            self._move("end_body")      # RFC 3030 §3: no more chunks after a refusal

    def _on_rset(self, reply, index):
        self._events.append(ResetReply(reply))

    def _on_quit(self, reply, index):
        if self._reader.buffer:
            raise remote_error("data after the reply to QUIT")
        self._move("quit reply")
        self._events.append(QuitReply(reply))


_HANDLERS = {
    "GREETING": Client._on_greeting, "EHLO": Client._on_ehlo, "HELO": Client._on_helo,
    "STARTTLS": Client._on_starttls, "AUTH": Client._on_auth, "MAIL": Client._on_mail,
    "RCPT": Client._on_rcpt, "DATA": Client._on_data, "DOT": Client._on_dot,
    "RSET": Client._on_rset, "QUIT": Client._on_quit, "BDAT": Client._on_bdat,
}
