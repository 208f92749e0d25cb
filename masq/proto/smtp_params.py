"""MAIL FROM / RCPT TO argument parsing: split the <path> off, check and decode ESMTP parameters.

Owns: the syntax of `FROM:<path> params` and `TO:<path> params` (RFC 5321 §4.1.2), the
parameters masq advertises (SIZE RFC 1870, BODY RFC 6152 and RFC 3030's BINARYMIME, SMTPUTF8 RFC 6531, RET/ENVID/
NOTIFY/ORCPT RFC 3461, AUTH RFC 4954) and xtext (RFC 3461 §4).
Does not: parse the address inside the brackets (that is `masq/mail/address.py`'s job); the path
is returned as the raw text between `<` and `>`.

All input is hostile. Values are bounded (`MAX_VALUE`), xtext is decoded and refused if the
result holds a control character (CR, LF, NUL...), so nothing newline-bearing can reach the
queue file. Every fault raises `ProtocolError` carrying the reply to send:
501 5.5.4 bad syntax or duplicate, 555 5.5.4 unknown keyword, 552 5.3.4 SIZE over the limit,
553 5.6.7 non-ASCII address without SMTPUTF8.
"""

import re

from . import smtp_server_replies as R
from .errors import ProtocolError
from .reply import Reply

MAX_VALUE = 500  # octets of one raw parameter value (ORCPT may reach 500 by RFC 3461)
MAX_ENVID = 100  # RFC 3461 §4.4
MAX_SIZE_DIGITS = 20

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_VALUE = re.compile(r"[!-<>-~]+\Z")  # printable ASCII except "=" (RFC 5321 esmtp-value)
_XTEXT = re.compile(rb"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*\Z")
_XCHAR = re.compile(rb"\+([0-9A-Fa-f]{2})")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_NOTIFY_WORDS = ("SUCCESS", "FAILURE", "DELAY")

MAIL_USAGE = Reply(501, "5.5.4", "Usage: MAIL FROM:<address>")
RCPT_USAGE = Reply(501, "5.5.4", "Usage: RCPT TO:<address>")
NEED_SMTPUTF8 = Reply(553, "5.6.7", "A non-ASCII address needs SMTPUTF8 on MAIL FROM")


def _bad(keyword):
    return ProtocolError(reply=Reply(501, "5.5.4", "Malformed %s parameter" % keyword))


def xtext_decode(value, keyword="xtext"):
    """Decode RFC 3461 xtext to str; refuse bad syntax, bad UTF-8 and control characters."""
    if isinstance(value, str):
        if not value.isascii():
            raise _bad(keyword)
        value = value.encode("ascii")
    raw = bytes(value)
    if len(raw) > MAX_VALUE or not _XTEXT.match(raw):
        raise _bad(keyword)
    decoded = _XCHAR.sub(lambda m: bytes((int(m.group(1), 16),)), raw)
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(keyword) from None
    if any(c < " " or c == "\x7f" for c in text):
        raise _bad(keyword)
    return text


def xtext_encode(text):
    """Encode str as RFC 3461 xtext: UTF-8 octets, "+XX" outside "!"-"~" and for "+", "="."""
    out = []
    for octet in text.encode("utf-8"):
        if 0x21 <= octet <= 0x7E and octet not in (0x2B, 0x3D):
            out.append(chr(octet))
        else:
            out.append("+%02X" % octet)
    return "".join(out)


def split_path(text, usage):
    """Split `<path> rest` into (path, rest); quoted strings may hold '>' and backslashes."""
    if not text.startswith("<"):
        raise ProtocolError(reply=usage)
    quoted = escaped = False
    for i in range(1, len(text)):
        c = text[i]
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            rest = text[i + 1:]
            if rest and not rest.startswith(" "):
                raise ProtocolError(reply=usage)
            return text[1:i], rest.strip(" ")
    raise ProtocolError(reply=usage)


def split_params(text):
    """Split `KEY=value KEY ...` into a list of (KEYWORD, value or None); check the syntax."""
    seen, out = set(), []
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not _KEYWORD.match(key) or (eq and not _VALUE.match(value)):
            raise ProtocolError(reply=Reply(501, "5.5.4", "Malformed parameter"))
        key = key.upper()
        if len(value) > MAX_VALUE:
            raise _bad(key)
        if key in seen:
            raise ProtocolError(reply=Reply(501, "5.5.4", "%s parameter given twice" % key))
        seen.add(key)
        out.append((key, value if eq else None))
    return out


