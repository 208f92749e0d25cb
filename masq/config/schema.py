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
from masq.config.kinds import (
    ADDRESS_PATTERNS, BARE_LINE_ENDS, BOOL, COMMAND, COUNT, DNSBL_SITES, DOMAIN_PATTERNS,
    FETCH_PROTOCOL, FETCH_TLS, FINGERPRINTS, HEADER_MAP, HOSTNAME, HOST_PORT, INTERVAL,
    INTERVALS, Invalid, LIST, LISTEN, LOG, LOG_LEVEL, MAILBOX, NETWORKS, ONLINE, PATH, PORT,
    SENDER_MAP, SENDER_PATTERNS, SERVER, SIZE, SMARTHOST, STATUS_LISTEN, STR, TLS,
    hostname_text, int_kind, parse_ip_port, show)
from masq.config.kinds import ADDRESS, BCC_MAP          # the filter stage's archiving
from masq.config.kinds import FILTER_EXITS, FILTERS, FOLDER
from masq.base.ip import is_loopback

__all__ = ["ConfigError", "Config", "Section", "load", "loads", "describe", "OPTIONS"]


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
    Option(_M, "local_domain", DOMAIN_PATTERNS, _local_domain),
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
    # masqmail parity: which addresses are local (local_addresses, globs, glob aliases)
    Option(_M, "local_addresses", ADDRESS_PATTERNS, ()),
    Option(_M, "not_local_addresses", ADDRESS_PATTERNS, ()),
    Option(_M, "globalias_file", PATH),
    Option(_M, "caseless_matching", BOOL, True),
    # masqmail parity: From_ lines for pipes and MDAs (alias pipes, mda: mailboxes)
    Option(_M, "pipe_fromline", BOOL, False),
    Option(_M, "pipe_fromhack", BOOL, False),
    Option(_M, "mda_fromline", BOOL, False),
    Option(_M, "mda_fromhack", BOOL, False),
    # masqmail parity: templates and logging (errmsg_file, warnmsg_file)
    Option(_M, "errmsg_file", PATH),
    Option(_M, "warnmsg_file", PATH),
    # filter stage: checks in the dialogue (dnsbl, dnswl, sender and HELO checks)
    Option(_M, "dnsbl", DNSBL_SITES, ()),
    Option(_M, "dnswl", DNSBL_SITES, ()),
    Option(_M, "dnsbl_threshold", COUNT, 1),
    Option(_M, "check_sender_domain", BOOL, False),
    Option(_M, "check_helo", BOOL, False),
    Option(_M, "smtp_greet_delay", INTERVAL, 0.0),
    # filter stage: greylisting
    Option(_M, "greylist", BOOL, False),
    Option(_M, "greylist_delay", INTERVAL, 300.0),
    Option(_M, "greylist_window", INTERVAL, 86400.0),
    Option(_M, "greylist_whitelist_after", COUNT, 5),
    Option(_M, "greylist_whitelist_time", INTERVAL, 30 * 86400.0),
    Option(_M, "greylist_exempt", LIST, ("postmaster", "abuse")),
    Option(_M, "greylist_max_entries", COUNT, 10000),
    # filter stage: content filters
    Option(_M, "filter", FILTERS, ()),
    Option(_M, "filter_timeout", INTERVAL, 120.0),
    Option(_M, "filter_exit", FILTER_EXITS, ()),
    Option(_M, "spam_folder", FOLDER, ""),
    # filter stage: archiving (always_bcc, sender_bcc, recipient_bcc, log_user)
    Option(_M, "always_bcc", ADDRESS),
    Option(_M, "log_user", ADDRESS),
    Option(_M, "sender_bcc", BCC_MAP, ()),
    Option(_M, "recipient_bcc", BCC_MAP, ()),

    Option(_U, "password", STR, secret=True),
    Option(_U, "mailbox", MAILBOX),
    Option(_U, "mda_fromline", BOOL),
    Option(_U, "mda_fromhack", BOOL),

    Option(_R, "online", ONLINE, "always"),
    Option(_R, "online_require_route", BOOL, False),
    Option(_R, "online_name", STR),
    Option(_R, "modem_min_signal", int_kind(-113, -51)),
    Option(_R, "smarthost", SMARTHOST),
    Option(_R, "port", PORT, 25),
    Option(_R, "tls", TLS, "opportunistic"),
    Option(_R, "tls_verify", BOOL, True),
    Option(_R, "tls_ca", PATH),
    Option(_R, "auth_user", STR),
    Option(_R, "auth_pass", STR, secret=True),
    Option(_R, "helo", HOSTNAME),
    Option(_R, "allowed_sender", SENDER_PATTERNS, ()),
    Option(_R, "denied_sender", SENDER_PATTERNS, ()),
    Option(_R, "allowed_recipient", ADDRESS_PATTERNS, ()),
    Option(_R, "denied_recipient", ADDRESS_PATTERNS, ()),
    Option(_R, "allowed_from", ADDRESS_PATTERNS, ()),
    Option(_R, "denied_from", ADDRESS_PATTERNS, ()),
    Option(_R, "from_domain", STR),
    Option(_R, "map_sender", SENDER_MAP, ()),
    Option(_R, "map_from", HEADER_MAP, ()),
    Option(_R, "last_route", BOOL, False),
    Option(_R, "connect_error_fail", BOOL, False),
    Option(_R, "pipe", COMMAND),
    Option(_R, "wrapper", COMMAND),
    Option(_R, "timeout", INTERVAL, 300.0),
    Option(_R, "max_message_size", SIZE, 0),
    Option(_R, "pop3_login", STR),
    # masqmail parity: header rewrites (map_reply_to, map_followup_to ...)
    Option(_R, "map_reply_to", HEADER_MAP, ()),
    Option(_R, "map_followup_to", HEADER_MAP, ()),
    Option(_R, "map_outgoing", HEADER_MAP, ()),
    # masqmail parity: From_ lines for pipes and MDAs
    Option(_R, "pipe_fromline", BOOL, False),
    Option(_R, "pipe_fromhack", BOOL, False),

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
    Option(_F, "max_count", int_kind(0), 0),
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

    def copies_wanted(self):
        """Return True if an archive copy is configured (always_bcc, log_user, sender_bcc,
        recipient_bcc); masq/policy/archive.py, imported only then, makes them."""
        main = self.main
        return bool(main.always_bcc or main.log_user or main.sender_bcc or main.recipient_bcc)

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
        hostname_text(main.hostname)
    except ValueError:
        raise config.error(main, "hostname", "the %s %s cannot be used in SMTP: set option "
                           "hostname (letters, digits, hyphens and dots, at most 253)"
                           % ("option hostname" if main.is_set("hostname")
                              else "system host name", show(main.hostname))) from None
    if main.status_listen and not main.status_password:
        if not is_loopback(parse_ip_port(main.status_listen)[0]):
            raise config.error(main, "status_listen", "status_listen %s is not a loopback "
                               "address: set status_password (the page would be open to "
                               "the network)" % main.status_listen)
    if main.relay_cert and not (main.tls_cert and main.tls_client_ca):
        raise config.error(main, "relay_cert", "relay_cert needs tls_cert (TLS for clients) "
                           "and tls_client_ca (what their certificates are checked against)")
    _check_fetches(config)
    if main.greylist and main.greylist_window <= main.greylist_delay:
        raise config.error(main, "greylist_window" if main.is_set("greylist_window") else
                           "greylist_delay", "greylist_window must be longer than "
                           "greylist_delay (no retry could ever pass)")
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
                               "route, or 'always')" % (fetch.name, show(fetch.route)))
    for route in config.routes:
        if route.pop3_login:
            fetch = config.fetch(route.pop3_login)
            if fetch is None or fetch.protocol != "pop3":
                raise config.error(route, "pop3_login", "route '%s': pop3_login names no "
                                   "POP3 fetch section (%s)" % (route.name,
                                                                show(route.pop3_login)))


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
                              % (where, row.kind.expected, detail or show(item))) from None
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
