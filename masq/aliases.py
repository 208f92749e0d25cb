"""Read the aliases file and expand a local part into its final delivery targets.

Owns the classic `/etc/aliases` syntax (`name: target, target`, continuation lines that
start with whitespace, `#` comment lines, double-quoted names and targets with backslash
escapes), `:include:` files, and recursive expansion with its limits. A final target is
`local` (a user), `remote` (an address to forward to), `pipe` (a command line, split later
with shlex, never given to a shell) or `file` (a path appended to in mbox format).

Does not deliver, check that a user exists, run commands or read `.forward` files.

Hostile input: the aliases file is the administrator's, but a recipient's local part comes
from a peer, and an include file may be edited by a list owner. Include files may hold
addresses only: a `|command`, a `/file` or a nested `:include:` in an include file fails
the expansion (5.7.1), the way Postfix refuses commands in includes by default. Error texts
about an include file name its path and line, never its content (it might be /etc/shadow).

Fails: `load()` raises `AliasError(path, line, message)`; a missing file is no aliases (a
router often has none); an unreadable file, a syntax error or a file that changed while it
was read is an error, which the local agent turns into a deferral (4.3.0), never a bounce.
`expand()` never raises: its `Expansion` carries the targets or a status and a text:
a loop (`a: b`, `b: a`, and `a: a`; write `\\a` to keep a copy) is 5.4.6, nesting deeper
than the depth limit is 5.4.6, more distinct addresses than the size limit is 5.3.5, an
unreadable include file is 4.3.0. Duplicates are collapsed, and each alias is expanded
once, so an alias bomb costs time linear in the file, not in its expansion.
"""

import os
import re
import shlex
import stat

from masq import address

LOCAL, REMOTE, PIPE, FILE = "local", "remote", "pipe", "file"
_NAME, _FINAL, _ADDRESS, _INCLUDE = "name", "final", "address", "include"
ALWAYS = ("postmaster", "mailer-daemon")   # resolvable even when not aliased: to root
DEPTH_LIMIT = 20
SIZE_LIMIT = 1000
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

    __slots__ = ("kind", "value", "alias")

    def __init__(self, kind, value, alias=None):
        self.kind = kind
        self.value = value      # user name, address, command line or path
        self.alias = alias      # the alias name whose list held it (None: not aliased)

    def __repr__(self):
        return "Target(%s, %r)" % (self.kind, self.value)


class Aliases:
    """The parsed aliases: name (lower-cased) -> (line, [Item]); `owner` is the file's uid."""

    def __init__(self, path, entries=None, owner=None, warnings=()):
        self.path = path
        self.entries = entries or {}
        self.owner = owner
        self.warnings = list(warnings)

    def get(self, name):
        """Return the items of alias `name` (any case), or None."""
        entry = self.entries.get(name.lower())
        return entry[1] if entry else None

    def __contains__(self, name):
        return name.lower() in self.entries

    def names(self):
        """Return the alias names, lower-cased, in file order."""
        return list(self.entries)


class Expansion:
    """What a local part expands to: `targets`, or a failure `status` and `text`."""

    __slots__ = ("targets", "status", "text")

    def __init__(self, targets=(), status=None, text=None):
        self.targets = list(targets)
        self.status = status
        self.text = text

    @property
    def failed(self):
        """Return True if the expansion failed (then targets is empty)."""
        return self.status is not None

    @property
    def temporary(self):
        """Return True for a failure worth retrying (4.x.x)."""
        return bool(self.status) and self.status.startswith("4")

    def __repr__(self):
        if self.failed:
            return "Expansion(%s %s)" % (self.status, self.text)
        return "Expansion(%r)" % (self.targets,)


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
    entries, errors, warnings = {}, [], []
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
    return Aliases(path, entries, warnings=warnings), errors


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
            items.append(Item(_NAME, piece, line) if plain(piece) else _item(piece, path, line))
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
        return Item(_INCLUDE, target, line)
    if text.startswith("\\"):
        return Item(_FINAL, _local_name(text[1:], path, line, quoted), line)
    if text.startswith(":"):
        raise AliasError(path, line, "unknown target %r" % text)
    if quoted:
        return Item(_NAME, _local_name(text, path, line, quoted), line)
    local, domain = _address(text, path, line)
    return Item(_ADDRESS, (local, domain), line) if domain else Item(_NAME, local, line)


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


def load(path):
    """Return the Aliases in the file at path (none if it is missing); raise AliasError."""
    text, owner = read_file(path, missing_ok=True)
    if text is None:
        return Aliases(path)
    aliases, errors = parse(text, path)
    if errors:
        raise errors[0]
    aliases.owner = owner
    return aliases