def _size(value, limits):
    if (value is None or not (value.isascii() and value.isdigit())
            or len(value) > MAX_SIZE_DIGITS):
        raise _bad("SIZE")
    size = int(value)
    if size > limits["max_size"]:
        raise ProtocolError(reply=R.SIZE_EXCEEDED)
    return size


def _choice(keyword, allowed):
    def check(value, limits):
        if value is None or value.upper() not in allowed:
            raise _bad(keyword)
        return value.upper()
    return check


def _body(value, limits):
    """BODY=7BIT or 8BITMIME; BINARYMIME only where it is offered (RFC 3030)."""
    word = (value or "").upper()
    if word in ("7BIT", "8BITMIME") or (word == "BINARYMIME" and limits.get("binarymime")):
        return word
    raise _bad("BODY")


def _flag(value, limits):
    if value is not None:
        raise _bad("SMTPUTF8")
    return True


def _envid(value, limits):
    text = xtext_decode(value or "", "ENVID")
    if not text or len(text) > MAX_ENVID:
        raise _bad("ENVID")
    return text


def _auth(value, limits):
    if value == "<>":
        return value
    text = xtext_decode(value or "", "AUTH")
    if not text:
        raise _bad("AUTH")
    return text


def _notify(value, limits):
    words = (value or "").upper().split(",")
    if words == ["NEVER"]:
        return ("NEVER",)
    if len(set(words)) != len(words) or not all(w in _NOTIFY_WORDS for w in words):
        raise _bad("NOTIFY")
    return tuple(words)


def _orcpt(value, limits):
    addr_type, semi, xtext = (value or "").partition(";")
    if not semi or not _ADDR_TYPE.match(addr_type):
        raise _bad("ORCPT")
    text = xtext_decode(xtext, "ORCPT")
    if not text:
        raise _bad("ORCPT")
    return (addr_type.lower(), text)


MAIL_PARAMS = {
    "SIZE": _size,
    "BODY": _body,
    "SMTPUTF8": _flag,
    "RET": _choice("RET", ("FULL", "HDRS")),
    "ENVID": _envid,
    "AUTH": _auth,
}
RCPT_PARAMS = {"NOTIFY": _notify, "ORCPT": _orcpt}


def _check(pairs, table, limits):
    params = {}
    for key, value in pairs:
        checker = table.get(key)
        if checker is None:
            raise ProtocolError(reply=Reply(555, "5.5.4", "Parameter %s not supported" % key))
        params[key] = checker(value, limits)
    return params


def _parse(arg, prefix, usage, table, limits):
    if arg[:len(prefix)].upper() != prefix:
        raise ProtocolError(reply=usage)
    path, rest = split_path(arg[len(prefix):].lstrip(" "), usage)
    if any(c < " " or c == "\x7f" for c in path):
        raise ProtocolError(reply=usage)
    return path, _check(split_params(rest), table, limits)


def parse_mail(arg, max_size, binarymime=False):
    """Parse `FROM:<path> params` into (path, params); params maps KEYWORD to checked value.
    `binarymime`: BODY=BINARYMIME is offered (else it is malformed, 501 5.5.4)."""
    path, params = _parse(arg, "FROM:", MAIL_USAGE, MAIL_PARAMS,
                          {"max_size": max_size, "binarymime": binarymime})
    if not path.isascii() and "SMTPUTF8" not in params:
        raise ProtocolError(reply=NEED_SMTPUTF8)
    return path, params


def parse_rcpt(arg, smtputf8):
    """Parse `TO:<path> params` into (path, params); `smtputf8` tells if MAIL declared it."""
    path, params = _parse(arg, "TO:", RCPT_USAGE, RCPT_PARAMS, {})
    if not path:
        raise ProtocolError(reply=RCPT_USAGE)
    if not path.isascii() and not smtputf8:
        raise ProtocolError(reply=NEED_SMTPUTF8)
    return path, params
