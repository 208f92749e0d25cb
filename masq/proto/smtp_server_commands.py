"""SMTP server commands: the session state table and one handler per verb.

Owns: the session states, `TRANSITIONS` (for each verb and state: the state the command
leads to, or the sequence error to answer) and the dispatch table `Commands._COMMANDS`
(verb → handler). Handlers check the argument syntax, then answer at once or hand a
decision event to the application. Unknown verbs get 500 5.5.2, except HTTP request and
header-looking lines (CONNECT/GET/POST, "Name:"), answered 221 2.7.0 and disconnected.
Does not: frame input, buffer, or apply the application's answers: `Commands` is the
command half of `smtp_server.SMTPServer`, which supplies `_decide`, `_send`, `_finish`,
`_end_transaction`, `_move`, the BDAT helpers and the SASL step.

Hostile input reaching here is one line, already capped, free of NUL and CR, valid UTF-8.
Faults raise `ProtocolError(reply=...)`; the engine sends the reply and counts the error.
"""

from . import smtp_auth, smtp_params
from . import smtp_server_replies as R
from .errors import ProtocolError
from .reply import Reply
from .smtp_server_events import DataStart, Hello, MailFrom, Quit, RcptTo, StartTLS

# Session states. Commands are read in the first five (the table's columns).
GREET, READY, MAIL, RCPT, CHUNK = "greet", "ready", "mail", "rcpt", "chunk"
DATA, CLOSED = "data", "closed"
SAME = "same"  # the command leaves the state as it is
_COLUMN = {GREET: 0, READY: 1, MAIL: 2, RCPT: 3, CHUNK: 4}

_TXN = R.IN_TRANSACTION
# verb: per current state, the state after the command succeeds, or the sequence error.
TRANSITIONS = {
    #            GREET         READY        MAIL            RCPT            CHUNK
    "HELO":     (READY,        READY,       READY,          READY,          READY),
    "EHLO":     (READY,        READY,       READY,          READY,          READY),
    "MAIL":     (R.NEED_HELO,  MAIL,        R.NESTED_MAIL,  R.NESTED_MAIL,  R.NESTED_MAIL),
    "RCPT":     (R.NEED_MAIL,  R.NEED_MAIL, RCPT,           RCPT,           R.RCPT_AFTER_BDAT),
    "DATA":     (R.NEED_MAIL,  R.NEED_MAIL, R.NEED_RCPT,    DATA,           R.DATA_AFTER_BDAT),
    "BDAT":     (R.NEED_MAIL,  R.NEED_MAIL, R.NEED_RCPT,    CHUNK,          CHUNK),
    "RSET":     (SAME,         READY,       READY,          READY,          READY),
    "NOOP":     (SAME,         SAME,        SAME,           SAME,           SAME),
    "VRFY":     (SAME,         SAME,        SAME,           SAME,           SAME),
    "HELP":     (SAME,         SAME,        SAME,           SAME,           SAME),
    "QUIT":     (CLOSED,       CLOSED,      CLOSED,         CLOSED,         CLOSED),
    "STARTTLS": (GREET,        GREET,       _TXN,           _TXN,           _TXN),
    "AUTH":     (R.NEED_HELO,  SAME,        _TXN,           _TXN,           _TXN),
}
# After the reply to EndOfData, or a failed transfer, the session is READY again.

_JUNK_VERBS = ("CONNECT", "GET", "POST")  # HTTP through a proxy or a browser: disconnect


class Commands:
    """The command half of the SMTP server engine (see the module docstring)."""

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
        target = TRANSITIONS[verb][_COLUMN[self.state]]
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
        self._decide(Hello(name, extended), target)

    def _cmd_mail(self, arg, target):
        path, params = smtp_params.parse_mail(arg, self.max_size)
        self._decide(MailFrom(path, params), target)

    def _cmd_rcpt(self, arg, target):
        path, params = smtp_params.parse_rcpt(arg, self._smtputf8)
        self._decide(RcptTo(path, params), target)

    def _cmd_data(self, arg, target):
        if arg:
            raise ProtocolError(reply=R.syntax("DATA"))
        self._decide(DataStart(), target)

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
            self._decide(DataStart(), CHUNK, (count, last))
        elif self._meter.exceeds_size(count):
            self._abort_text("too big")
            self._skip_chunk(count, R.TOO_BIG)
        else:
            self._start_chunk(count, last)

    def _cmd_rset(self, arg, target):
        if arg:
            raise ProtocolError(reply=R.syntax("RSET"))
        self._end_transaction(reset=True)
        self._move(target)
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
        self._decide(StartTLS(), target)

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
        self._sasl_step(exchange.start)

    _COMMANDS = {"HELO": _cmd_helo, "EHLO": _cmd_ehlo, "MAIL": _cmd_mail, "RCPT": _cmd_rcpt,
                 "DATA": _cmd_data, "BDAT": _cmd_bdat, "RSET": _cmd_rset, "NOOP": _cmd_noop,
                 "VRFY": _cmd_vrfy, "HELP": _cmd_help, "QUIT": _cmd_quit,
                 "STARTTLS": _cmd_starttls, "AUTH": _cmd_auth}
