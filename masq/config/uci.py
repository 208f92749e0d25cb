"""UCI files: read the OpenWrt configuration syntax exactly as libuci does, and write it back.

Owns the file grammar (libuci's, exactly: keywords, quoting, escapes) and nothing above it: `parse`
turns text into untyped sections (`RawSection`, options as strings or lists of strings),
`dump` turns sections into the text `uci commit` writes, `write_file` replaces a file
atomically. What the options mean is schema.py's business.

The parser is a port of libuci's tokenizer (file.c), buffer model included: a command ends
at the end of its line unless a backslash-newline or an open quote pulls in the next line;
an unquoted `#` ends the token and the line, even mid-word. Deliberate differences, each
an error where libuci would quietly do something surprising:
  - an unquoted `;` (libuci ends the command there and, depending on escapes earlier in
    the line, loses or runs the rest of the line);
  - a NUL character (libuci's C strings would cut the line there);
  - line numbers name the line where the offending token starts (for an unterminated
    quote: where the quote opened), not the line libuci had read up to.
Anonymous sections keep `name` None and get libuci's generated key `cfgNNhhhh` (NN: the
section's ordinal in the file, named sections counted too; hhhh: djb2 hash of the type,
e.g. `cfg030f15` for OpenWrt's default `config device`), as `uci -X show` prints them.

Hostile input: the file is written by an administrator or LuCI, but may be garbage; every
defect raises ConfigError(path, line, message), strict like libuci's default (one bad line
rejects the file). Nothing is evaluated; values are plain strings.
"""

import os

MAX_FILE = 1 << 20                         # a configuration is a few KiB; refuse more
SPACE = " \t\n\r\v\f"                     # C isspace() in the C locale
_NOT_PLAIN = frozenset("'\"#;\\ \t\n\r\v\f")   # no regex: `sendmail` never imports re
KEYWORDS = {"package": "package", "p": "package", "config": "config", "c": "config",
            "option": "option", "o": "option", "list": "list", "l": "list"}


class ConfigError(Exception):
    """A configuration file that cannot be used: `PATH:LINE: message` (line 0: no line)."""

    def __init__(self, path, line, message):
        super().__init__(path, line, message)
        self.path = path
        self.line = line
        self.message = message

    def __str__(self):
        if self.line:
            return "%s:%d: %s" % (self.path, self.line, self.message)
        return "%s: %s" % (self.path, self.message)


class RawOption:
    """One option as the file left it: a string, or a list of strings (`list` lines)."""

    __slots__ = ("value", "line", "item_lines")

    def __init__(self, value, line, item_lines=()):
        self.value = value            # str, or list of str
        self.line = line              # line of the statement that last changed it
        self.item_lines = list(item_lines)  # the line of each item ([line] for a scalar)

    def is_list(self):
        """Return True if the option is a list."""
        return isinstance(self.value, list)

    def __repr__(self):
        return "RawOption(%r, line=%d)" % (self.value, self.line)


class RawSection:
    """One `config TYPE [NAME]` section with its options in file order."""

    __slots__ = ("type", "name", "key", "line", "options")

    def __init__(self, type, name, line, key=None):
        self.type = type
        self.name = name              # None for an anonymous section
        self.key = key or name        # how libuci calls it: the name, or cfgNNhhhh
        self.line = line              # line of its (first) config statement
        self.options = {}             # name -> RawOption, in file order

    def __repr__(self):
        return "RawSection(%r, %r, line=%d, %r)" % (
            self.type, self.name, self.line, self.options)


def is_name(text):
    """Return True if text is a valid section or option name: [A-Za-z0-9_]+."""
    return text.isascii() and text.replace("_", "a").isalnum()


def is_type(text):
    """Return True if text is a valid section type: printable ASCII 0x21-0x7E."""
    return text.isascii() and text.isprintable() and text != "" and " " not in text


def _is_package(text):
    return is_name(text.replace("-", "_"))


def _is_plain_type(text):
    """Return True if libuci's unquoted way of writing a type reads back the same."""
    return is_name(text.replace("-", "_").replace(".", "_"))


def anonymous_key(type, ordinal):
    """Return libuci's generated name for an anonymous section, the ordinal-th in its file."""
    h = 5381
    for byte in type.encode("ascii"):
        h = (h * 33 + byte) & 0xFFFFFFFF
    return "cfg%02x%04x" % (ordinal, h & 0xFFFF)


def parse(text, path="<string>"):
    """Parse UCI text into a list of RawSection in file order; raise ConfigError."""
    nul = text.find("\0")
    if nul >= 0:
        raise ConfigError(path, text.count("\n", 0, nul) + 1, "NUL character in file")
    return _Parser(text, path).run()


