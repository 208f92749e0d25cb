"""IMAP4rev1 client protocol engine, the part fetching needs (RFC 3501, 2595, 4315 UID EXPUNGE).

Owns: the session state machine (one table, `TRANSITIONS`), tagged commands (one at a time:
the next is sent when the previous one completed), untagged data a fetch needs
(CAPABILITY, EXISTS, UIDVALIDITY, FETCH with UID, RFC822.SIZE and BODY[]), literals
(`{n}`: a BODY[] literal is handed out in chunks as it arrives, never held whole; other
literals are read up to `MAX_LINE`), STARTTLS, LOGIN and AUTHENTICATE PLAIN (with the
initial response), SELECT, UID FETCH, UID STORE, UID EXPUNGE / EXPUNGE and LOGOUT.
Does not: touch sockets, TLS, clocks, files or configuration; choose what to fetch.

Use: `receive_data(bytes)` (b"" = EOF), then `next_event()` until NEED_DATA; after every
call and event write `data_to_send()`.

All input is hostile. A line longer than `MAX_LINE`, a response that is neither tagged
with the awaited tag, untagged (`*`) nor a continuation (`+`), a malformed FETCH, a BODY[]
literal longer than `max_message`, bytes after the OK to STARTTLS, or a tagged response
nothing was sent for raise `ProtocolError` (451 4.5.0 describing the fault); the
engine is then CLOSED. Calls in the wrong state raise `UsageError`.
"""

import base64
from collections import deque

from . import client_engine, frozen
from .client_engine import CLOSED, ClientEngine
from .errors import ProtocolError, UsageError
from .reply import Reply

# every engine's "feed more bytes" marker and end-of-session event, named here for its users
NEED_DATA, ConnectionClosed = client_engine.NEED_DATA, client_engine.ConnectionClosed

MAX_LINE = 16384           # a response line, with its small literals
MAX_MESSAGE = 64 << 20     # default bound on one BODY[] literal

# Events, in the order a session produces them.


@frozen
class Greeting:
    """The server's banner: status "OK", "PREAUTH" or "BYE", and its text."""
    status: str
    text: str


@frozen
class Completion:
    """A command completed: its name, and "OK", "NO" or "BAD" with the text."""
    command: str
    status: str
    text: str

    @property
    def ok(self):
        """Return True for OK."""
        return self.status == "OK"


@frozen
class MessageInfo:
    """An untagged FETCH that named a message's UID (and RFC822.SIZE, or None)."""
    uid: int
    size: int = None


@frozen
class MessageText:
    """A piece of message `uid`'s BODY[] (the literal's octets, as sent)."""
    uid: int
    data: bytes


@frozen
class MessageEnd:
    """The BODY[] of message `uid` is complete: `size` octets."""
    uid: int
    size: int


# Session states.
GREETING, NOT_AUTHENTICATED, TLS, HANDSHAKE = "greeting", "not authenticated", "tls", \
    "handshake"
LOGIN, AUTHENTICATED, SELECTED = "login", "authenticated", "selected"
LOGOUT, ANY = "logout", "*"

TRANSITIONS = {
    (GREETING, "greeted"): NOT_AUTHENTICATED,
    (GREETING, "preauth"): AUTHENTICATED,
    (GREETING, "bye"): CLOSED,
    (NOT_AUTHENTICATED, "capability"): NOT_AUTHENTICATED,
    (AUTHENTICATED, "capability"): AUTHENTICATED,
    (NOT_AUTHENTICATED, "starttls"): TLS,
    (TLS, "tls go"): HANDSHAKE,
    (TLS, "tls refused"): NOT_AUTHENTICATED,
    (HANDSHAKE, "tls_done"): NOT_AUTHENTICATED,
    (NOT_AUTHENTICATED, "login"): LOGIN,
    (LOGIN, "logged in"): AUTHENTICATED,
    (LOGIN, "refused"): NOT_AUTHENTICATED,
    (AUTHENTICATED, "select"): SELECTED,
    (SELECTED, "select"): SELECTED,
    (SELECTED, "command"): SELECTED,
    (NOT_AUTHENTICATED, "logout"): LOGOUT,
    (AUTHENTICATED, "logout"): LOGOUT,
    (SELECTED, "logout"): LOGOUT,
    (LOGOUT, "logout done"): CLOSED,
    (ANY, "eof"): CLOSED,
    (ANY, "broken"): CLOSED,
}


def remote_error(text):
    """Return the ProtocolError (451 4.5.0) for a server fault described by text."""
    return ProtocolError(reply=Reply(451, "4.5.0", "IMAP server: " + text))


def quoted(text):
    """Return text as an IMAP quoted string (UsageError for CR, LF or NUL)."""
    data = text.encode("utf-8")
    if any(c in data for c in b"\r\n\0"):
        raise UsageError("a CR, LF or NUL in an IMAP string")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _clean(data):
    text = data.decode("utf-8", "replace")
    return "".join(c if c >= " " and c != "\x7f" else "?" for c in text)


