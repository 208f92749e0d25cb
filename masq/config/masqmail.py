"""masqmail's configuration syntax: read masqmail.conf, route files and get files.

Owns the grammar of masqmail 1.0's conf.c as its documentation describes it (the same
for the main file, route files and 0.2.x get files): one `name = value` per line, spaces
optional, `#` starting a comment; an unquoted value holds only letters, digits and
`@ / - _ . : ;`, anything else (or a value over several lines) is double-quoted, and
inside quotes `\\` escapes the next character. Names are letters, digits, `_`, `.` and
`-` (`query_routes.NAME`, `online_routes.NAME`, `get.NAME`). Also owns how a value is
read as masqmail reads it: a boolean (a value that starts with `yes`, `on` or `true`,
or `no`, `off` or `false`, in any case), a `;` list, and a list whose items starting with `/` are files
spliced in line by line (`#` comments allowed) - masqmail does that for every list option
but `permanent_routes` and `query_routes.*`.

Does not know what an option means or what masq makes of it (masq.config.masqmail_import
does). Reads only the files it is given and the files a list names.

Hostile input: a file of the administrator's, possibly from an older masqmail. Every
defect raises ConfigError(path, line, message) naming the file and the line; nothing is
evaluated.
"""

from masq.config.uci import ConfigError, read_file

__all__ = ["ConfigError", "Setting", "read", "parse", "boolean", "items", "spliced"]

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@/-_.:;")
_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_BLANK = " \t\r"
TRUE = ("yes", "on", "true")
FALSE = ("no", "off", "false")


class Setting:
    """One `name = value` of a masqmail file: its text, and where it stands."""

    __slots__ = ("name", "value", "path", "line")

    def __init__(self, name, value, path, line):
        self.name = name
        self.value = value          # the value with quotes and escapes removed
        self.path = path
        self.line = line

    def where(self):
        """Return `PATH:LINE` of this setting."""
        return "%s:%d" % (self.path, self.line)

    def error(self, message):
        """Return a ConfigError at this setting's line."""
        return ConfigError(self.path, self.line, message)

    def __repr__(self):
        return "Setting(%r, %r, %s)" % (self.name, self.value, self.where())


def read(path):
    """Return the settings of the masqmail file at path, in file order; raise ConfigError."""
    return parse(read_file(path), path)


def parse(text, path="<string>"):
    """Return the settings of masqmail configuration text, in file order."""
    settings, at, line = [], 0, 1
    while at < len(text):
        at = _skip_blanks(text, at)
        if at >= len(text):
            break
        char = text[at]
        if char == "\n":
            at, line = at + 1, line + 1
            continue
        if char == "#":
            at = _end_of_line(text, at)
            continue
        setting, at, line = _statement(text, at, line, path)
        settings.append(setting)
    return settings


def _skip_blanks(text, at):
    while at < len(text) and text[at] in _BLANK:
        at += 1
    return at


def _end_of_line(text, at):
    end = text.find("\n", at)
    return len(text) if end < 0 else end


def _statement(text, at, line, path):
    """Read `name = value` from at; return (Setting, where the line ends, line number)."""
    start = at
    while at < len(text) and text[at] in _NAME:
        at += 1
    name = text[start:at]
    if not name:
        raise ConfigError(path, line, "expected an option name, got %r" % text[at])
    at = _skip_blanks(text, at)
    if text[at:at + 1] != "=":
        raise ConfigError(path, line, "expected `=` after %s" % name)
    at = _skip_blanks(text, at + 1)
    first_line = line
    if text[at:at + 1] == '"':
        value, at, line = _quoted(text, at + 1, line, path)
    else:
        start = at
        while at < len(text) and text[at] in _PLAIN:
            at += 1
        value = text[start:at]
    at = _skip_blanks(text, at)
    if at < len(text) and text[at] not in "#\n":
        raise ConfigError(path, line, "%s: unexpected %r in the value (an unquoted value "
                          "holds only letters, digits and @/-_.:; - put the value in double "
                          "quotes)" % (name, text[at]))
    return Setting(name, value, path, first_line), _end_of_line(text, at), line


def _quoted(text, at, line, path):
    """Read a double-quoted value whose text starts at at; return (value, after, line)."""
    out, opened = [], line
    while True:
        if at >= len(text):
            raise ConfigError(path, opened, "a quote opened here is never closed")
        char = text[at]
        if char == '"':
            return "".join(out), at + 1, line
        if char == "\\" and at + 1 < len(text):
            at += 1
            char = text[at]
        if char == "\n":
            line += 1
        out.append(char)
        at += 1


def boolean(setting):
    """Return the boolean a setting stands for, matched as masqmail does; raise ConfigError."""
    word = setting.value.strip().lower()
    if word:
        if word.startswith(TRUE):
            return True
        if word.startswith(FALSE):
            return False
    raise setting.error("%s: expected yes/on/true or no/off/false, got %r"
                        % (setting.name, setting.value))


def items(setting):
    """Return the `;`-separated items of a setting as (item, path, line), blanks dropped."""
    return [(item.strip(), setting.path, setting.line)
            for item in setting.value.split(";") if item.strip()]


def spliced(setting):
    """Return the items of a list setting, files (items starting with /) spliced in line by
    line, as (item, path, line) where path and line say where each item was written."""
    found = []
    for item, path, line in items(setting):
        if not item.startswith("/"):
            found.append((item, path, line))
            continue
        try:
            text = read_file(item)
        except ConfigError as exc:
            raise setting.error("%s: the list file %s: %s" % (setting.name, item, exc.message)
                                ) from None
        for number, entry in enumerate(text.splitlines(), 1):
            entry = entry.split("#", 1)[0].strip()
            if entry:
                found.append((entry, item, number))
    return found
