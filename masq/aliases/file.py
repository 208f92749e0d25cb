"""Read the aliases file: parse `/etc/aliases` and `:include:` files into items per alias.

Owns the classic `/etc/aliases` syntax (`name: target, target`, continuation lines that
start with whitespace, `#` comment lines, double-quoted names and targets with backslash
escapes), reading an aliases or include file whole and unchanged, and `AliasFile`, which
parses the file again when it changes. An item is a NAME (to expand further), a FINAL
local user (`\\user`), an ADDRESS, an INCLUDE file, a PIPE (a command line, split later
with shlex, never given to a shell) or a FILE (a path appended to in mbox format). A final
`Target`, what expansion ends in, is LOCAL (a user), REMOTE (an address), PIPE or FILE.

Also reads the glob aliases file (masqmail's `globalias_file`): the same syntax, but each
name is a glob pattern (masq/mail/glob.py) matched against a whole address, and the lines
are kept in file order (`GlobAliases.match`: the first matching line wins).

Does not expand: recursive expansion with its limits, loops and the include-file rules is
`masq.aliases.expand`, which imports this module (never the other way).
Does not deliver, check that a user exists, run commands or read `.forward` files.

Hostile input: the aliases file is the administrator's, but an include file may be edited
by a list owner. Error texts about an include file name its path and line, never its
content (it might be /etc/shadow).

Fails: `load()` raises `AliasError(path, line, message)`; a missing file is no aliases (a
router often has none); an unreadable file, a syntax error or a file that changed while it
was read is an error, which the local agent turns into a deferral (4.3.0), never a bounce.
"""

import os
import re
import shlex
import stat

from masq.mail import address, glob
from masq.policy.local import fold

LOCAL, REMOTE, PIPE, FILE = "local", "remote", "pipe", "file"
NAME, FINAL, ADDRESS, INCLUDE = "name", "final", "address", "include"   # kinds before expansion
FILE_LIMIT = 16 << 20                      # bytes: an aliases or include file larger is an error
_CONTROL = {chr(c) for c in range(32)} | {"\x7f"}
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+=-]*(?:\.[A-Za-z0-9_+=-]+)*")  # common names


class AliasError(Exception):
    """A problem in an aliases or include file: `path`, `line` (0: the whole file), `message`."""

    def __init__(self, path, line, message):
        super().__init__("%s:%d: %s" % (path, line, message) if line else
                         "%s: %s" % (path, message))
        self.path = path
        self.line = line
        self.message = message


class Item:
    """One parsed right-hand-side item: its kind, value and where it was written."""

    __slots__ = ("kind", "value", "line")

    def __init__(self, kind, value, line):
        self.kind = kind
        self.value = value
        self.line = line


class Target:
    """A final delivery target: kind (LOCAL, REMOTE, PIPE, FILE), value, and its alias."""

    __slots__ = ("kind", "value", "alias", "glob")

    def __init__(self, kind, value, alias=None, glob=False):
        self.kind = kind
        self.value = value      # user name, address, command line or path
        self.alias = alias      # the alias name whose list held it (None: not aliased)
        self.glob = glob        # True: that alias is a line of the glob aliases file

    def __repr__(self):
        return "Target(%s, %r)" % (self.kind, self.value)


class Aliases:
    """The parsed aliases: name (lower-cased) -> (line, [Item]); `owner` is the file's uid;
    `spelled`: lower-cased name -> the name as written."""

    def __init__(self, path, entries=None, owner=None, warnings=(), spelled=None):
        self.path = path
        self.entries = entries or {}
        self.owner = owner
        self.warnings = list(warnings)
        self.spelled = spelled or {}

    def get(self, name, caseless=True):
        """Return the items of alias `name`, or None; caseless False: only as spelled
        (postmaster and MAILER-DAEMON in any case)."""
        key = name.lower()
        entry = self.entries.get(key)
        if entry is None or fold(self.spelled.get(key, key), caseless) != fold(name, caseless):
            return None
        return entry[1]

    def __contains__(self, name):
        return name.lower() in self.entries

    def names(self, caseless=True):
        """Return the alias names in file order, lower-cased (caseless) or as spelled."""
        return [fold(self.spelled.get(key, key), caseless) for key in self.entries]


