"""POP3 client protocol engine (RFC 1939, 2449 CAPA, 2595 STLS, 5034 AUTH): bytes in, events out.

Owns: the session state machine (one table, `TRANSITIONS`), the command queue (commands
wait for the previous reply unless the server offered PIPELINING and the session is in the
TRANSACTION state), status lines, multi-line responses (CAPA, UIDL, LIST listings collected;
RETR text handed out in chunks as it arrives, un-dot-stuffed, never held whole), APOP, USER/
PASS and SASL exchanges (the SMTP client's mechanisms: RFC 5034 AUTH has the same form).
Does not: touch sockets, TLS, clocks, files or configuration; choose a login method or which
messages to take (the fetch session does).

Use: `receive_data(bytes)` (b"" = EOF), then `next_event()` until NEED_DATA; after every
call and event write `data_to_send()`.

All input is hostile. A status line longer than `MAX_LINE`, one that is neither `+OK` nor
`-ERR`, a listing longer than `MAX_LISTING` lines or with a malformed line, message text
longer than `max_message` octets, bytes after the `+OK` to STLS, or a reply nothing was
sent for raise `ProtocolError` (451 4.5.0 describing the fault); the engine is then
CLOSED. Calls in the wrong state raise `UsageError`.
"""

from collections import deque

from . import client_engine, frozen
from .client_engine import CLOSED, ClientEngine
from .errors import ProtocolError, UsageError
from .reply import Reply
from .smtp_client_wire import MECHANISMS

# every engine's "feed more bytes" marker and end-of-session event, named here for its users
NEED_DATA, ConnectionClosed = client_engine.NEED_DATA, client_engine.ConnectionClosed

MAX_LINE = 2048            # a status or listing line (RFC 1939: 512; SASL lines are longer)
MAX_LISTING = 100000       # lines of one CAPA, UIDL or LIST listing
MAX_MESSAGE = 64 << 20     # default bound on one message's text


@frozen
class Status:
    """A status line: ok (+OK) or not (-ERR), and its text."""
    ok: bool
    text: str


# Events, in the order a session produces them.


@frozen
class Greeting:
    """The server's banner; `timestamp` is its APOP challenge (b"<...>") or None."""
    status: Status
    timestamp: bytes = None


@frozen
class Capabilities:
    """The answer to CAPA: capability names (upper case) -> their arguments (a tuple)."""
    status: Status
    names: dict


@frozen
class StlsReply:
    """The answer to STLS; ok: run the handshake now, then call tls_done()."""
    status: Status


@frozen
class LoginReply:
    """The final answer to APOP, USER/PASS or AUTH."""
    status: Status


@frozen
class Listing:
    """The answer to UIDL or LIST without argument: ((number, value), ...)."""
    command: str
    status: Status
    entries: tuple


@frozen
class MessageText:
    """A piece of the text of message `number` (wire form, dot-stuffing removed)."""
    number: int
    data: bytes


@frozen
class MessageEnd:
    """The text of message `number` is complete: `size` octets."""
    number: int
    size: int


@frozen
class CommandReply:
    """The answer to a single-line command (DELE, NOOP, RSET, STAT), or -ERR to RETR."""
    command: str
    number: int
    status: Status


@frozen
class QuitReply:
    """The answer to QUIT (in the TRANSACTION state: +OK means the deletions were made)."""
    status: Status


# Session states.
GREETING, AUTHORIZATION, TLS, HANDSHAKE = "greeting", "authorization", "tls", "handshake"
LOGIN, TRANSACTION, REFUSED, QUIT = "login", "transaction", "refused", "quit"
ANY = "*"

