"""Configuration: the schema of masq's UCI file and the typed, defaulted settings it yields.

Owns the option table (OPTIONS: one row per section type and option, with its type and
default; docs/CONFIG.md documents every row and a test keeps the two in step), the
conversion of UCI strings into typed values, and `describe`, the effective settings in
UCI form for `masq check-config`.

Does not parse UCI syntax (uci.py does), find the file (the command line chooses
`-C FILE`, $MASQ_CONFIG or the default), nor decide what settings mean: routes,
listeners and policy read them. Values are checked for form only; no command is run, no
name is resolved, no file is opened here except the configuration itself.

Hostile input: the file is an administrator's, possibly mistyped. Every unknown section
or option, wrong type or unnamed route raises ConfigError(path, line, message) naming the
option, what was expected and, for a typo, the nearest known name. The first error wins.
"""

from masq.config import uci
from masq.config.uci import ConfigError

__all__ = ["ConfigError", "Config", "Section", "load", "loads", "describe", "OPTIONS"]


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


def _int_kind(low=None, high=None):
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
    if query not in ("", "auth=plain") or (rest.count(":") > 1 and rest[:1] != "["):
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
    if _is_ipv4(host):
        return host, int(port)
    import ipaddress                       # lazily: sendmail starts fast
    return str(ipaddress.ip_address(host)), int(port)


def is_loopback(ip):
    """Return True if the text is a loopback IP address (a name is not one), as ipaddress
    says; the usual 127.x.y.z and ::1 without importing it (an idle daemon does not)."""
    if ip == "::1" or (_is_ipv4(ip) and ip.startswith("127.")):
        return True
    import ipaddress
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _is_ipv4(text):
    """Return True for dotted-quad IPv4 as ipaddress accepts it (checked without importing
    it: ipaddress costs `sendmail` ~2 ms, and most configurations name only IPv4)."""
    parts = text.split(".")
    return len(parts) == 4 and all(
        part.isascii() and part.isdigit() and len(part) <= 3 and (part == "0" or part[0] != "0")
        and int(part) <= 255 for part in parts)


def _ip_port_kind(expected, default_port=None):
    def convert(text):
        parse_ip_port(text, default_port)
        return text
    return Kind("str", expected, convert)


def _hostname_text(text):
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
                          % (_show(text), letter))
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
            raise Invalid("%s: %s" % (_show(text), str(exc).lower())) from None
    if not words:
        raise Invalid("%s: no command" % _show(text))
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
        raise Invalid("%s: the path must be absolute (start with /)" % _show(text))
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


def _network(text):
    address, slash, prefix = text.partition("/")
    if _is_ipv4(address) and (not slash or (prefix.isascii() and prefix.isdigit()
                                            and int(prefix) <= 32)):
        return text
    import ipaddress                       # lazily: sendmail starts fast
    ipaddress.ip_network(text, strict=False)
    return text


STR = Kind("str", "a string", _text)
PATH = Kind("path", "an absolute path (one that starts with /)", _absolute)
BOOL = Kind("bool", "a boolean (1/0, yes/no, on/off, true/false, enabled/disabled)",
            _bool, lambda value: "1" if value else "0")
COUNT = _int_kind(1)
PORT = _int_kind(1, 65535)
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
                _hostname_text)
SERVER = _ip_port_kind("an IP address, optionally with :PORT (IPv6 in brackets)", 53)
STATUS_LISTEN = _ip_port_kind("IP:PORT (e.g. 127.0.0.1:8025 or [::1]:8025)")
TLS = _enum_kind("none", "opportunistic", "starttls", "tls")
FETCH_TLS = _enum_kind("starttls", "tls", "none")
FETCH_PROTOCOL = _enum_kind("pop3", "imap")


def _log_target(text):
    if text in ("syslog", "stderr") or text.startswith("/"):
        return text
    raise ValueError(text)