class GlobAliases:
    """The parsed glob aliases: [(line, pattern, [Item])] in file order; `owner`."""

    def __init__(self, path, entries=(), owner=None):
        self.path = path
        self.entries = list(entries)
        self.owner = owner
        self.warnings = []

    def match(self, addr, caseless=True):
        """Return (line, pattern, items) of the first line matching the address text addr
        (local@domain), or None. A pattern with `@` matches the domain in any case and the
        local part as caseless says (postmaster: any case); one without `@` the whole text."""
        caseless = caseless or addr.rpartition("@")[0].lower() == "postmaster"
        for entry in self.entries:
            pattern = entry[1]
            if glob.match_address(pattern, addr, caseless) if "@" in pattern else \
                    glob.match_whole(pattern, addr, caseless):
                return entry
        return None


def read_file(path, missing_ok=False):
    """Return the text of an aliases or include file; raise AliasError if unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        if missing_ok:
            return None, None
        raise AliasError(path, 0, "file not found") from None
    except OSError as exc:
        raise AliasError(path, 0, "cannot open: %s" % exc.strerror) from None
    try:
        return _read_whole(path, fd), os.fstat(fd).st_uid
    finally:
        os.close(fd)


def _read_whole(path, fd):
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode):
        raise AliasError(path, 0, "not a regular file")
    if before.st_size > FILE_LIMIT:
        raise AliasError(path, 0, "larger than %d bytes" % FILE_LIMIT)
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        after, now = os.fstat(fd), os.stat(path)
    except OSError as exc:
        raise AliasError(path, 0, "cannot read: %s" % exc.strerror) from None
    if _stamp(before) != _stamp(after) or _stamp(after) != _stamp(now):
        raise AliasError(path, 0, "changed while being read (being rewritten?)")
    return _decode(path, b"".join(chunks))


def _stamp(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _decode(path, data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise AliasError(path, line, "not valid UTF-8") from None


def parse(text, path="<aliases>"):
    """Return (Aliases, errors) for the text of an aliases file; errors is a list."""
    entries, errors, warnings, spelled = {}, [], [], {}
    for line, logical in _logical_lines(text, path, errors):
        try:
            name, items = _entry(logical, path, line)
        except AliasError as exc:
            errors.append(exc)
            continue
        key = name.lower()
        if key in entries:
            warnings.append(AliasError(path, line, "duplicate alias %r ignored (first at line %d)"
                                       % (name, entries[key][0])))
            continue
        entries[key] = (line, items)
        spelled[key] = name
    return Aliases(path, entries, warnings=warnings, spelled=spelled), errors


def parse_globs(text, path="<globaliases>"):
    """Return (GlobAliases, errors) for the text of a glob aliases file."""
    entries, errors = [], []
    for line, logical in _logical_lines(text, path, errors):
        try:
            pieces = _split(logical, ":", path, line, limit=1)
            if len(pieces) != 2:
                raise AliasError(path, line, "missing ':' after the pattern")
            pattern, _ = _unquote(pieces[0])
            try:
                glob.check_address(pattern) if "@" in pattern else glob.check(pattern)
            except glob.GlobError as exc:
                raise AliasError(path, line, "bad pattern %r: %s" % (pattern, exc)) from None
            items = parse_items(pieces[1], path, line)
            if not items:
                raise AliasError(path, line, "pattern %r has no targets" % pattern)
        except AliasError as exc:
            errors.append(exc)
            continue
        entries.append((line, pattern, items))
    return GlobAliases(path, entries), errors


def _logical_lines(text, path, errors):
    """Yield (first line number, joined text) for each entry, joining continuation lines."""
    start, parts = 0, []
    for number, raw in enumerate(text.split("\n"), 1):
        raw = raw[:-1] if raw.endswith("\r") else raw
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in " \t":
            if parts:
                parts.append(stripped)
            else:
                errors.append(AliasError(path, number, "continuation line without an alias"))
            continue
        if parts:
            yield start, " ".join(parts)
        start, parts = number, [stripped]
    if parts:
        yield start, " ".join(parts)


def _split(text, sep, path, line, limit=-1):
    """Split text at sep outside double quotes (backslash escapes kept as written)."""
    if '"' not in text and "\\" not in text:
        return text.split(sep, limit)
    pieces, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted and limit != len(pieces):
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise AliasError(path, line, "unterminated quote")
    pieces.append("".join(current))
    return pieces


def _unquote(text):
    """Return text without surrounding double quotes and with backslash escapes resolved."""
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner, out, i = text[1:-1], [], 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                i += 1
            out.append(inner[i])
            i += 1
        return "".join(out), True
    return text, False


def _entry(logical, path, line):
    pieces = _split(logical, ":", path, line, limit=1)
    if len(pieces) != 2:
        raise AliasError(path, line, "missing ':' after the alias name")
    name, quoted = _unquote(pieces[0])
    if not name or _CONTROL & set(name) or (not quoted and (" " in name or "\t" in name)):
        raise AliasError(path, line, "bad alias name %r" % pieces[0].strip())
    if "@" in name:
        raise AliasError(path, line, "alias name %r must be a local part, not an address"
                         % name)
    items = parse_items(pieces[1], path, line)
    if not items:
        raise AliasError(path, line, "alias %r has no targets" % name)
    return name, items


def parse_items(text, path, line):
    """Return the Items of a comma-separated target list; raise AliasError on a bad one."""
    items, plain = [], _PLAIN.fullmatch
    for piece in _split(text, ",", path, line):
        piece = piece.strip()
        if piece:
            items.append(Item(NAME, piece, line) if plain(piece) else _item(piece, path, line))
    return items


def _item(piece, path, line):
    text, quoted = _unquote(piece)
    if "\0" in text or "\n" in text:
        raise AliasError(path, line, "control character in target")
    if text.startswith("|"):
        return Item(PIPE, _command(text[1:].strip(), path, line), line)
    if text.startswith("/"):
        if text.endswith("/"):
            raise AliasError(path, line, "target %r is a directory" % text)
        return Item(FILE, text, line)
    if text.lower().startswith(":include:"):
        target = text[9:].strip()
        if not target.startswith("/"):
            raise AliasError(path, line, "include file %r must be an absolute path" % target)
        return Item(INCLUDE, target, line)
    if text.startswith("\\"):
        return Item(FINAL, _local_name(text[1:], path, line, quoted), line)
    if text.startswith(":"):
        raise AliasError(path, line, "unknown target %r" % text)
    if quoted:
        return Item(NAME, _local_name(text, path, line, quoted), line)
    local, domain = _address(text, path, line)
    return Item(ADDRESS, (local, domain), line) if domain else Item(NAME, local, line)


def _command(command, path, line):
    if not command:
        raise AliasError(path, line, "empty command after '|'")
    try:
        shlex.split(command)
    except ValueError as exc:
        raise AliasError(path, line, "bad command %r: %s" % (command, exc)) from None
    return command


def _local_name(text, path, line, quoted):
    if not text or _CONTROL & set(text) or (not quoted and (" " in text or "\t" in text)):
        raise AliasError(path, line, "bad target %r" % text)
    if "@" in text:
        raise AliasError(path, line, "bad target %r (\\ takes a user name)" % text)
    return text


def _address(text, path, line):
    """Return (local, domain) of an unquoted target: an RFC 5322 addr-spec or a local part."""
    try:
        return address.split(text)
    except address.AddressError as exc:
        raise AliasError(path, line, "bad target %r: %s" % (text, exc.text)) from None


def load(path, parser=parse):
    """Return the Aliases (parser parse_globs: GlobAliases) in the file at path (none if it
    is missing); raise AliasError."""
    text, owner = read_file(path, missing_ok=True)
    if text is None:
        return parser("", path)[0]
    aliases, errors = parser(text, path)
    if errors:
        raise errors[0]
    aliases.owner = owner
    return aliases


class AliasFile:
    """The aliases file (parser parse_globs: the glob aliases file), parsed again whenever
    it changes on disk (checked on each get)."""

    def __init__(self, path, parser=parse):
        self.path = path
        self.parser = parser
        self._stamp = None
        self._aliases = None

    def get(self):
        """Return the current Aliases; raise AliasError while the file is unusable."""
        try:
            stamp = _stamp(os.stat(self.path))
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            raise AliasError(self.path, 0, "cannot stat: %s" % exc.strerror) from None
        if self._aliases is None or stamp != self._stamp or stamp is None:
            self._aliases, self._stamp = None, None
            self._aliases = load(self.path, self.parser)
            self._stamp = stamp
        return self._aliases


def read_include(path):
    """Return the Items of an include file: targets separated by commas or newlines.

    Errors name the line but never quote it: the file may not be what it claims to be.
    """
    text, _ = read_file(path)
    items = []
    for number, raw in enumerate(text.split("\n"), 1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            try:
                items.extend(parse_items(stripped, path, number))
            except AliasError:
                raise AliasError(path, number, "bad target") from None
    return items

