"""SMTP client wire syntax: the server's replies parsed, the client's command lines built.

Owns: cutting the server's bytes into `Reply` values (multi-line, bounded, enhanced status
codes split off), the EHLO extension list, the envelope checks and MAIL/RCPT parameters
(SIZE, BODY, SMTPUTF8, DSN), the AUTH mechanism choice and SASL answers (PLAIN, LOGIN,
CRAM-MD5), and dot-stuffing. Does not: sequence anything (which command may be sent when,
what a reply leads to, pipelining: `smtp_client.Client` does), nor touch IO.

All input is hostile. A reply line longer than MAX_LINE octets, a reply of more than
MAX_LINES lines, a line that is not `ddd[ -]text`, a multi-line reply whose code changes or
a bad CRAM-MD5 challenge raise `ProtocolError` with a 451 4.5.0 reply describing the
fault. An envelope the server cannot take gets a synthetic 5xx reply from
`check_envelope`; an unusable recipient address gets no RCPT line.
"""

import base64
import re

from . import frozen
from .errors import ProtocolError
from .reply import Reply
from .smtp_params import xtext_encode
from .smtp_path import BAD_SENDER, sendable

MAX_LINE = 2048   # octets of one reply line, line end included
MAX_LINES = 100   # lines of one reply

_LINE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?\Z", re.S)
_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: +|\Z)")
_NOTIFY = re.compile(r"[A-Z]+(?:,[A-Z]+)*\Z")


def remote_error(text):
    """Return the ProtocolError (451 4.5.0) for a server fault described by text."""
    return ProtocolError(reply=Reply(451, "4.5.0", text))


class ReplyReader:
    """The server's bytes, cut into complete replies."""

    __slots__ = ("buffer", "_lines", "_code")

    def __init__(self):
        self.buffer = bytearray()       # received, not yet part of a complete reply
        self._lines, self._code = [], None

    def read(self):
        """Return the next complete Reply, or None until more bytes arrive."""
        while True:
            end = self.buffer.find(b"\n", 0, MAX_LINE)
            if end < 0:
                if len(self.buffer) >= MAX_LINE:
                    raise remote_error("reply line longer than %d octets" % MAX_LINE)
                return None
            line = bytes(self.buffer[:end])
            del self.buffer[:end + 1]
            match = _LINE.match(line[:-1] if line.endswith(b"\r") else line)
            if match is None:
                raise remote_error("malformed reply line %r" % line[:60])
            code = int(match.group(1))
            if self._code is not None and code != self._code:
                raise remote_error("reply code changed within a reply (%d, %d)"
                                   % (self._code, code))
            self._code = code
            self._lines.append((match.group(3) or b"").decode("utf-8", "replace"))
            if len(self._lines) > MAX_LINES:
                raise remote_error("reply longer than %d lines" % MAX_LINES)
            if match.group(2) != b"-":
                return self._build()

    def _build(self):
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


NOT_BINARY = Reply(554, "5.6.3", "the server does not offer BINARYMIME with CHUNKING, "
                   "which this text as it is needs")


@frozen
class OutgoingEnvelope:
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
    binary: bool = False        # BODY=BINARYMIME: the text goes as it is, by BDAT only


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
    if not sendable(env.sender):
        return BAD_SENDER
    if env.binary and not ("BINARYMIME" in ext and "CHUNKING" in ext):
        return NOT_BINARY
    return None


def mail_command(env, ext):
    """Return the MAIL FROM line for an envelope and the server's extensions."""
    words = ["MAIL FROM:<%s>" % env.sender]
    if "SIZE" in ext and env.size > 0:
        words.append("SIZE=%d" % env.size)
    if env.binary:
        words.append("BODY=BINARYMIME")
    elif env.body8bit and "8BITMIME" in ext:
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
    if not address or not sendable(address):
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
    if b"." not in chunk:       # memchr: base64, the bulk of large mail, has no dots
        return chunk
    if at_line_start and chunk[:1] == b".":
        chunk = b"." + chunk
    return chunk.replace(b"\n.", b"\n..")


def _challenge(text):
    try:
        return base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (ValueError, UnicodeError):
        raise remote_error("malformed AUTH challenge") from None


def _plain(user, password):
    return b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + password), []


def _login(user, password):
    return b"AUTH LOGIN", [lambda text: base64.b64encode(user), lambda text: base64.b64encode(password)]


def _cram_md5(user, password):
    def answer(text):
        import hmac          # hashlib's OpenSSL: only for CRAM-MD5
        digest = hmac.new(password, _challenge(text), "md5").hexdigest().encode("ascii")
        return base64.b64encode(user + b" " + digest)
    return b"AUTH CRAM-MD5", [answer]


# mechanism -> f(user, password) -> (AUTH command line, [answer to each 334 challenge])
MECHANISMS = {"PLAIN": _plain, "LOGIN": _login, "CRAM-MD5": _cram_md5}