LOG = Kind("str", "syslog, stderr or an absolute file path", _log_target)
LOG_LEVEL = _enum_kind("error", "warning", "info", "debug")
BARE_LINE_ENDS = _enum_kind("normalise", "refuse")


def _hostname(values):
    import socket                          # lazily: only when the file names no hostname
    return socket.gethostname()


def _local_domain(values):
    return [values["hostname"], "localhost"]


class Option:
    """One row of the schema: where an option lives, its kind and its default."""

    __slots__ = ("section", "name", "kind", "default", "secret")

    def __init__(self, section, name, kind, default=None, secret=False):
        self.section = section
        self.name = name
        self.kind = kind
        self.default = default      # a value, or a function of the values before it
        self.secret = secret        # hidden by describe() unless asked

    def default_for(self, values):
        """Return this option's default given the section's values so far."""
        if callable(self.default):
            return self.default(values)
        if self.kind.is_list:
            return list(self.default or ())
        return self.default


# The schema. Order matters only for defaults that depend on earlier options, and it is
# the order `describe` prints. docs/CONFIG.md has one line per row.
_M, _U, _R, _F = "masq", "user", "route", "fetch"
OPTIONS = (
    Option(_M, "hostname", HOSTNAME, _hostname),
    Option(_M, "spool_dir", PATH, "/var/spool/masq"),
    Option(_M, "volatile_spool", BOOL, False),
    Option(_M, "queue_segment_size", SIZE, 1 << 20),
    Option(_M, "listen", LISTEN, ("smtp://127.0.0.1:25",)),
    Option(_M, "local_domain", LIST, _local_domain),
    Option(_M, "relay_net", NETWORKS, ("127.0.0.0/8", "::1/128")),
    Option(_M, "local_users", LIST, ()),
    Option(_M, "alias_file", PATH, "/etc/aliases"),
    Option(_M, "mailbox", MAILBOX, "mbox:/var/mail/%u"),
    Option(_M, "max_message_size", SIZE, 10 << 20),
    Option(_M, "max_recipients", COUNT, 100),
    Option(_M, "max_connections", COUNT, 50),
    Option(_M, "max_connections_per_ip", COUNT, 10),
    Option(_M, "smtp_timeout", INTERVAL, 300.0),
    Option(_M, "smtp_min_data_rate", COUNT, 500),
    Option(_M, "bare_line_ends", BARE_LINE_ENDS, "normalise"),
    Option(_M, "tls_cert", PATH),
    Option(_M, "tls_key", PATH),
    Option(_M, "tls_client_ca", PATH),
    Option(_M, "relay_cert", FINGERPRINTS, ()),
    Option(_M, "dns_server", SERVER),
    Option(_M, "hosts_file", PATH, "/etc/hosts"),
    Option(_M, "status_listen", STATUS_LISTEN, ""),
    Option(_M, "status_password", STR, secret=True),
    Option(_M, "status_file", PATH, "/var/run/masq/status.json"),
    Option(_M, "pid_file", PATH, "/var/run/masq.pid"),
    Option(_M, "user", STR, ""),
    Option(_M, "trusted_users", LIST, ("root", "mail", "daemon")),
    Option(_M, "queue_interval", INTERVAL, 0.0),
    Option(_M, "queue_lifetime", INTERVAL, 5 * 86400.0),
    Option(_M, "delay_warning", INTERVAL, 4 * 3600.0),
    Option(_M, "warn_intervals", INTERVALS, lambda values: [values["delay_warning"]]),
    Option(_M, "retry_interval", INTERVAL, 300.0),
    Option(_M, "retry_max", INTERVAL, 4 * 3600.0),
    Option(_M, "online_check_interval", INTERVAL, 300.0),
    Option(_M, "do_queue", BOOL, False),
    Option(_M, "do_save_envelope_to", BOOL, False),
    Option(_M, "defer_all", BOOL, False),
    Option(_M, "fetch_interval", INTERVAL, 0.0),
    Option(_M, "log", LOG, "syslog"),
    Option(_M, "log_level", LOG_LEVEL, "info"),

    Option(_U, "password", STR, secret=True),
    Option(_U, "mailbox", MAILBOX),

    Option(_R, "online", ONLINE, "always"),
    Option(_R, "online_require_route", BOOL, False),
    Option(_R, "modem_min_signal", _int_kind(-113, -51)),
    Option(_R, "smarthost", SMARTHOST),
    Option(_R, "port", PORT, 25),
    Option(_R, "tls", TLS, "opportunistic"),
    Option(_R, "tls_verify", BOOL, True),
    Option(_R, "tls_ca", PATH),
    Option(_R, "auth_user", STR),
    Option(_R, "auth_pass", STR, secret=True),
    Option(_R, "helo", HOSTNAME),
    Option(_R, "allowed_sender", LIST, ()),
    Option(_R, "denied_sender", LIST, ()),
    Option(_R, "allowed_recipient", LIST, ()),
    Option(_R, "denied_recipient", LIST, ()),
    Option(_R, "allowed_from", LIST, ()),
    Option(_R, "denied_from", LIST, ()),
    Option(_R, "from_domain", STR),
    Option(_R, "map_sender", LIST, ()),
    Option(_R, "map_from", LIST, ()),
    Option(_R, "last_route", BOOL, False),
    Option(_R, "connect_error_fail", BOOL, False),
    Option(_R, "pipe", COMMAND),
    Option(_R, "wrapper", COMMAND),
    Option(_R, "timeout", INTERVAL, 300.0),
    Option(_R, "max_message_size", SIZE, 0),
    Option(_R, "pop3_login", STR),

    Option(_F, "server", HOST_PORT),
    Option(_F, "protocol", FETCH_PROTOCOL, "pop3"),
    Option(_F, "tls", FETCH_TLS, "starttls"),
    Option(_F, "tls_verify", BOOL, True),
    Option(_F, "tls_ca", PATH),
    Option(_F, "user", STR),
    Option(_F, "password", STR, secret=True),
    Option(_F, "route", STR, "always"),
    Option(_F, "deliver_to", STR),
    Option(_F, "keep", BOOL, False),
    Option(_F, "max_size", SIZE),
    Option(_F, "max_count", _int_kind(0), 0),
    Option(_F, "folder", STR, "INBOX"),
    Option(_F, "timeout", INTERVAL, 300.0),
)

