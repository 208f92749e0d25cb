"""SMTP server protocol engine (RFC 5321 + ESMTP): bytes in, events out, in the h11 style.

Owns: the engine's public API, one handler per command, applying the application's answers,
the EHLO keyword list and the error counter. The state changes in one place, `_move`, as the
tables of `smtp_server_states.py` say; how input is read (command line, DATA text, BDAT
chunk, SASL line, nothing) is derived from the state, as h11 derives its reader, never kept
beside it.
Does not: touch sockets, TLS, files, clocks or configuration; decide policy (relay, users,
credentials, recipient caps): those are the application's answers to decision events.

Use: `receive_data(bytes)` (b"" = EOF), then `next_event()` until NEED_DATA or PAUSED.
Decision events (`DECISIONS`: Hello, MailFrom, RcptTo, DataStart, EndOfData, StartTLS,
AuthRequest) pause the engine until `respond(reply)`: None accepts with the default reply,
a 2xx/3xx Reply accepts with that text, 4xx/5xx refuses. Write `data_to_send()` after each
turn; read from the peer only while `wants_data`. The events (defined in
`smtp_server_events.py`) are re-exported here.

All input is hostile: command lines are capped (`max_line`, 12288 for AUTH) and discarded
to their LF when longer; message text is streamed, never held whole; the engine keeps only
counters for a transaction (never the recipient list). Peer faults become replies (and
count towards `max_errors`, 421 4.7.0 when reached); misuse by the application raises
`UsageError`. Framing decisions are documented in `smtp_server_framing.py`.
"""

from collections import deque

from . import smtp_auth, smtp_params
from . import smtp_server_replies as R
from .errors import ConnectionClosed, ProtocolError, UsageError
from .reply import Reply
from .smtp_server_events import (
    DECISIONS, NEED_DATA, PAUSED, AuthRequest, DataAborted, DataChunk,
    DataStart, EndOfData, Hello, MailFrom, Quit, RcptTo, Reset, StartTLS)
from .smtp_server_framing import DotDecoder, LineSplitter, Meter
from .smtp_server_states import (
    ANY, CHUNK, CLOSED, COLUMN, GREET, MAIL, MODES, RCPT, SAME, STEPS, TLS, TRANSITIONS)

__all__ = ["SMTPServer", "TRANSITIONS", "DECISIONS", "NEED_DATA", "PAUSED", "AuthRequest",
           "DataAborted", "DataChunk", "DataStart", "EndOfData", "Hello",
           "MailFrom", "Quit", "RcptTo", "Reset", "StartTLS"]

_JUNK_VERBS = ("CONNECT", "GET", "POST")  # HTTP through a proxy or a browser: disconnect
_FAULT_REPLY = {"too big": R.TOO_BIG, "line too long": R.LINE_TOO_LONG}
_ACCEPT_CODES = {Hello: (), MailFrom: (250,), RcptTo: (250, 251), DataStart: (354,),
                 EndOfData: (250,), StartTLS: (220,), AuthRequest: (235,)}


