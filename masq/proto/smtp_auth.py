"""SASL exchange decoding for SMTP AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN.

Owns: the prompts (334), base64 decoding of client responses and splitting them into
credentials. Does not: check credentials, delay or rate-limit (the application does, when
it answers the `AuthRequest` event), nor know about line framing (the engine passes one
response line at a time, already bounded to `MAX_LINE` octets).

Input is hostile: base64 is decoded strictly (bad alphabet or padding → 501 5.5.2), a "*"
line cancels (501 5.7.0), a PLAIN message must hold exactly two NULs (else 501 5.5.2).
Faults raise `ProtocolError`; the engine then drops the exchange entirely.
"""

import binascii

from . import smtp_server_replies as R
from .errors import ProtocolError
from .reply import Reply
from .smtp_server_events import AuthRequest

MAX_LINE = 12288  # RFC 4954 §4: AUTH command and response lines, CRLF included
MECHANISMS = ("PLAIN", "LOGIN")

_PROMPT_EMPTY = Reply(334, "", "")
_PROMPT_USER = Reply(334, "", "VXNlcm5hbWU6")  # "Username:"
_PROMPT_PASS = Reply(334, "", "UGFzc3dvcmQ6")  # "Password:"


def decode_response(line):
    """Decode one base64 client response; "=" alone is the empty initial response."""
    if line == b"*":
        raise ProtocolError(reply=R.AUTH_ABORTED)
    if line == b"=":
        return b""
    try:
        return binascii.a2b_base64(line, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(reply=R.AUTH_BAD_BASE64) from None


def split_plain(message):
    """Split a PLAIN message `authzid NUL authcid NUL passwd` into an AuthRequest."""
    parts = message.split(b"\x00")
    if len(parts) != 3 or not parts[1]:
        raise ProtocolError(reply=R.AUTH_BAD_DATA)
    authzid, username, password = parts
    return AuthRequest("PLAIN", username, password, authzid)


class Exchange:
    """One AUTH exchange: start() and feed() return a 334 prompt or the AuthRequest."""

    def __init__(self, mechanism, initial=None):
        if mechanism not in MECHANISMS:
            raise ValueError("unsupported SASL mechanism %r" % mechanism)
        self.mechanism = mechanism
        self._initial = initial
        self._username = None

    def start(self):
        """Return the first prompt, or the AuthRequest if the initial response completes it."""
        if self._initial is None:
            return _PROMPT_EMPTY if self.mechanism == "PLAIN" else _PROMPT_USER
        return self.feed(self._initial)

    def feed(self, line):
        """Take one client response line (no CRLF); return the next prompt or the AuthRequest."""
        data = decode_response(line)
        if self.mechanism == "PLAIN":
            return split_plain(data)
        if self._username is None:
            self._username = data
            return _PROMPT_PASS
        return AuthRequest("LOGIN", self._username, data, b"")
