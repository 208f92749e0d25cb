"""The human-readable part of bounces and delay warnings from a template (errmsg_file,
warnmsg_file).

Owns masqmail's templates in RFC 3464 form: a template gives the report's `Subject:` and
its text part; the report's structure (multipart/report, the message/delivery-status part,
the returned message) is masq.outbound.bounce's and does not change. Without a template
bounce.py's own English text is used.

The syntax (docs/CONFIG.md, "Bounce and warning templates"): UTF-8 text; it may start with
a `Subject:` line (folded lines allowed) and an empty line (a first line `From:`, `To:`,
`Content-Type:` ... as in a masqmail template is refused; `Reason: ...` is text);
`${name}` or `$name` is a variable (VARIABLES), `$$` a dollar sign, and a `$` before
anything else is itself; a line that is only `@failed_rcpts` becomes one line per
recipient, `<address>: reason`.

Checked when the configuration is loaded (`check`: check-config, daemon start, reload):
an unknown variable, another header than Subject:, masqmail's `@msg_headers` /
`@msg_body` (masq attaches the original itself), invalid UTF-8 or a control character is
a ConfigError naming the template file and line. At bounce time a template that can no
longer be read or parsed is logged and the built-in text is used: a bounce is never lost
to its template.

Hostile input: the values (addresses, remote replies) are flattened to one line of
printable text before they are put in; the template is the administrator's.
"""

from masq.config.uci import ConfigError

LIMIT = 65536                   # bytes of a template
FAILED = "@failed_rcpts"
VARIABLES = ("host_name", "package", "version", "uid", "return_path", "return_path_local",
             "return_path_domain", "received_host", "ident", "rcpt", "rcpt_local",
             "rcpt_domain", "err_msg", "retry_until")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_CONTROL = frozenset(chr(c) for c in range(32) if c != 9) | {"\x7f"}


class Template:
    """A parsed template: `subject` (pieces, or None) and `lines` (pieces, or FAILED)."""

    __slots__ = ("path", "subject", "lines")

    def __init__(self, path, subject, lines):
        self.path = path
        self.subject = subject      # list of (is variable, text), or None: the default
        self.lines = lines          # list of FAILED or [(is variable, text)]

    def render(self, values, failures):
        """Return (subject or None, [lines]): values maps VARIABLES to one-line text,
        failures are [(address, reason)]."""
        subject = None if self.subject is None else _fill(self.subject, values)
        lines = []
        for line in self.lines:
            if line == FAILED:
                lines.extend("<%s>: %s" % (rcpt, why) for rcpt, why in failures)
            else:
                lines.append(_fill(line, values))
        return subject, lines


def _fill(pieces, values):
    return "".join(values.get(text, "") if is_var else text for is_var, text in pieces)


def _pieces(text, where):
    """Split a template line into literal text and variables; where(message) raises."""
    out, literal, i, end = [], [], 0, len(text)
    while i < end:
        char = text[i]
        if char != "$" or i + 1 == end:
            literal.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            literal.append("$")
            i += 2
            continue
        if nxt == "{":
            close = text.find("}", i + 2)
            if close < 0:
                raise where("'${' without '}'")
            name, i = text[i + 2:close], close + 1
        elif nxt in _NAME_CHARS:
            j = i + 1
            while j < end and text[j] in _NAME_CHARS:
                j += 1
            name, i = text[i + 1:j], j
        else:
            literal.append(char)
            i += 1
            continue
        if name not in VARIABLES:
            raise where("unknown variable '%s' (known: %s)" % (name, ", ".join(VARIABLES)))
        if literal:
            out.append((False, "".join(literal)))
            literal = []
        out.append((True, name))
    if literal:
        out.append((False, "".join(literal)))
    return out


# Header fields a template may start with: Subject:, and those a masqmail template holds
# (refused, so that a masqmail template is not sent as text); "Reason: ..." is text.
_FIELDS = frozenset(("subject", "from", "to", "cc", "sender", "reply-to", "date",
                     "message-id", "mime-version", "content-type",
                     "content-transfer-encoding", "content-disposition"))


def _is_field(line):
    name, colon, _ = line.partition(":")
    return bool(colon) and name.strip().lower() in _FIELDS


def parse(data, path):
    """Return the Template of the bytes data; raise ConfigError(path, line, message)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, data[:exc.start].count(b"\n") + 1,
                          "not UTF-8 text (a template must be UTF-8)") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    for number, line in enumerate(lines, 1):
        if any(c in _CONTROL for c in line):
            raise ConfigError(path, number, "a control character in the template")
    subject, start = None, 0
    if lines and _is_field(lines[0]):
        subject, start = _header(lines, path)
    body = []
    for number, line in enumerate(lines[start:], start + 1):
        if line.strip() == FAILED:
            body.append(FAILED)
        elif line.strip() in ("@msg_headers", "@msg_body"):
            raise ConfigError(path, number, "%s: masq attaches the original message in a "
                              "part of its own (RFC 3464); the template is only the text"
                              % line.strip())
        else:
            body.append(_pieces(line, _at(path, number)))
    if not any(line for line in body):
        raise ConfigError(path, max(len(lines), 1), "the template has no text")
    return Template(path, subject, body)


def _at(path, number):
    return lambda message: ConfigError(path, number, message)


def _header(lines, path):
    """Parse the Subject: at the top; return (pieces, index of the first text line)."""
    subject, i = None, 0
    while i < len(lines) and lines[i] != "":
        line, number = lines[i], i + 1
        if line[:1] in (" ", "\t") and subject is not None:
            subject.append((False, " "))
            subject.extend(_pieces(line.strip(), _at(path, number)))
        elif not _is_field(line):
            raise ConfigError(path, number, "an empty line must follow the Subject: line")
        elif line.partition(":")[0].strip().lower() != "subject" or subject is not None:
            raise ConfigError(path, number, "only one Subject: line may head a template; "
                              "masq writes From:, To: and the report's MIME structure itself")
        else:
            subject = _pieces(line.partition(":")[2].strip(), _at(path, number))
        i += 1
    return subject, i + 1


def load(path):
    """Read and parse the template at path; raise ConfigError (OSError: line 0)."""
    import os
    try:
        with open(path, "rb") as src:
            if os.fstat(src.fileno()).st_size > LIMIT:
                raise ConfigError(path, 0, "more than %d bytes: too large for a template"
                                  % LIMIT)
            data = src.read(LIMIT + 1)
    except OSError as exc:
        raise ConfigError(path, 0, "cannot read it: %s" % (exc.strerror or exc)) from None
    return parse(data, path)


def check(cfg):
    """Raise ConfigError if errmsg_file or warnmsg_file does not load as a template."""
    main = cfg.main
    for option, path in (("errmsg_file", main.errmsg_file), ("warnmsg_file", main.warnmsg_file)):
        if path:
            try:
                load(path)
            except ConfigError as exc:
                if exc.line:
                    raise
                raise cfg.error(main, option, "option %s: %s: %s" % (option, path, exc.message)) \
                    from None


def for_action(main, action, log):
    """Return the Template for a bounce ("failed") or a warning, or None for the built-in
    text (also when the template fails now: logged, never a lost bounce)."""
    path = main.errmsg_file if action == "failed" else main.warnmsg_file
    if not path:
        return None
    try:
        return load(path)
    except ConfigError as exc:
        log.error("%s; the built-in text is used instead", exc)
        return None