class _Parser:
    """libuci's parse context: a buffer of one or more lines, a position in it."""

    def __init__(self, text, path):
        self.text = text
        self.path = path
        self.pos = self.end = self.stop = 0    # stop < end after an unquoted '#'
        self.sections = []
        self.by_key = {}
        self.section = None

    def run(self):
        while self.getln(self.end):
            self.parse_line()
        return self.sections

    def getln(self, at):
        """Make the buffer continue at `at` with the next line; False at end of file."""
        if at >= len(self.text):
            self.pos = self.stop = self.end = len(self.text)
            return False
        newline = self.text.find("\n", at)
        self.pos = at
        self.end = self.stop = len(self.text) if newline < 0 else newline + 1
        return True

    def char(self):
        return self.text[self.pos] if self.pos < self.stop else ""

    def line_at(self, pos):
        return self.text.count("\n", 0, pos) + 1

    def error(self, message, pos=None):
        raise ConfigError(self.path, self.line_at(self.pos if pos is None else pos), message)

    def skip_space(self):
        while self.pos < self.stop and self.text[self.pos] in SPACE:
            self.pos += 1

    def parse_line(self):
        """Run the commands in the buffer (libuci: uci_parse_line)."""
        self.skip_space()
        while True:
            while self.pos < self.stop and self.text[self.pos] in " \t":
                self.pos += 1
            if self.pos >= self.stop or self.text[self.pos] == "#":
                return
            start, end = self.pos, self.find_any(" \t", self.pos)   # strtok(" \t")
            word = self.text[start:end]
            command = KEYWORDS.get(word)
            if command is None:
                bare = word.strip(SPACE)             # libuci rejects `config` + newline too
                self.error("insufficient arguments" if bare in KEYWORDS else
                           "invalid command" + (" '%s'" % bare if bare else ""))
            if end >= self.stop:
                self.error("%s without name" % ("option" if command == "list" else command))
            self.pos = end + 1
            getattr(self, "do_" + command)(self.line_at(start))

    def find_any(self, chars, pos):
        """Return the index of the first of chars at or after pos in the buffer, or its stop."""
        found = [i for i in (self.text.find(c, pos, self.stop) for c in chars) if i >= 0]
        return min(found, default=self.stop)

    def do_package(self, line):
        # Names the file's package in `uci import` streams; a file loaded by path ignores it.
        name, at = self.arg()
        if not name:
            self.error("insufficient arguments", at)
        if not _is_package(name):
            self.error("invalid character in name field", at)
        self.assert_eol()

    def do_config(self, line):
        kind, at = self.arg()
        if not kind:
            self.error("insufficient arguments", at)
        if not is_type(kind):
            self.error("invalid character in type field", at)
        name, at = self.arg()
        if name and not is_name(name):
            self.error("invalid character in name field", at)
        self.assert_eol()
        self.open_section(kind, name, line)

    def do_option(self, line):
        self.option(line, _set)

    def do_list(self, line):
        self.option(line, _append)

    def option(self, line, store):
        if self.section is None:
            self.error("option/list command found before the first section")
        name, at = self.arg()
        if not name:
            self.error("insufficient arguments", at)
        if not is_name(name):
            self.error("invalid character in name field", at)
        value, _ = self.arg()
        self.assert_eol()
        store(self.section.options, name, value, line)

    def assert_eol(self):
        extra, at = self.arg()
        if extra:
            self.error("too many arguments", at)

    def open_section(self, kind, name, line):
        section = self.by_key.get(name) if name else None
        if section is not None:
            if section.type != kind:
                raise ConfigError(self.path, line, "section of different type overwrites "
                                  "prior section with same name")
            self.section = section            # reopened: what follows merges into it
            return
        key = None if name else anonymous_key(kind, len(self.sections) + 1)
        section = RawSection(kind, name or None, line, key)
        self.sections.append(section)
        self.by_key.setdefault(section.key, section)
        self.section = section

    def arg(self):
        """Skip blanks and read the next argument: (value, position where it starts)."""
        self.skip_space()
        start = self.pos
        return self.token(), start

    def token(self):
        """Read adjacent segments up to unquoted blank (libuci: parse_str)."""
        out = []
        while True:
            c = self.char()
            if c == "'":
                out.append(self.single_quoted())
            elif c == '"':
                out.append(self.double_quoted())
            elif c == "#":
                self.stop = self.pos           # the rest of the line is a comment
                break
            elif not c:
                break
            elif c == ";":
                self.error("unquoted ';' (libuci silently drops what follows it); "
                           "quote the value")
            elif c == "\\":
                if self.backslash():
                    out.append(self.text[self.pos])
                    self.pos += 1
            else:
                end = self.pos
                while end < self.stop and self.text[end] not in _NOT_PLAIN:
                    end += 1
                out.append(self.text[self.pos:end])
                self.pos = end
            c = self.char()
            if not c or c in SPACE:
                break
        if self.char():
            self.pos += 1                      # the blank that ended the token
        return "".join(out)

    def backslash(self):
        """Step over a backslash: False if it joined the next line, True if a literal follows."""
        self.pos += 1
        c = self.char()
        if not c or c == "\n" or (c == "\r" and self.text[self.pos + 1:self.stop] == "\n"):
            self.getln(self.end)
            return False
        return True

    def single_quoted(self):
        """Read a '...' segment: everything up to the next ' is literal, newlines too."""
        opened = self.pos
        begin = self.pos = self.pos + 1
        while True:
            close = self.text.find("'", self.pos, self.stop)
            if close >= 0:
                self.pos = close + 1
                return self.text[begin:close]
            if not self.getln(self.end):
                self.error("EOF with unterminated '", opened)

    def double_quoted(self):
        """Read a "..." segment: a backslash takes the next character literally."""
        opened = self.pos
        self.pos += 1
        out = []
        while True:
            c = self.char()
            if c == '"':
                self.pos += 1
                return "".join(out)
            if not c:
                if not self.getln(self.end):
                    self.error('EOF with unterminated "', opened)
            elif c == "\\":
                if self.backslash():
                    out.append(self.text[self.pos])
                    self.pos += 1
            else:
                end = self.find_any('"\\', self.pos)
                out.append(self.text[self.pos:end])
                self.pos = end


