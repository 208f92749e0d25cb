"""Configuration value kinds: how the text of one UCI option becomes a typed value.

Owns `Kind` (a name for docs/CONFIG.md, what is expected, a converter and a renderer), the
converters (sizes, intervals, booleans, host:port, listeners, smarthosts, commands,
mailboxes, detectors, networks, fingerprints ...) and the kinds built from them. The option
table that uses them is schema.py's.

Hostile input: an administrator's text, possibly mistyped. A converter raises ValueError
(or Invalid with its own reason); schema.py turns that into ConfigError naming file and line.
"""

from masq.base.ip import is_ipv4
from masq.mail import glob


class Invalid(ValueError):
    """A value's own reason for refusal, shown instead of the value in the error."""


class Kind:
    """How an option's text becomes a value: `convert(text)` returns it or raises ValueError."""

    __slots__ = ("name", "expected", "convert", "render", "is_list")

    def __init__(self, name, expected, convert, render=str, is_list=False):
        self.name = name            # the type as docs/CONFIG.md names it
        self.expected = expected    # for "expected ..., got ..."
        self.convert = convert      # for a list: converts one item
        self.render = render        # value (or item) back to UCI text
        self.is_list = is_list


BOOLS = {"1": True, "yes": True, "on": True, "true": True, "enabled": True,
         "0": False, "no": False, "off": False, "false": False, "disabled": False}
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Values are checked with string methods, not re: `sendmail` reads the file on every run.
_LITERAL_CHARS = frozenset("0123456789ABCDEFabcdef:.")
LISTEN_SCHEMES = ("smtp", "submission", "smtps", "qmtp", "qmqp")


def _text(text):
    return text


def _absolute(text):
    """Check a path: absolute, so the daemon (cwd /) and a command agree on what it names."""
    if not text.startswith("/") or "\0" in text:
        raise ValueError(text)
    return text


def _bool(text):
    if text not in BOOLS:
        raise ValueError(text)
    return BOOLS[text]


def int_kind(low=None, high=None):
    if low is not None and high is not None:
        expected = "an integer from %d to %d" % (low, high)
    elif low is not None:
        expected = "an integer >= %d" % low
    else:
        expected = "an integer"

    def convert(text):
        digits = text[1:] if text.startswith("-") else text
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError(text)
        value = int(text)
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(text)
        return value
    return Kind("int", expected, convert)


def _digits(text):
    return text.isascii() and text.isdigit()


def _size(text):
    """Return the bytes `10M`, `64k` or `1000` stand for."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in tuple("kKmMgG") else (text, "")
    if not _digits(number):
        raise ValueError(text)
    return int(number) * SIZE_UNITS[unit.lower()]


def _render_size(value):
    for unit in "GMk":
        if value and value % SIZE_UNITS[unit.lower()] == 0:
            return "%d%s" % (value // SIZE_UNITS[unit.lower()], unit)
    return str(value)


def _interval(text):
    """Return the seconds `30m`, `1.5h` or `90` stand for."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in tuple("smhdw") else (text, "")
    whole, dot, fraction = number.partition(".")
    if not _digits(whole) or (dot and not _digits(fraction)):
        raise ValueError(text)
    return float(number) * TIME_UNITS[unit]