class AliasFile:
    """The aliases file, parsed again whenever it changes on disk (checked on each get)."""

    def __init__(self, path):
        self.path = path
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
            self._aliases = load(self.path)
            self._stamp = stamp
        return self._aliases


class _Fail(Exception):
    def __init__(self, status, text):
        super().__init__(text)
        self.status = status
        self.text = text


def _chain(names, last):
    text = " -> ".join(list(names) + [last])
    return text if len(text) <= 200 else text[:97] + " ... " + text[-97:]


class _Expander:
    """One expansion: the results so far, what was expanded, and the limits."""

    def __init__(self, aliases, local_domains, depth_limit, size_limit, read_include):
        self.aliases = aliases
        self.local_domains = {d.lower() for d in local_domains}
        self.depth_limit = depth_limit
        self.size_limit = size_limit
        self.read_include = read_include
        self.results = {}
        self.expanded = set()

    def name(self, name, ancestors, alias):
        key = name.lower()
        if key in ancestors:
            raise _Fail("5.4.6", "mail forwarding loop: " + _chain(ancestors, key))
        items = self.aliases.get(key) if self.aliases is not None else None
        if items is None and key in ALWAYS:
            items = [Item(_NAME, "root", 0)]
        if items is None:
            self.final(LOCAL, name, alias)
            return
        if key in self.expanded:
            return                                  # a duplicate: expanded already
        self.enter(key, ancestors)
        for item in items:
            self.item(item, ancestors + (key,), key, None)

    def enter(self, key, ancestors):
        if len(ancestors) >= self.depth_limit:
            raise _Fail("5.4.6", "aliases nested deeper than %d levels: %s"
                        % (self.depth_limit, _chain(ancestors[:3] + ("...",), key)))
        self.expanded.add(key)
        if len(self.expanded) > self.size_limit:
            raise _Fail("5.3.5", "alias expansion too large: over %d aliases and include "
                        "files" % self.size_limit)

    def item(self, item, ancestors, alias, include):
        kind, value = item.kind, item.value
        if include is not None and kind in (PIPE, FILE, _INCLUDE):
            raise _Fail("5.7.1", "include file %s line %d: commands, files and includes are "
                        "not allowed in an include file" % (include, item.line))
        if kind == _NAME:
            self.name(value, ancestors, alias)
        elif kind == _FINAL:
            self.final(LOCAL, value, alias)
        elif kind == _ADDRESS:
            self.address(value, ancestors, alias)
        elif kind == _INCLUDE:
            self.include(value, ancestors, alias)
        else:
            self.final(kind, value, alias)

    def address(self, pair, ancestors, alias):
        local, domain = pair
        if not domain or domain in self.local_domains:
            self.name(local, ancestors, alias)
        else:
            self.final(REMOTE, "%s@%s" % (address.quote_local(local), domain), alias)

    def include(self, path, ancestors, alias):
        key = ":include:" + path
        if key in ancestors:
            raise _Fail("5.4.6", "mail forwarding loop: " + _chain(ancestors, key))
        if key in self.expanded:
            return
        self.enter(key, ancestors)
        try:
            items = self.read_include(path)
        except AliasError as exc:
            where = " line %d" % exc.line if exc.line else ""
            raise _Fail("4.3.0", "include file %s%s: %s" % (path, where, exc.message)) from None
        for item in items:
            self.item(item, ancestors + (key,), alias, path)

    def final(self, kind, value, alias):
        key = (kind, value.lower() if kind in (LOCAL, REMOTE) else value)
        if key in self.results:
            return
        self.results[key] = Target(kind, value, alias)
        if len(self.results) > self.size_limit:
            raise _Fail("5.3.5", "alias expansion too large: over %d addresses"
                        % self.size_limit)


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


def expand(aliases, local_part, local_domains=(), depth_limit=DEPTH_LIMIT,
           size_limit=SIZE_LIMIT, read_include=read_include):
    """Return the Expansion of local_part through aliases (an Aliases, or None for none)."""
    expander = _Expander(aliases, local_domains, depth_limit, size_limit, read_include)
    try:
        expander.name(local_part, (), None)
    except _Fail as fail:
        return Expansion(status=fail.status, text=fail.text)
    except RecursionError:
        return Expansion(status="5.4.6", text="aliases nested too deeply")
    return Expansion(expander.results.values())


def check(path, local_domains=()):
    """Return every problem in the aliases file at path (for newaliases / -bi), in order."""
    try:
        text, _ = read_file(path)
    except AliasError as exc:
        return [exc]
    aliases, errors = parse(text, path)
    problems = errors + aliases.warnings
    for name, (line, _) in aliases.entries.items():
        result = expand(aliases, name, local_domains)
        if result.failed:
            problems.append(AliasError(path, line, "alias %r: %s %s"
                                       % (name, result.status, result.text)))
    return sorted(problems, key=lambda problem: problem.line)