SCHEMA = {}                                 # section type -> {option name -> Option}
for _row in OPTIONS:
    SCHEMA.setdefault(_row.section, {})[_row.name] = _row
del _row
NAMED = frozenset(("user", "route", "fetch"))        # config route 'NAME': a name is required
PAIRS = {"masq": (("tls_cert", "tls_key"),), "route": (("auth_user", "auth_pass"),)}
HIDDEN = "(hidden)"                         # what describe() shows for a secret


class Section:
    """One typed section: `route.port` or `route["port"]`, defaults filled in."""

    __slots__ = ("type", "name", "line", "_values", "_lines")

    def __init__(self, type, name, line, values, lines):
        self.type = type
        self.name = name            # None for an anonymous masq section
        self.line = line            # line of its config statement; 0 if not in the file
        self._values = values       # option name -> typed value, in schema order
        self._lines = lines         # option name -> line, for options the file set

    def __getattr__(self, name):
        if not name.startswith("_"):
            try:
                return self._values[name]
            except KeyError:
                pass
        raise AttributeError("%s section has no option %r" % (self.type, name))

    def __getitem__(self, name):
        return self._values[name]

    def items(self):
        """Return (option, value) pairs in schema order."""
        return self._values.items()

    def is_set(self, name):
        """Return True if the file set this option (False: the value is the default)."""
        return name in self._lines

    def line_of(self, name):
        """Return the line that set the option, or the section's line if the file did not."""
        return self._lines.get(name, self.line)

    def __repr__(self):
        return "<Section %s %r line %d>" % (self.type, self.name, self.line)