class Client(ClientEngine):
    """The client side of one IMAP session, from greeting to LOGOUT."""

    MAX_LINE = MAX_LINE
    _fault = staticmethod(remote_error)

    def __init__(self, max_message=MAX_MESSAGE):
        super().__init__(GREETING)
        self.max_message = max_message
        self.capabilities = frozenset()
        self.uidvalidity = self.exists = None
        self._tag = 0
        self._pending = None          # (tag, command) in flight
        self._backlog = deque()       # (command, line) not yet sent
        self._greeted = False
        self._continuation = None     # bytes to send at the next "+"
        self._literal = None          # [uid, octets left, size] of a BODY[] being read
        self._rest = None             # the FETCH response after a BODY[] literal

    @property
    def waiting_for(self):
        """Return the command whose completion is awaited, "GREETING", or None."""
        if not self._greeted:
            return "GREETING"
        return self._pending[1] if self._pending else None

    # Calls

    def capability(self):
        """Ask for the capabilities."""
        self._move("capability")
        self._send("CAPABILITY", b"CAPABILITY")

    def starttls(self):
        """Send STARTTLS."""
        self._move("starttls")
        self._send("STARTTLS", b"STARTTLS")

    def tls_done(self):
        """Record a finished TLS handshake: capabilities must be asked again."""
        self._move("tls_done")
        self.capabilities = frozenset()

    def login(self, user, password):
        """Log in with LOGIN (the password in clear: under TLS only)."""
        self._move("login")
        self._send("LOGIN", b"LOGIN " + quoted(user) + b" " + quoted(password))

    def authenticate_plain(self, user, password):
        """Log in with AUTHENTICATE PLAIN (the initial response at once if SASL-IR)."""
        self._move("login")
        token = base64.b64encode(b"\0" + user.encode("utf-8") + b"\0" +
                                 password.encode("utf-8"))
        if "SASL-IR" in self.capabilities:
            self._send("AUTHENTICATE", b"AUTHENTICATE PLAIN " + token)
        else:
            self._send("AUTHENTICATE", b"AUTHENTICATE PLAIN", continuation=token)

    def select(self, folder):
        """Select a folder: UIDVALIDITY and EXISTS are known when it completed."""
        self._move("select")
        self.uidvalidity = self.exists = None
        self._send("SELECT", b"SELECT " + quoted(folder))

    def list_messages(self):
        """Ask for every message's UID and size (MessageInfo events)."""
        self._command("FETCH", b"UID FETCH 1:* (UID RFC822.SIZE)")

    def fetch(self, uid):
        """Ask for message uid, unseen flags untouched: MessageText..., MessageEnd."""
        self._command("FETCH", b"UID FETCH %d BODY.PEEK[]" % uid)

    def delete(self, uid):
        """Mark message uid \\Deleted."""
        self._command("STORE", b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid)

    def expunge(self, uids=()):
        """Remove the \\Deleted messages: only uids with UIDPLUS (RFC 4315), else all."""
        if uids and "UIDPLUS" in self.capabilities:
            return self._command("EXPUNGE", b"UID EXPUNGE " + b",".join(
                b"%d" % uid for uid in sorted(uids)))
        self._command("EXPUNGE", b"EXPUNGE")

    def logout(self):
        """Send LOGOUT."""
        self._move("logout")
        self._send("LOGOUT", b"LOGOUT")

    def _command(self, command, line):
        self._move("command")
        self._send(command, line)

    # Machinery

    def _move(self, trigger):
        state = TRANSITIONS.get((self.state, trigger)) or TRANSITIONS.get((ANY, trigger))
        if state is None:
            raise UsageError("%s in state %s" % (trigger, self.state))
        self.state = state

    def _send(self, command, line, continuation=None):
        self._backlog.append((command, line, continuation))
        self._drain()

    def _drain(self):
        if self._backlog and self._pending is None and self._greeted:
            command, line, continuation = self._backlog.popleft()
            self._tag += 1
            tag = b"m%d" % self._tag
            self._out += tag + b" " + line + b"\r\n"
            self._pending = (tag, command)
            self._continuation = continuation

    def _step(self):
        """Handle what the buffer holds next; return False if more data is needed."""
        if self._literal is not None:
            return self._read_literal()
        line = self._line()
        if line is None:
            return False
        if self._rest is not None:                  # the end of a FETCH after BODY[]
            self._fetch_items(self._rest + line)
            self._rest = None
            return True
        if line.startswith(b"* "):
            self._untagged(line[2:])
        elif line.startswith(b"+"):
            if self._continuation is None:
                raise remote_error("an unexpected continuation request")
            self._out += self._continuation + b"\r\n"
            self._continuation = None
        elif self._pending is not None and line.startswith(self._pending[0] + b" "):
            self._tagged(line[len(self._pending[0]) + 1:])
        else:
            raise remote_error("unexpected response %r" % _clean(line[:80]))
        return True

    def _untagged(self, line):
        word, _, rest = line.partition(b" ")
        upper = word.upper()
        if not self._greeted:
            if upper not in (b"OK", b"PREAUTH", b"BYE"):
                raise remote_error("malformed greeting %r" % _clean(line[:80]))
            self._greeted = True
            self._capability_code(rest)
            self._move({b"OK": "greeted", b"PREAUTH": "preauth", b"BYE": "bye"}[upper])
            self._events.append(Greeting(upper.decode(), _clean(rest)))
            self._drain()
            return
        if upper == b"CAPABILITY":
            self.capabilities = frozenset(rest.decode("ascii", "replace").upper().split())
        elif upper in (b"OK", b"NO", b"BAD"):
            self._capability_code(rest)
            if rest.upper().startswith(b"[UIDVALIDITY "):
                value = rest[13:].split(b"]")[0]
                if not value.isdigit():
                    raise remote_error("malformed UIDVALIDITY %r" % _clean(value[:20]))
                self.uidvalidity = int(value)
        elif upper == b"BYE":
            pass                                    # the close follows
        elif word.isdigit():
            kind, _, items = rest.partition(b" ")
            if kind.upper() == b"EXISTS":
                self.exists = int(word)
            elif kind.upper() == b"FETCH":
                self._fetch_items(items)
        # anything else untagged (FLAGS, RECENT, EXPUNGE, LIST...) is of no use here

    def _capability_code(self, text):
        if text.upper().startswith(b"[CAPABILITY "):
            self.capabilities = frozenset(
                text[12:].split(b"]")[0].decode("ascii", "replace").upper().split())

    def _tagged(self, line):
        tag, command = self._pending
        self._pending = None
        self._continuation = None
        status, _, text = line.partition(b" ")
        status = status.upper().decode("ascii", "replace")
        if status not in ("OK", "NO", "BAD"):
            raise remote_error("malformed completion %r" % _clean(line[:80]))
        self._capability_code(text)
        if command in ("LOGIN", "AUTHENTICATE"):
            self._move("logged in" if status == "OK" else "refused")
        elif command == "STARTTLS":
            if status == "OK" and self._buffer:
                raise remote_error("data after the OK to STARTTLS (a command injection "
                                   "attempt)")
            self._move("tls go" if status == "OK" else "tls refused")
        elif command == "LOGOUT":
            self._move("logout done")
        elif command == "SELECT" and status == "OK" and self.uidvalidity is None:
            raise remote_error("SELECT without UIDVALIDITY")
        self._events.append(Completion(command, status, _clean(text)))
        self._drain()

    def _fetch_items(self, items):
        """Parse `(UID n RFC822.SIZE m BODY[] {k}...)`; a literal starts streaming."""
        if not items.startswith(b"(") and self._rest is None:   # not the tail after BODY[]
            raise remote_error("malformed FETCH %r" % _clean(items[:80]))
        words = items.lstrip(b"(").split(b" ")
        uid = size = None
        i = 0
        while i < len(words):
            name = words[i].upper().rstrip(b")")
            value = words[i + 1] if i + 1 < len(words) else b""
            if name == b"UID" and value.rstrip(b")").isdigit():
                uid = int(value.rstrip(b")"))
                i += 2
            elif name == b"RFC822.SIZE" and value.rstrip(b")").isdigit():
                size = int(value.rstrip(b")"))
                i += 2
            elif name == b"BODY[]":
                if value.startswith(b"{") and value.endswith(b"}") and \
                        value[1:-1].isdigit() and i + 2 == len(words):
                    octets = int(value[1:-1])
                    if uid is None:
                        raise remote_error("BODY[] without a UID")
                    if octets > self.max_message:
                        raise remote_error("message %d is larger than %d octets"
                                           % (uid, self.max_message))
                    self._literal = [uid, octets, octets]
                    return
                if value.upper().rstrip(b")") == b"NIL" or value.rstrip(b")") == b'""':
                    self._events.append(MessageEnd(uid, 0))
                    return
                raise remote_error("malformed BODY[] %r" % _clean(value[:40]))
            else:
                i += 1
        if uid is not None:
            self._events.append(MessageInfo(uid, size))

    def _read_literal(self):
        uid, left, size = self._literal
        if not self._buffer:
            return False
        data = bytes(self._buffer[:left])
        del self._buffer[:len(data)]
        left -= len(data)
        self._events.append(MessageText(uid, data))
        if left:
            self._literal[1] = left
            return True
        self._literal = None
        self._events.append(MessageEnd(uid, size))
        self._rest = b""                            # the rest of the FETCH line follows
        return True
