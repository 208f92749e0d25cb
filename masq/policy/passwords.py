"""Passwords of `config user` sections: hashing, verifying, and `masq passwd USER`.

Owns the stored form `$pbkdf2-sha256$ITERATIONS$SALT$HASH` (salt and hash in unpadded
base64), made with hashlib.pbkdf2_hmac. That is OpenSSL's (`_hashlib`, in python3-openssl,
which the OpenWrt package depends on); without it, Python 3.11 falls back to a deprecated
pure version and 3.12+ has none, so masq then computes PBKDF2 itself (`_pbkdf2`: RFC 8018
over hashlib's built-in sha256, slower but the same bytes). Verification is
constant-time (hmac.compare_digest) in both the hashed and the plain-text case. A plain
text password is accepted (check-config warns about it).

`masq passwd USER` reads the password (twice from a terminal, once from a pipe) and writes
the hash into the configuration file as a text edit that keeps every other line, comment
and blank as it was.
"""

import base64
import hashlib
import hmac
import os
import re
import sys

from masq.base import exits

PREFIX = "$pbkdf2-sha256$"
ITERATIONS = 20000   # a few tens of ms on a router CPU; stored with the hash


def _openssl_pbkdf2():
    """Return OpenSSL's pbkdf2_hmac, or None on a Python without _hashlib."""
    try:
        import _hashlib
    except ImportError:
        return None
    return getattr(_hashlib, "pbkdf2_hmac", None)


def _pbkdf2(password, salt, iterations):
    """PBKDF2-HMAC-SHA256 (RFC 8018), one 32-byte block, with hashlib's built-in sha256."""
    key = password if len(password) <= 64 else hashlib.sha256(password).digest()
    key = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def prf(data):
        i, o = inner.copy(), outer.copy()
        i.update(data)
        o.update(i.digest())
        return o.digest()

    block = prf(salt + b"\0\0\0\1")
    total = int.from_bytes(block, "big")
    for _ in range(iterations - 1):
        block = prf(block)
        total ^= int.from_bytes(block, "big")
    return total.to_bytes(32, "big")


def pbkdf2_sha256(password, salt, iterations):
    """Return PBKDF2-HMAC-SHA256 of password (bytes): OpenSSL's if at hand, else ours."""
    fast = _openssl_pbkdf2()
    if fast is not None:
        return fast("sha256", password, salt, iterations)
    return _pbkdf2(password, salt, iterations)


def hash_password(password, iterations=ITERATIONS, salt=None):
    """Return the stored form of password."""
    salt = salt or os.urandom(12)
    digest = pbkdf2_sha256(password.encode("utf-8"), salt, iterations)
    return "%s%d$%s$%s" % (PREFIX, iterations, _b64(salt), _b64(digest))


def is_hashed(stored):
    """Return True if stored is a hash rather than plain text."""
    return stored.startswith(PREFIX)


def verify(stored, password):
    """Return True if password (bytes or str) matches the stored form."""
    if isinstance(password, str):
        password = password.encode("utf-8")
    if not is_hashed(stored):
        return hmac.compare_digest(stored.encode("utf-8"), password)
    try:
        iterations, salt, digest = stored[len(PREFIX):].split("$")
        iterations = int(iterations)
        salt, digest = _unb64(salt), _unb64(digest)
    except (ValueError, TypeError):
        return False
    if not 1000 <= iterations <= 10_000_000:
        return False
    return hmac.compare_digest(pbkdf2_sha256(password, salt, iterations), digest)


def _b64(data):
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def set_in_config(text, user, stored):
    """Return config text with `config user 'USER'` holding password stored."""
    line = "\toption password '%s'\n" % stored
    lines = text.splitlines(True) if text else []
    header = re.compile(r"""^\s*config\s+user\s+(['"]?)%s\1\s*(#.*)?$""" % re.escape(user))
    start = next((i for i, l in enumerate(lines) if header.match(l)), None)
    if start is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return "".join(lines) + "\nconfig user '%s'\n%s" % (user, line)
    end = start + 1
    while end < len(lines) and not re.match(r"^\s*(config|c|package|p)\s", lines[end]):
        if re.match(r"^\s*(option|o)\s+password(\s|$)", lines[end]):
            lines[end] = line
            return "".join(lines)
        end += 1
    lines.insert(start + 1, line)
    return "".join(lines)


def command(user, config_path=None):
    """Run `masq passwd USER`: read a password, write its hash; return the exit status."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", user):
        raise exits.Failure("user name %r: use letters, digits and _ only" % user,
                            exits.USAGE)
    password = _read_password()
    stored = hash_password(password)
    from masq.config.load import config_path as find_config
    path = find_config(config_path)
    if path is None:
        sys.stdout.write("config user '%s'\n\toption password '%s'\n" % (user, stored))
        return exits.OK
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise exits.Failure("%s: %s" % (path, exc.strerror), exits.CONFIG) from None
    from masq.config.uci import write_file
    write_file(path, set_in_config(text, user, stored))
    sys.stdout.write("password for %s written to %s\n" % (user, path))
    return exits.OK


def _read_password():
    if sys.stdin.isatty():
        import getpass
        first = getpass.getpass("New password: ")
        if first != getpass.getpass("Again: "):
            raise exits.Failure("the passwords differ", exits.DATAERR)
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if not first:
        raise exits.Failure("empty password", exits.DATAERR)
    return first