# (state, trigger) -> next state. Triggers are the public calls and what replies mean.
TRANSITIONS = {
    (GREETING, "greeted"): AUTHORIZATION,
    (GREETING, "turned away"): REFUSED,
    (AUTHORIZATION, "capa"): AUTHORIZATION,
    (TRANSACTION, "capa"): TRANSACTION,
    (AUTHORIZATION, "stls"): TLS,
    (TLS, "tls go"): HANDSHAKE,
    (TLS, "tls refused"): AUTHORIZATION,
    (HANDSHAKE, "tls_done"): AUTHORIZATION,
    (AUTHORIZATION, "login"): LOGIN,
    (LOGIN, "logged in"): TRANSACTION,
    (LOGIN, "refused"): AUTHORIZATION,
    (TRANSACTION, "command"): TRANSACTION,
    (AUTHORIZATION, "quit"): QUIT,
    (TRANSACTION, "quit"): QUIT,
    (REFUSED, "quit"): QUIT,
    (QUIT, "quit reply"): CLOSED,
    (ANY, "eof"): CLOSED,
    (ANY, "broken"): CLOSED,
}

# What follows a +OK to each command: a listing, message text, or nothing.
_MULTILINE = {"CAPA": "listing", "UIDL": "listing", "LIST": "listing", "RETR": "text"}


def remote_error(text):
    """Return the ProtocolError (451 4.5.0) for a server fault described by text."""
    return ProtocolError(reply=Reply(451, "4.5.0", "POP3 server: " + text))


def _status(line):
    """Return the Status of a status line, or None if it is neither +OK nor -ERR."""
    for word, ok in ((b"+OK", True), (b"-ERR", False)):
        if line.startswith(word) and line[len(word):len(word) + 1] in (b"", b" "):
            return Status(ok, _clean(line[len(word) + 1:]))
    return None


def _clean(data):
    text = data.decode("utf-8", "replace")
    return "".join(c if c >= " " and c != "\x7f" else "?" for c in text)


def _unique_id(value):
    """Check a UIDL value (RFC 1939: 1 to 70 characters 0x21-0x7E)."""
    return 0 < len(value) <= 70 and all(0x21 <= c <= 0x7e for c in value)


def apop_digest(timestamp, password):
    """Return the APOP digest: MD5 of the banner's timestamp and the password, in hex."""
    import hashlib          # lazily: only for APOP
    return hashlib.md5(timestamp + password).hexdigest().encode("ascii")