def _render_interval(value):
    for unit in "wdhms":
        if value and value % TIME_UNITS[unit] == 0:
            return "%d%s" % (value // TIME_UNITS[unit], unit)
    return ("%.6f" % value).rstrip("0").rstrip(".")


def _enum_kind(*choices):
    def convert(text):
        if text not in choices:
            raise ValueError(text)
        return text
    return Kind("enum", "one of " + ", ".join(choices), convert)


def _prefixed_kind(expected, exact, prefixes):
    """Return a str kind whose value is one of `exact` or a prefix plus something."""
    def convert(text):
        if text in exact or any(text.startswith(p) and text != p for p in prefixes):
            return text
        raise ValueError(text)
    return Kind("str", expected, convert)


def _host_port(text, low_port=1):
    """Return text if it is `host`, `host:port`, `[literal]` or `[literal]:port`."""
    if text.startswith("["):
        close = text.find("]")
        good = close > 1 and _LITERAL_CHARS.issuperset(text[1:close])
        rest = text[close + 1:]
    else:
        host, colon, port = text.partition(":")
        rest = colon + port
        good = (host[:1].isalnum() and host[-1:].isalnum() and host.isascii()
                and host.replace("-", "a").replace(".", "a").isalnum())
    port = rest[1:]
    if rest and not (rest[0] == ":" and _digits(port) and len(port) <= 5):
        good = False
    if not good or (port and not low_port <= int(port) <= 65535):
        raise ValueError(text)
    return text


def _smarthost(text):
    """Return text if it is HOST[:PORT] (as _host_port), optionally after `qmtp:` or
    `qmqp:`."""
    _host_port(text[5:] if text.startswith(("qmtp:", "qmqp:")) else text)
    return text


def _listen(text):
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in LISTEN_SCHEMES:
        raise ValueError(text)
    rest, _, query = rest.partition("?")
    if query not in ("", "auth=plain", "filtered") or (rest.count(":") > 1 and rest[:1] != "["):
        raise ValueError(text)
    parse_ip_port(rest, default_port=25, low_port=0)     # an address to bind: no names
    return text


def parse_ip_port(text, default_port=None, low_port=1):
    """Return (ip, port) from IP[:PORT] or [IPv6][:PORT]; `localhost` is 127.0.0.1.

    The port may be left out only when default_port is given; raise ValueError."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(text)
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    if port is None and default_port is None:
        raise ValueError(text)
    port = default_port if port is None else port
    if not (str(port).isascii() and str(port).isdigit() and low_port <= int(port) < 65536):
        raise ValueError(text)
    host = "127.0.0.1" if host == "localhost" else host
    if is_ipv4(host):
        return host, int(port)
    import ipaddress                       # lazily: sendmail starts fast
    return str(ipaddress.ip_address(host)), int(port)






def _ip_port_kind(expected, default_port=None):
    def convert(text):
        parse_ip_port(text, default_port)
        return text
    return Kind("str", expected, convert)


def hostname_text(text):
    """Check a host name as SMTP needs it (RFC 5321 Domain): LDH labels, at most 253."""
    if len(text) > 253 or not all(_is_label(label) for label in text.split(".")):
        raise ValueError(text)
    return text


def _is_label(label):
    """Return True for a DNS label: 1-63 ASCII letters, digits and inner hyphens."""
    return (0 < len(label) <= 63 and label.isascii() and label[0] != "-" and label[-1] != "-"
            and label.replace("-", "a").isalnum())


PLACEHOLDERS = "udsr%"       # what a command or mailbox path may hold: %u %d %s %r %%


def _template(text):
    """Check the placeholders of a command or path template; raise ValueError."""
    at = text.find("%")
    while at >= 0:
        letter = text[at + 1:at + 2].replace("\n", "")
        if letter == "" or letter not in PLACEHOLDERS:
            raise Invalid("%s: unknown placeholder %%%s (use %%u, %%d, %%s, %%r or %%%%)"
                          % (show(text), letter))
        at = text.find("%", at + 2)


def _command(text):
    """Check a command template as delivery splits it (shlex, no shell); raise ValueError."""
    if not any(c in text for c in "'\"\\"):    # no quoting: shlex splits on white space
        words = text.split()
    else:
        import shlex                       # lazily: costs sendmail about 1 ms to import
        try:
            words = shlex.split(text)
        except ValueError as exc:          # "No closing quotation", "No escaped character"
            raise Invalid("%s: %s" % (show(text), str(exc).lower())) from None
    if not words:
        raise Invalid("%s: no command" % show(text))
    _template(text)
    return text


def _mailbox(text):
    method, sep, rest = text.partition(":")
    rest = rest.strip()
    if not sep or method not in ("maildir", "mbox", "mda") or not rest:
        raise ValueError(text)
    if method == "mda":
        _command(rest)
    elif not rest.startswith("/"):
        raise Invalid("%s: the path must be absolute (start with /)" % show(text))
    else:
        _template(rest)
    return text


def _online(text):
    if text != "always" and not any(text.startswith(p) and text != p for p in
                                    ("file:", "pipe:", "iface:", "ubus:", "modem:")):
        raise ValueError(text)
    if text.startswith("pipe:"):
        _command(text[len("pipe:"):])
    return text


def fingerprint(text):
    """Return a certificate fingerprint `sha256:HEX` (colons optional) as 64 lower-case hex."""
    method, sep, digits = text.partition(":")
    digits = digits.replace(":", "").lower()
    if method.lower() != "sha256" or not sep or len(digits) != 64 or \
            digits.strip("0123456789abcdef"):
        raise ValueError(text)
    return digits


def _dnsbl_site(text):
    from masq.config import dnsbl_site         # lazily: only when a DNS list is configured
    hostname_text(dnsbl_site.parse(text).zone)
    return text


def _network(text):
    address, slash, prefix = text.partition("/")
    if is_ipv4(address) and (not slash or (prefix.isascii() and prefix.isdigit()
                                            and int(prefix) <= 32)):
        return text
    import ipaddress                       # lazily: sendmail starts fast
    ipaddress.ip_network(text, strict=False)
    return text


def _map_kind(display_name):
    """Return the kind of an address map: `PATTERN: REPLACEMENT` (masq.mail.addrmap)."""
    def convert(text):
        from masq.mail import addrmap      # lazily: `sendmail` reads the file on every run
        try:
            addrmap.parse_rule(text, display_name)
        except ValueError as exc:
            raise Invalid("%s: %s" % (show(text), exc)) from None
        return text
    return Kind("list", "PATTERN: REPLACEMENT (a glob on the local part, then an address%s "
                "or *@DOMAIN)" % (", Name <address>" if display_name else ""), convert,
                is_list=True)


def _mail_address(text):
    """Check an address as an option gives it: `user@domain`, or a bare user name (then the
    host name is its domain); no white space, brackets or control characters."""
    if not text or not text.isprintable() or any(c in text for c in " \t<>,;") or \
            text.count("@") > 1 or text.startswith("@") or text.endswith("@"):
        raise ValueError(text)
    return text


def _address_key(text):
    """Check a map key: `user@domain`, `@domain` (anyone there) or a bare `user`."""
    if text.startswith("@") and len(text) > 1:
        return _mail_address("x" + text)[1:]
    return _mail_address(text)


def _bcc_map(text):
    """Check an archive map row `KEY ADDRESS` (sender_bcc, recipient_bcc)."""
    words = text.split()
    if len(words) != 2:
        raise Invalid("%s: write KEY ADDRESS, e.g. 'alice@home.lan archive@home.lan'"
                      % show(text))
    _address_key(words[0])
    _mail_address(words[1])
    return text


STR = Kind("str", "a string", _text)
PATH = Kind("path", "an absolute path (one that starts with /)", _absolute)
BOOL = Kind("bool", "a boolean (1/0, yes/no, on/off, true/false, enabled/disabled)",
            _bool, lambda value: "1" if value else "0")
COUNT = int_kind(1)
PORT = int_kind(1, 65535)
SIZE = Kind("size", "a size (bytes, or a number with k, M or G)", _size, _render_size)
INTERVAL = Kind("interval", "an interval (seconds, or a number with s, m, h, d or w)",
                _interval, _render_interval)
LIST = Kind("list", "a string", _text, is_list=True)
INTERVALS = Kind("list", "an interval (seconds, or a number with s, m, h, d or w)",
                 _interval, _render_interval, is_list=True)
NETWORKS = Kind("list", "an IP network such as 192.168.1.0/24", _network, is_list=True)
FINGERPRINTS = Kind("list", "sha256:FINGERPRINT (64 hex digits, colons allowed), as "
                   "`openssl x509 -noout -fingerprint -sha256` prints it",
                   lambda text: (fingerprint(text), text)[1], is_list=True)
HEADER_MAP = _map_kind(True)
SENDER_MAP = _map_kind(False)
DNSBL_SITES = Kind("list", "a DNS list ZONE[=FILTER][*WEIGHT] such as "
                   "zen.example=127.0.0.[2..11]*3", _dnsbl_site, is_list=True)
LISTEN = Kind("list", "a listener such as smtp://127.0.0.1:25 (scheme %s; an IP address, "
              "IPv6 in brackets)"
              % ", ".join(LISTEN_SCHEMES), _listen, is_list=True)
HOST_PORT = Kind("str", "host or host:port (an IPv6 address in brackets)", _host_port)
SMARTHOST = Kind("str", "host or host:port (an IPv6 address in brackets), optionally after "
                 "qmtp: or qmqp: (QMTP or QMQP instead of SMTP)", _smarthost)
MAILBOX = Kind("str", "maildir:/PATH, mbox:/PATH or mda:COMMAND", _mailbox)
ONLINE = Kind("str", "always, file:PATH, pipe:COMMAND, iface:NAME, ubus:IFACE or "
              "modem:DEVICE", _online)
COMMAND = Kind("str", "a command (split as the shell would, run without one)", _command)
HOSTNAME = Kind("str", "a host name: letters, digits, hyphens and dots, at most 253",
                hostname_text)
SERVER = _ip_port_kind("an IP address, optionally with :PORT (IPv6 in brackets)", 53)
STATUS_LISTEN = _ip_port_kind("IP:PORT (e.g. 127.0.0.1:8025 or [::1]:8025)")
TLS = _enum_kind("none", "opportunistic", "starttls", "tls")
FETCH_TLS = _enum_kind("starttls", "tls", "none")
FETCH_PROTOCOL = _enum_kind("pop3", "imap")


def _log_target(text):
    if text in ("syslog", "stderr") or text.startswith("/"):
        return text
    raise ValueError(text)


def _pattern_kind(expected, check):
    def convert(text):
        try:
            return check(text)
        except glob.GlobError as exc:
            raise Invalid("%s: %s" % (show(text), exc)) from None
    return Kind("list", expected, convert, is_list=True)


DOMAIN_PATTERNS = _pattern_kind("a domain or a glob pattern (*, ?, [...]) such as "
                                "*.example.org", glob.check_domain)
ADDRESS_PATTERNS = _pattern_kind("an address or a glob pattern (*, ?, [...]) such as "
                                 "*@example.org", glob.check_address)
SENDER_PATTERNS = _pattern_kind("an address, a glob pattern (*, ?, [...]) such as "
                                "*@example.org, or <> (the null sender)",
                                lambda text: glob.check_address(text, null_ok=True))
LOG = Kind("str", "syslog, stderr or an absolute file path", _log_target)
LOG_LEVEL = _enum_kind("error", "warning", "info", "debug")
BARE_LINE_ENDS = _enum_kind("normalise", "refuse")
ADDRESS = Kind("str", "a mail address (user@domain, or a user name)", _mail_address)
BCC_MAP = Kind("list", "KEY ADDRESS (KEY: user@domain, @domain or a user name)", _bcc_map,
               is_list=True)

FILTER_ACTIONS = ("pass", "reject", "quarantine", "tempfail")


def _filter(text):
    """Check a content filter: pipe:COMMAND or smtp:HOST:PORT (docs/FILTERS.md)."""
    method, sep, rest = text.partition(":")
    if method == "pipe" and sep:
        _command(rest)
        return text
    if method == "smtp" and sep and ":" in rest:
        _host_port(rest)
        return text
    raise ValueError(text)


def _filter_exit(text):
    code, sep, action = text.partition("=")
    if not sep or not (code.isascii() and code.isdigit()) or int(code) > 255 or \
            action not in FILTER_ACTIONS:
        raise ValueError(text)
    return text


def _folder(text):
    """Check a Maildir++ folder name: `.NAME`, one path component."""
    if not text.startswith(".") or text in (".", "..") or "/" in text or "\0" in text:
        raise ValueError(text)
    return text


FOLDER = Kind("str", "a maildir folder name such as .Junk (a dot, then the name)", _folder)
FILTERS = Kind("list", "pipe:COMMAND or smtp:HOST:PORT", _filter, is_list=True)
FILTER_EXITS = Kind("list", "CODE=ACTION (an exit code 0-255; %s)" % ", ".join(FILTER_ACTIONS),
                    _filter_exit, is_list=True)


def show(value):
    """Return value quoted for an error message, shortened past 60 characters."""
    text = value if len(value) <= 60 else value[:57] + "..."
    return "'%s'" % text if text.isprintable() else repr(text)