class SMTPServer:
    """One SMTP server session as a sans-IO engine.

    max_size: message octets accepted (SIZE, DATA and BDAT; 552 5.3.4 beyond).
    max_line: command line octets with CRLF (RFC 5321: 512); AUTH lines get 12288.
    max_data_line: a text line reaching this many octets before its LF fails the
        transaction after the final dot (552 5.3.4); the line is never split or buffered.
        Default 64 KiB, far above RFC 5322's 1000 because real mail breaks that; 0 = none.
    tls_available / tls_active: offer STARTTLS / the session is already encrypted.
    auth_mechanisms: subset of ("PLAIN", "LOGIN"); empty = no AUTH.
    auth_needs_tls: AUTH only offered and accepted under TLS (else 538 5.7.11).
    chunking: offer BDAT (RFC 3030); binarymime: with it, BINARYMIME (RFC 3030: such text
        comes by BDAT only, DATA gets 503 5.5.1, and no line length limit applies).
    max_errors: 5xx replies before 421 4.7.0.
    max_pending: unprocessed input held while paused before `wants_data` turns False.
    """

    def __init__(self, hostname, *, max_size, max_line=512, max_data_line=65536,
                 tls_available=False, tls_active=False, auth_mechanisms=(),
                 auth_needs_tls=True, chunking=True, binarymime=True, max_errors=20,
                 max_pending=65536):
        if not hostname or int(max_size) <= 0:
            raise ValueError("hostname and a positive max_size are required")
        unknown = set(auth_mechanisms) - set(smtp_auth.MECHANISMS)
        if unknown:
            raise ValueError("unsupported SASL mechanisms: %s" % sorted(unknown))
        self.hostname, self.max_size = hostname, int(max_size)
        self.max_line, self.max_data_line = max_line, max_data_line
        self.tls_available, self.tls_active = tls_available, tls_active
        self.auth_mechanisms, self.auth_needs_tls = tuple(auth_mechanisms), auth_needs_tls
        self.chunking, self.max_errors, self.max_pending = chunking, max_errors, max_pending
        self.binarymime = chunking and binarymime
        self.state, self.errors, self.authenticated = GREET, 0, False
        self.helo_name, self.extended, self.recipients = None, False, 0
        self.close_reason = None
        self._in, self._out, self._eof = bytearray(), bytearray(), False
        self._events, self._pending = deque(), None
        self._lines = LineSplitter()
        self._smtputf8 = self._binary = self._data_open = False
        self._dot = self._meter = self._sasl = None
        self._chunk_left, self._chunk_size, self._chunk_last, self._chunk_reply = 0, 0, False, None

    @property
    def wants_data(self):
        """Return True if the application should read more from the peer now."""
        return self.state not in (CLOSED, TLS) and len(self._in) < self.max_pending

    @property
    def buffered(self):
        """Return how many received octets the engine holds unprocessed."""
        return len(self._in)

    @property
    def text_ahead(self):
        """Return how many of the next input octets are message text, which makes no replies
        and may be fed in large pieces: the rest of a BDAT chunk, `max_pending` while DATA
        text is read (its end is found by reading: the application takes back what follows
        it with `give_back` once this is 0), 0 otherwise."""
        mode = self._mode()
        if mode == "chunk":
            return self._chunk_left
        return self.max_pending if mode == "data" and self._dot is not None else 0

    def give_back(self, keep):
        """Return (and forget) the unprocessed input beyond its first `keep` octets, for the
        application to feed again later: after text fed in large pieces, the commands
        pipelined behind it are then answered a slice at a time."""
        if len(self._in) <= keep:
            return b""
        rest = bytes(self._in[keep:])
        del self._in[keep:]
        return rest

    def receive_data(self, data):
        """Feed bytes read from the peer; b"" means the peer closed its side."""
        if self.state == CLOSED or self._eof:
            return
        if self.state == TLS and data:      # EOF may still come: the peer went away
            raise UsageError("plaintext fed while the TLS handshake is pending")
        if not data:
            self._eof = True
        elif len(self._in) >= self.max_pending:
            raise UsageError("input fed while wants_data is False")
        else:
            self._in += data

    def next_event(self):
        """Return the next event, NEED_DATA, or PAUSED (a decision awaits respond())."""
        while True:
            if self._events:
                return self._events.popleft()
            if self._pending is not None:
                return PAUSED
            if self.state == CLOSED:
                return ConnectionClosed(self.close_reason)
            if not self._READERS[self._mode()](self):
                if not self._eof:
                    return NEED_DATA
                self._close("eof")

    def respond(self, reply=None):
        """Answer the pending decision event: None or 2xx/3xx accepts, 4xx/5xx refuses."""
        if self.state == CLOSED:
            return
        if self._pending is None:
            raise UsageError("respond() without a pending decision")
        event, verb, extra = self._pending
        accepting = reply is None or reply.code < 400
        if accepting and reply is not None:
            allowed = () if extra is not None else _ACCEPT_CODES[type(event)]
            if reply.code not in allowed:
                raise UsageError("%d cannot accept %s" % (reply.code, type(event).__name__))
        self._pending = None
        table = self._ACCEPT if accepting else self._REFUSE
        table.get(type(event), SMTPServer._refuse)(self, event, verb, extra, reply)

    def data_to_send(self):
        """Return (and forget) the bytes queued for the peer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def greeting(self, reply=None):
        """Return the 220 greeting; a `reply` of 554 refuses the session instead (every
        command but QUIT gets 503 5.5.1, RFC 5321 section 3.1), one of 421 closes it."""
        reply = reply or R.greeting(self.hostname)
        self._out += reply.to_bytes()
        if reply.code == 554:
            self._move("refuse")
        elif not reply.is_positive():
            self._close("refused")
        return self.data_to_send()

    def start_tls_done(self):
        """Record a finished TLS handshake: everything is forgotten, the client must EHLO."""
        if self.state != TLS:
            raise UsageError("start_tls_done() without an accepted STARTTLS")
        self._move("handshake done")
        self.tls_active, self.authenticated = True, False
        self.helo_name, self.extended = None, False
        self._lines = LineSplitter()
        self._in.clear()

    def timeout_reply(self):
        """Close for an expired read timer; return the bytes left to send (ending in 421)."""
        self._finish(R.timeout(self.hostname), "timeout")
        return self.data_to_send()

    def shutdown(self, reply=None):
        """Close because the server is stopping; return the bytes left to send."""
        self._finish(reply or R.shutting_down(self.hostname), "shutdown")
        return self.data_to_send()

    # Readers: one per input mode; each consumes what it can, returns False if it could not.

    def _mode(self):
        """Return how input is read now: from the state, or a BDAT chunk's octets first."""
        if self._chunk_left and self.state != CLOSED:
            return "chunk"
        return MODES[self.state]

    def _read_command(self):
        if self._in[:5].upper() == b"AUTH ":
            line = self._lines.take(self._in, smtp_auth.MAX_LINE, R.AUTH_TOO_LONG)
        else:
            line = self._lines.take(self._in, self.max_line, R.TOO_LONG)
        if line is None:
            return False
        try:
            if isinstance(line, Reply):
                raise ProtocolError(reply=line)
            self._command(line)
        except ProtocolError as err:
            self._send(err.reply)
        return True

    def _read_data(self):
        before = len(self._in)
        self._body(self._dot.take(self._in))
        if not self._dot.done:
            return len(self._in) != before
        self._dot, self._data_open = None, False
        self._text_complete()
        return True

    def _read_chunk(self):
        if not self._in:
            return False
        take = min(self._chunk_left, len(self._in))
        if self._chunk_reply is None:
            with memoryview(self._in) as view, view[:take] as text:
                self._body(text.tobytes())
        del self._in[:take]
        self._chunk_left -= take
        if self._chunk_left == 0:
            self._chunk_done()
        return True

    def _read_sasl(self):
        line = self._lines.take(self._in, smtp_auth.MAX_LINE, R.AUTH_TOO_LONG)
        if line is None:
            return False
        if isinstance(line, Reply):
            self._sasl = None
            self._move("sasl done")
            self._send(line)
        else:
            self._sasl_step(self._sasl.feed, line)
        return True

    def _read_nothing(self):
        return False

    _READERS = {"command": _read_command, "data": _read_data, "chunk": _read_chunk,
                "sasl": _read_sasl, "nothing": _read_nothing}

    # Commands: one handler per verb. Input here is one line, already capped, free of NUL
    # and CR, valid UTF-8; faults raise ProtocolError(reply=...), which _read_command answers.
    # Unknown verbs get 500 5.5.2, except HTTP request and header-looking lines
    # (CONNECT/GET/POST, "Name:"), answered 221 2.7.0 and disconnected.

    def _command(self, line):
        if b"\x00" in line:
            raise ProtocolError(reply=R.NUL)
        if b"\r" in line:
            raise ProtocolError(reply=R.BARE_CR)
        try:
            text = line.decode("utf-8").rstrip(" ")
        except UnicodeDecodeError:
            raise ProtocolError(reply=R.BAD_UTF8) from None
        verb, _, arg = text.partition(" ")
        verb, arg = verb.upper(), arg.lstrip(" ")
        handler = self._COMMANDS.get(verb)
        if handler is None:
            return self._unknown(verb)
        target = TRANSITIONS[verb][COLUMN[self.state]]
        if isinstance(target, Reply) and verb != "BDAT":  # BDAT must skip its chunk first
            raise ProtocolError(reply=target)
        return handler(self, arg, target)

    def _unknown(self, verb):
        if verb in _JUNK_VERBS or ":" in verb:
            self._finish(R.JUNK, "junk")
        else:
            raise ProtocolError(reply=R.UNKNOWN)

    def _cmd_helo(self, arg, target):
        self._hello(arg, target, False)

    def _cmd_ehlo(self, arg, target):
        self._hello(arg, target, True)

    def _hello(self, arg, target, extended):
        name = arg.strip(" ")
        if (not name or len(name.encode("utf-8")) > 255
                or any(c <= " " or c == "\x7f" for c in name)):
            raise ProtocolError(reply=R.syntax("EHLO hostname" if extended else "HELO hostname"))
        if self.state in (MAIL, RCPT, CHUNK):
            self._end_transaction(reset=True)
        self._decide(Hello(name, extended), "EHLO" if extended else "HELO")

    def _cmd_mail(self, arg, target):
        path, params = smtp_params.parse_mail(arg, self.max_size, self.binarymime)
        self._decide(MailFrom(path, params), "MAIL")

    def _cmd_rcpt(self, arg, target):
        path, params = smtp_params.parse_rcpt(arg, self._smtputf8)
        self._decide(RcptTo(path, params), "RCPT")

    def _cmd_data(self, arg, target):
        if arg:
            raise ProtocolError(reply=R.syntax("DATA"))
        if self._binary:
            raise ProtocolError(reply=R.DATA_BINARYMIME)
        self._decide(DataStart(), "DATA")

    def _cmd_bdat(self, arg, target):
        words = arg.upper().split(" ")
        if (not 1 <= len(words) <= 2 or not (words[0].isascii() and words[0].isdigit())
                or len(words[0]) > 20
                or words[1:] not in ([], ["LAST"])):
            self._finish(R.BDAT_SYNTAX, "protocol")  # the chunk's extent is unknown
            return
        count, last = int(words[0]), len(words) == 2
        if not self.chunking:
            self._skip_chunk(count, R.NOT_IMPLEMENTED)
        elif isinstance(target, Reply):
            self._skip_chunk(count, target)
        elif self.state == RCPT and count > self.max_size:
            self._skip_chunk(count, R.TOO_BIG)
        elif self.state == RCPT:
            self._decide(DataStart(), "BDAT", (count, last))
        elif self._meter.exceeds_size(count):
            self._abort_text("too big")
            self._skip_chunk(count, R.TOO_BIG)
        else:
            self._start_chunk(count, last)

    def _cmd_rset(self, arg, target):
        if arg:
            raise ProtocolError(reply=R.syntax("RSET"))
        self._end_transaction(reset=True)
        self._move("RSET")
        self._send(R.OK)

    def _cmd_noop(self, arg, target):
        self._send(R.OK)

    def _cmd_vrfy(self, arg, target):
        if not arg:
            raise ProtocolError(reply=R.syntax("VRFY address"))
        self._send(R.VRFY)

    def _cmd_help(self, arg, target):
        self._send(R.HELP)

    def _cmd_quit(self, arg, target):
        self._events.append(Quit())
        self._finish(R.BYE, "quit")

    def _cmd_starttls(self, arg, target):
        if arg:
            raise ProtocolError(reply=R.syntax("STARTTLS"))
        if self.tls_active:
            raise ProtocolError(reply=R.TLS_ACTIVE)
        if not self.tls_available:
            raise ProtocolError(reply=R.NOT_IMPLEMENTED)
        if self.authenticated:
            raise ProtocolError(reply=R.ALREADY_AUTH)
        self._decide(StartTLS(), "STARTTLS")

    def _cmd_auth(self, arg, target):
        mechanism, _, initial = arg.partition(" ")
        if not mechanism:
            raise ProtocolError(reply=R.syntax("AUTH mechanism"))
        if not self.auth_mechanisms:
            raise ProtocolError(reply=R.AUTH_DISABLED)
        if self.authenticated:
            raise ProtocolError(reply=R.ALREADY_AUTH)
        if self.auth_needs_tls and not self.tls_active:
            raise ProtocolError(reply=R.AUTH_NEEDS_TLS)
        if mechanism.upper() not in self.auth_mechanisms:
            raise ProtocolError(reply=R.AUTH_UNKNOWN_MECH)
        exchange = smtp_auth.Exchange(mechanism.upper(), initial.encode() if initial else None)
        self._sasl = exchange
        self._move("sasl")
        self._sasl_step(exchange.start)

    _COMMANDS = {"HELO": _cmd_helo, "EHLO": _cmd_ehlo, "MAIL": _cmd_mail, "RCPT": _cmd_rcpt,
                 "DATA": _cmd_data, "BDAT": _cmd_bdat, "RSET": _cmd_rset, "NOOP": _cmd_noop,
                 "VRFY": _cmd_vrfy, "HELP": _cmd_help, "QUIT": _cmd_quit,
                 "STARTTLS": _cmd_starttls, "AUTH": _cmd_auth}

    # The application's answers to decision events: accept or refuse, per event type.

    def _accept_hello(self, event, verb, extra, reply):
        self.helo_name, self.extended = event.name, event.extended
        self._move(verb)
        self._send(self._ehlo_reply() if event.extended else Reply(250, "", self.hostname))

    def _accept_mail(self, event, verb, extra, reply):
        self._smtputf8 = "SMTPUTF8" in event.params
        self._binary = event.params.get("BODY") == "BINARYMIME"
        self._move(verb)
        self._send(reply or R.MAIL_OK)

    def _accept_rcpt(self, event, verb, extra, reply):
        self.recipients += 1
        self._move(verb)
        self._send(reply or R.RCPT_OK)

    def _accept_data(self, event, verb, extra, reply):
        self._move(verb)
        self._meter = Meter(self.max_size, 0 if self._binary else self.max_data_line)
        self._data_open = True
        if extra is not None:
            self._start_chunk(*extra)
        else:
            self._dot = DotDecoder()
            self._send(reply or R.GO_AHEAD)

    def _accept_end(self, event, verb, extra, reply):
        self._end_transaction(reset=False)
        self._send(reply or R.QUEUED)

    def _accept_starttls(self, event, verb, extra, reply):
        self._send(reply or R.TLS_GO_AHEAD)
        self._in.clear()  # plaintext pipelined after STARTTLS must never be executed
        self._move(verb)

    def _accept_auth(self, event, verb, extra, reply):
        self.authenticated = True
        self._send(reply or R.AUTH_OK)

    def _refuse(self, event, verb, extra, reply):
        self._send(reply)

    def _refuse_data(self, event, verb, extra, reply):
        if extra is None:
            self._send(reply)
        else:
            self._skip_chunk(extra[0], reply)

    def _refuse_end(self, event, verb, extra, reply):
        self._end_transaction(reset=False)
        self._send(reply)

    _ACCEPT = {Hello: _accept_hello, MailFrom: _accept_mail, RcptTo: _accept_rcpt,
               DataStart: _accept_data, EndOfData: _accept_end, StartTLS: _accept_starttls,
               AuthRequest: _accept_auth}
    _REFUSE = {DataStart: _refuse_data, EndOfData: _refuse_end}

    def _decide(self, event, verb=None, extra=None):
        self._pending = (event, verb, extra)
        self._events.append(event)

    def _move(self, trigger):
        """Change the state, the only place it changes: `trigger` is an accepted verb (its
        target in TRANSITIONS) or an engine step (STEPS); anything else is a bug."""
        if trigger in TRANSITIONS:
            column = COLUMN.get(self.state)
            target = None if column is None else TRANSITIONS[trigger][column]
        else:
            target = STEPS.get((self.state, trigger), STEPS.get((ANY, trigger)))
        if target is None or isinstance(target, Reply):
            raise UsageError("%s in state %s" % (trigger, self.state))
        if target != SAME:
            self.state = target

    def _send(self, reply):
        if self.state == CLOSED:
            return
        self._out += reply.to_bytes()
        if reply.code == 421:
            self._close("refused")
        elif reply.code >= 500:
            self.errors += 1
            if self.errors >= self.max_errors:
                self._finish(R.too_many_errors(self.hostname), "too many errors")

    def _finish(self, reply, reason):
        if self.state != CLOSED:
            self._out += reply.to_bytes()
            self._close(reason)

    def _close(self, reason):
        if self._data_open:
            self._events.append(DataAborted(reason))
        self._data_open, self._pending, self._sasl, self._dot = False, None, None, None
        self._chunk_left, self.close_reason = 0, reason
        self._move("close")
        self._in.clear()

    def _end_transaction(self, reset):
        self._move("end")
        self.recipients, self._meter = 0, None
        self._smtputf8 = self._binary = self._data_open = False
        if reset:
            self._events.append(Reset())

    def _ehlo_reply(self):
        lines = [self.hostname, "PIPELINING", "SIZE %d" % self.max_size]
        if self.tls_available and not self.tls_active:
            lines.append("STARTTLS")
        if self.auth_mechanisms and (self.tls_active or not self.auth_needs_tls):
            lines.append("AUTH " + " ".join(self.auth_mechanisms))
        lines += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"]
        if self.chunking:
            lines.append("CHUNKING")
        if self.binarymime:
            lines.append("BINARYMIME")
        return Reply(250, "", lines)

    def _body(self, text):
        if not text or self._meter is None or self._meter.fault is not None:
            return
        fault = self._meter.add(text)
        if fault is not None:
            self._abort_text(fault)
        else:
            self._events.append(DataChunk(text))

    def _abort_text(self, fault):
        self._meter.fault, self._data_open = fault, False
        self._events.append(DataAborted(fault))

    def _text_complete(self):
        if self._meter.fault is not None:
            reply = _FAULT_REPLY[self._meter.fault]
            self._end_transaction(reset=True)
            self._send(reply)
        else:
            self._decide(EndOfData())

    def _start_chunk(self, count, last):
        self._chunk_left, self._chunk_size, self._chunk_last = count, count, last
        if count == 0:
            self._chunk_done()

    def _skip_chunk(self, count, reply):
        self._chunk_reply = reply
        self._start_chunk(count, False)

    def _chunk_done(self):
        reply, self._chunk_reply = self._chunk_reply, None
        if reply is None and self._meter.fault is not None:
            reply = _FAULT_REPLY[self._meter.fault]
        if reply is not None:
            self._end_transaction(reset=self.state in (MAIL, RCPT, CHUNK))
            self._send(reply)
        elif self._chunk_last:
            self._data_open = False
            self._decide(EndOfData())
        else:
            self._send(R.chunk_received(self._chunk_size))

    def _sasl_step(self, step, *args):
        try:
            result = step(*args)
        except ProtocolError as err:
            self._sasl = None
            self._move("sasl done")
            self._send(err.reply)
            return
        if isinstance(result, Reply):
            self._send(result)
        else:
            self._sasl = None
            self._move("sasl done")
            self._decide(result)