class Config:
    """The whole configuration: main settings, routes in file order, users by name."""

    __slots__ = ("path", "main", "routes", "users", "fetches")

    def __init__(self, path):
        self.path = path
        self.main = None
        self.routes = []
        self.users = {}
        self.fetches = []

    def route(self, name):
        """Return the route section called name, or None."""
        for route in self.routes:
            if route.name == name:
                return route
        return None

    def fetch(self, name):
        """Return the fetch section called name, or None."""
        for fetch in self.fetches:
            if fetch.name == name:
                return fetch
        return None

    def error(self, section, option, message):
        """Return a ConfigError pointing at the line that set section's option."""
        return ConfigError(self.path, section.line_of(option), message)


def load(path):
    """Read the configuration file at path and return its Config; raise ConfigError."""
    return loads(uci.read_file(path), path)


def loads(text, path="<string>"):
    """Return the Config of UCI text; raise ConfigError naming path and line."""
    config = Config(path)
    for raw in uci.parse(text, path):
        rows = SCHEMA.get(raw.type)
        if rows is None:
            raise ConfigError(path, raw.line, "unknown section type '%s'%s"
                              % (raw.type, _did_you_mean(raw.type, SCHEMA)))
        if raw.name is None and raw.type in NAMED:
            raise ConfigError(path, raw.line, "a %s section needs a name: config %s 'NAME'"
                              % (raw.type, raw.type))
        _ADD[raw.type](config, _section(raw, rows, path))
    if config.main is None:
        config.main = _section(uci.RawSection("masq", "main", 0), SCHEMA["masq"], path)
    _check_together(config)
    return config


def _check_together(config):
    """Refuse what each option allows alone but the daemon refuses in combination."""
    main = config.main
    try:
        _hostname_text(main.hostname)
    except ValueError:
        raise config.error(main, "hostname", "the %s %s cannot be used in SMTP: set option "
                           "hostname (letters, digits, hyphens and dots, at most 253)"
                           % ("option hostname" if main.is_set("hostname")
                              else "system host name", _show(main.hostname))) from None
    if main.status_listen and not main.status_password:
        if not is_loopback(parse_ip_port(main.status_listen)[0]):
            raise config.error(main, "status_listen", "status_listen %s is not a loopback "
                               "address: set status_password (the page would be open to "
                               "the network)" % main.status_listen)
    if main.relay_cert and not (main.tls_cert and main.tls_client_ca):
        raise config.error(main, "relay_cert", "relay_cert needs tls_cert (TLS for clients) "
                           "and tls_client_ca (what their certificates are checked against)")
    _check_fetches(config)
    if not main.tls_cert:
        for url in main.listen:
            if url.startswith("smtps://"):
                raise config.error(main, "listen", "listen %s needs option tls_cert and "
                                   "tls_key" % url)


def _check_fetches(config):
    """A fetch section needs a server and credentials, and names a route that exists; a
    route's pop3_login names a POP3 fetch section."""
    routes = {route.name for route in config.routes}
    for fetch in config.fetches:
        for option in ("server", "user", "password"):
            if not fetch[option]:
                raise config.error(fetch, option, "fetch '%s' needs option %s"
                                   % (fetch.name, option))
        if fetch.route != "always" and fetch.route not in routes:
            raise config.error(fetch, "route", "fetch '%s': no route named %s (name a "
                               "route, or 'always')" % (fetch.name, _show(fetch.route)))
    for route in config.routes:
        if route.pop3_login:
            fetch = config.fetch(route.pop3_login)
            if fetch is None or fetch.protocol != "pop3":
                raise config.error(route, "pop3_login", "route '%s': pop3_login names no "
                                   "POP3 fetch section (%s)" % (route.name,
                                                                _show(route.pop3_login)))