class Client(ClientEngine):
    """The client side of one POP3 session, from greeting to QUIT."""

    MAX_LINE = MAX_LINE
    _fault = staticmethod(remote_error)

    def __init__(self, max_message=MAX_MESSAGE):
        super().__init__(GREETING)
        self.max_message = max_message
        self.capabilities = {}
        self.timestamp = None       # the greeting's APOP challenge
        self._pending = deque([("GREETING", None)])   # (command, argument) awaiting replies
        self._backlog = deque()                        # (command, argument, line) not yet sent
        self._logged_in = False
        self._auth = None           # the rest of a login exchange: [answer(text) -> bytes]
        self._body = None           # (command, number) whose multi-line part is being read
        self._lines = []            # a listing being collected
        self._bol = True            # message text: at the start of a line
        self._size = 0              # message text: octets handed out so far

    @property
    def waiting_for(self):
        """Return the command whose reply is awaited next ("GREETING", "RETR"...), or None."""
        return self._pending[0][0] if self._pending else None

    # Calls: each checks the state table, then queues its command.

    def capa(self):
        """Ask for the capabilities (RFC 2449)."""
        self._move("capa")
        self._send("CAPA", None, b"CAPA\r\n")

    def stls(self):
        """Send STLS (RFC 2595)."""
        self._move("stls")
        self._send("STLS", None, b"STLS\r\n")

    def tls_done(self):
        """Record a finished TLS handshake: capabilities must be asked again."""
        self._move("tls_done")
        self.capabilities = {}

    def apop(self, user, password):
        """Log in with APOP (the password does not cross the wire; the greeting had a
        timestamp)."""
        if self.timestamp is None:
            raise UsageError("the server offered no APOP")
        self._login(b"APOP %s %s\r\n" % (_word(user), apop_digest(
            self.timestamp, password.encode("utf-8"))))

    def user_pass(self, user, password):
        """Log in with USER and PASS (the password in clear: under TLS only)."""
        secret = password.encode("utf-8")
        if b"\r" in secret or b"\n" in secret:
            raise UsageError("a CR or LF in the password")
        self._login(b"USER %s\r\n" % _word(user), [lambda text: b"PASS " + secret])

    def authenticate(self, mechanism, user, password):
        """Log in with SASL AUTH (RFC 5034) and one of the SMTP client's MECHANISMS."""
        if mechanism not in MECHANISMS:
            raise UsageError("unknown mechanism " + mechanism)
        line, steps = MECHANISMS[mechanism](user.encode("utf-8"), password.encode("utf-8"))
        self._login(line + b"\r\n", steps, sasl=True)

    def _login(self, line, steps=(), sasl=False):
        self._move("login")
        self._auth = (list(steps), sasl)
        self._send("LOGIN", None, line)

    def uidl(self):
        """Ask for the unique id of every message."""
        self._command("UIDL", None, b"UIDL\r\n")

    def list(self):
        """Ask for the size of every message."""
        self._command("LIST", None, b"LIST\r\n")

    def retr(self, number):
        """Ask for message `number`: MessageText events, then MessageEnd (or CommandReply)."""
        self._command("RETR", number, b"RETR %d\r\n" % number)

    def dele(self, number):
        """Mark message `number` deleted (done by the server at a successful QUIT)."""
        self._command("DELE", number, b"DELE %d\r\n" % number)

    def noop(self):
        """Send NOOP."""
        self._command("NOOP", None, b"NOOP\r\n")

    def quit(self):
        """Send QUIT (in TRANSACTION: the server deletes what DELE marked, then replies)."""
        self._move("quit")
        self._send("QUIT", None, b"QUIT\r\n")

    def _command(self, command, number, line):
        self._move("command")
        self._send(command, number, line)

    # Machinery

    def _move(self, trigger):
        state = TRANSITIONS.get((self.state, trigger)) or TRANSITIONS.get((ANY, trigger))
        if state is None:
            raise UsageError("%s in state %s" % (trigger, self.state))
        self.state = state

    def _send(self, command, argument, line):
        self._backlog.append((command, argument, line))
        self._drain()

    def _drain(self):
        while self._backlog and (not self._pending or (
                self._logged_in and "PIPELINING" in self.capabilities)):
            command, argument, line = self._backlog.popleft()
            self._out += line
            self._pending.append((command, argument))

    def _step(self):
        """Handle what the buffer holds next; return False if more data is needed."""
        if self._body is not None:
            return self._read_text() if _MULTILINE[self._body[0]] == "text" \
                else self._read_listing()
        line = self._line()
        if line is None:
            return False
        if not self._pending:
            raise remote_error("unsolicited reply %r" % _clean(line[:80]))
        command, argument = self._pending[0]
        if command == "LOGIN" and line[:1] == b"+" and line[1:2] in (b"", b" ") and \
                self._auth[1]:
            self._continue(line[2:])
            return True
        status = _status(line)
        if status is None:
            raise remote_error("malformed status line %r" % _clean(line[:80]))
        if status.ok and command in _MULTILINE:
            self._body, self._lines, self._bol, self._size = (command, argument), [], True, 0
            return True
        self._pending.popleft()
        _HANDLERS[command](self, command, argument, status)
        self._drain()
        return True

    def _read_listing(self):
        line = self._line()
        if line is None:
            return False
        if line == b".":
            command, argument = self._body
            self._body = None
            self._pending.popleft()
            _HANDLERS[command](self, command, argument, Status(True, ""), tuple(self._lines))
            self._lines = []
            self._drain()
            return True
        if len(self._lines) >= MAX_LISTING:
            raise remote_error("a listing of more than %d lines" % MAX_LISTING)
        self._lines.append(line[1:] if line[:1] == b"." else line)
        return True

    def _read_text(self):
        """Hand out the message text the buffer holds, up to the terminating "." line."""
        buf, pos, end = self._buffer, 0, len(self._buffer)
        chunks, done = [], False
        while pos < end:
            if self._bol and buf[pos] == 0x2e:              # "." at the start of a line
                if end - pos < 2 or (buf[pos + 1] == 0x0d and end - pos < 3):
                    break                                   # cannot tell yet
                if buf[pos + 1] == 0x0a or buf[pos + 1:pos + 3] == b"\r\n":
                    pos += 2 if buf[pos + 1] == 0x0a else 3
                    done = True
                    break
                pos += 1                                    # the stuffed dot
            stop = buf.find(b"\n.", pos)
            stop = end if stop < 0 else stop + 1
            chunks.append(bytes(buf[pos:stop]))
            self._bol = buf[stop - 1] == 0x0a
            pos = stop
        del buf[:pos]
        data = b"".join(chunks)
        number = self._body[1]
        self._size += len(data)
        if self._size > self.max_message:
            raise remote_error("message %d is larger than %d octets" % (number,
                                                                        self.max_message))
        if data:
            self._events.append(MessageText(number, data))
        if done:
            self._body = None
            self._pending.popleft()
            self._events.append(MessageEnd(number, self._size))
            self._drain()
        return bool(data) or done

    def _continue(self, text):
        steps = self._auth[0]
        answer = steps.pop(0)(text.decode("ascii", "replace")) if steps else b"*"
        self._out += answer + b"\r\n"

    # Reply handlers, one per command (the _HANDLERS table below).

    def _on_greeting(self, command, argument, status):
        self._move("greeted" if status.ok else "turned away")
        timestamp = None
        start = status.text.find("<")
        if status.ok and start >= 0:
            stop = status.text.find(">", start)
            if stop > start and "@" in status.text[start:stop]:
                timestamp = status.text[start:stop + 1].encode("utf-8")
        self.timestamp = timestamp
        self._events.append(Greeting(status, timestamp))

    def _on_capa(self, command, argument, status, lines=()):
        names = {}
        for line in lines:
            words = line.decode("ascii", "replace").split()
            if words:
                names[words[0].upper()] = tuple(words[1:])
        self.capabilities = names
        self._events.append(Capabilities(status, names))

    def _on_stls(self, command, argument, status):
        if status.ok and self._buffer:
            raise remote_error("data after the +OK to STLS (a command injection attempt)")
        self._move("tls go" if status.ok else "tls refused")
        self._events.append(StlsReply(status))

    def _on_login(self, command, argument, status):
        steps, sasl = self._auth
        if status.ok and steps and not sasl:        # +OK to USER: now PASS
            self._pending.appendleft(("LOGIN", None))
            self._out += steps.pop(0)("") + b"\r\n"
            return
        self._auth, self._logged_in = None, status.ok
        self._move("logged in" if status.ok else "refused")
        self._events.append(LoginReply(status))

    def _on_listing(self, command, argument, status, lines=()):
        entries = []
        for line in lines:
            number, _, value = line.partition(b" ")
            value = value.strip()
            if not number.isdigit() or not value or (command == "UIDL" and
                                                     not _unique_id(value)) or \
                    (command == "LIST" and not value.split(b" ")[0].isdigit()):
                raise remote_error("malformed %s line %r" % (command, _clean(line[:80])))
            entries.append((int(number), value.decode("ascii") if command == "UIDL"
                            else int(value.split(b" ")[0])))
        self._events.append(Listing(command, status, tuple(entries)))

    def _on_command(self, command, argument, status):
        self._events.append(CommandReply(command, argument, status))

    def _on_quit(self, command, argument, status):
        self._move("quit reply")
        self._events.append(QuitReply(status))


def _word(text):
    """Return a user name as one protocol word (no space, CR or LF), UTF-8 encoded."""
    data = text.encode("utf-8")
    if not data or any(c in data for c in b" \r\n\0"):
        raise UsageError("a user name with a space, CR or LF")
    return data


_HANDLERS = {
    "GREETING": Client._on_greeting, "CAPA": Client._on_capa, "STLS": Client._on_stls,
    "LOGIN": Client._on_login, "UIDL": Client._on_listing, "LIST": Client._on_listing,
    "RETR": Client._on_command, "DELE": Client._on_command, "NOOP": Client._on_command,
    "QUIT": Client._on_quit,
}