def _set(options, name, value, line):
    """Apply `option NAME VALUE`: the last wins in place; an empty value removes the option."""
    if value == "":
        options.pop(name, None)
        return
    old = options.get(name)
    if old is None:
        options[name] = RawOption(value, line, [line])
    else:
        old.value, old.line, old.item_lines = value, line, [line]


def _append(options, name, value, line):
    """Apply `list NAME VALUE`: append; an earlier scalar becomes the list's first item."""
    old = options.get(name)
    if old is None:
        options[name] = RawOption([value], line, [line])
    elif old.is_list():
        old.value.append(value)
        old.item_lines.append(line)
        old.line = line
    else:
        old.value = [old.value, value]
        old.item_lines = [old.line, line]
        old.line = line


def quote(value):
    """Return value single-quoted as libuci writes it: ' becomes '\\''."""
    return "'" + value.replace("'", "'\\''") + "'"


def dump(sections):
    """Return sections as UCI text in the format `uci commit` writes."""
    out = []
    for section in sections:
        if not is_type(section.type):
            raise ValueError("invalid section type %r" % section.type)
        if section.name is not None and not is_name(section.name):
            raise ValueError("invalid section name %r" % section.name)
        kind = section.type if _is_plain_type(section.type) else quote(section.type)
        name = "" if section.name is None else " " + quote(section.name)
        out.append("\nconfig %s%s\n" % (kind, name))
        for option_name, option in section.options.items():
            if not is_name(option_name):
                raise ValueError("invalid option name %r" % option_name)
            if option.is_list():
                out.extend("\tlist %s %s\n" % (option_name, quote(v)) for v in option.value)
            elif option.value != "":              # an empty option is an unset one
                out.append("\toption %s %s\n" % (option_name, quote(option.value)))
    out.append("\n")
    return "".join(out)


def read_file(path):
    """Return the text of a configuration file; raise ConfigError(path, 0, reason)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise ConfigError(path, 0, "cannot read: %s" % (e.strerror or e)) from None
    if len(data) > MAX_FILE:                # /dev/zero, a log file named by mistake
        raise ConfigError(path, 0, "larger than %d KiB: not a configuration file"
                          % (MAX_FILE >> 10))
    return data.decode("utf-8", "surrogateescape")


def write_file(path, text):
    """Replace path by text atomically: temp file beside it, fsync, rename, fsync the dir."""
    path = os.path.realpath(path)          # as `uci commit`: replace a symlink's target
    directory = os.path.dirname(path)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o600                        # routes hold passwords
    tmp = os.path.join(directory, ".%s.masq-%d" % (os.path.basename(path), os.getpid()))
    _unlink(tmp)                            # a leftover from a crashed run with our pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)     # whatever the umask
            f.write(text.encode("utf-8", "surrogateescape"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    dirfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