def _add_main(config, section):
    if config.main is not None:
        raise ConfigError(config.path, section.line, "a second masq section; the first is "
                          "at line %d and there can be only one" % config.main.line)
    config.main = section


def _add_user(config, section):
    config.users[section.name] = section


def _add_route(config, section):
    config.routes.append(section)


def _add_fetch(config, section):
    if config.fetch(section.name) is not None:
        raise ConfigError(config.path, section.line, "a second fetch section named '%s'"
                          % section.name)
    config.fetches.append(section)


_ADD = {"masq": _add_main, "user": _add_user, "route": _add_route, "fetch": _add_fetch}


def _section(raw, rows, path):
    """Return the typed Section of a RawSection: check every option, fill in defaults."""
    values, lines = {}, {}
    for name, option in raw.options.items():
        row = rows.get(name)
        if row is None:
            raise ConfigError(path, option.line, _unknown(name, raw))
        values[name] = _value(row, option, raw, path)
        lines[name] = option.line
    for name, row in rows.items():
        if name not in values:
            values[name] = row.default_for(values)
    for first, second in PAIRS.get(raw.type, ()):
        if (first in lines) != (second in lines):
            given, missing = (first, second) if first in lines else (second, first)
            raise ConfigError(path, lines[given], "option '%s' in %s needs '%s' as well"
                              % (given, _label(raw), missing))
    return Section(raw.type, raw.name, raw.line, {n: values[n] for n in rows}, lines)


def _value(row, option, raw, path):
    """Return the typed value of one RawOption, or raise ConfigError at its line."""
    where = "'%s' in %s" % (row.name, _label(raw))
    if option.is_list() and not row.kind.is_list:
        raise ConfigError(path, option.line, "option %s takes one value: write "
                          "'option %s ...', not 'list'" % (where, row.name))
    items = option.value if option.is_list() else [option.value]
    lines = option.item_lines or [option.line] * len(items)
    values = []
    for item, line in zip(items, lines):
        try:
            values.append(row.kind.convert(item))
        except ValueError as exc:
            detail = str(exc) if isinstance(exc, Invalid) else ""
            raise ConfigError(path, line, "option %s: expected %s, got %s"
                              % (where, row.kind.expected, detail or _show(item))) from None
    return values if row.kind.is_list else values[0]


def _unknown(name, raw):
    hint = _did_you_mean(name, SCHEMA[raw.type])
    if not hint:
        owners = [kind for kind, rows in SCHEMA.items() if name in rows]
        if owners:
            hint = "; it belongs in a %s section" % " or ".join(owners)
    return "unknown option '%s' in %s%s" % (name, _label(raw), hint)


def _did_you_mean(word, names):
    import difflib                         # lazily: only on the error path
    close = difflib.get_close_matches(word, list(names), n=1)
    return "; did you mean '%s'?" % close[0] if close else ""


def _label(raw):
    return "%s '%s'" % (raw.type, raw.name) if raw.name else "%s section" % raw.type


def _show(value):
    text = value if len(value) <= 60 else value[:57] + "..."
    return "'%s'" % text if text.isprintable() else repr(text)


def describe(config, show_secrets=False):
    """Return the effective settings, defaults included, as UCI text in writer format."""
    sections = [config.main] + list(config.users.values()) + config.routes + config.fetches
    return uci.dump([_raw(section, show_secrets) for section in sections])


def _raw(section, show_secrets):
    raw = uci.RawSection(section.type, section.name, section.line)
    for name, row in SCHEMA[section.type].items():
        value = section[name]
        if value is None or value == "" or value == []:
            continue                        # unset: UCI has no way to say "empty"
        if row.secret and not show_secrets:
            text = HIDDEN
        elif row.kind.is_list:
            text = [row.kind.render(item) for item in value]
        else:
            text = row.kind.render(value)
        raw.options[name] = uci.RawOption(text, section.line_of(name))
    return raw
