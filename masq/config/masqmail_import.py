"""`masq import-masqmail [CONF] [-o FILE] [--force]`: masqmail's configuration as masq's.

Owns the conversion of masqmail.conf (default /etc/masqmail/masqmail.conf, masqmail 1.0
and the 0.2.x names its docs list) into one UCI file: every main option, the routes
(`permanent_routes` first, then each `query_routes.NAME` file, as masqmail tries them),
online detection (`online_query` as `pipe:` or, for `cat FILE`, `file:`; 0.2.x's
online_detect file/pipe/mserver), local delivery (mbox, MDA, per-user choices) and 0.2.x
POP3 get files. masqmail's defaults that differ from masq's (local domains, warning
intervals, the 4-day lifetime, case-sensitive local parts) are written out, so mail
behaves as before. Route and get files are masq.config.masqmail_routes'; the grammar is
masq.config.masqmail's.

Output: the UCI text on stdout, or `-o FILE` (written atomically, mode 0600 since routes
hold passwords, never over an existing file without --force). On stderr, one line per
option not carried over (`FILE:LINE: option: not carried: why`) or carried with a changed
meaning. The text is checked with masq's own loader before it is written.

Exit (sysexits): 0 written (whatever was not carried), 64 usage, 65 a syntax error in a
masqmail file (`FILE:LINE: message`), 66 CONF unreadable, 73 FILE exists or cannot be
written, 70 if the result does not load (a bug).
"""

import os
import sys

from masq import __version__
from masq.base import exits
from masq.base.ip import is_ipv4
from masq.config import masqmail, uci
from masq.config.masqmail_routes import (
    NEVER_ONLINE, PENDING, Draft, fetch_section, last_of_each, masq_command, route_name,
    route_section)
from masq.config.uci import ConfigError, RawSection

DEFAULT_CONF = "/etc/masqmail/masqmail.conf"
USAGE = "usage: masq import-masqmail [CONF] [-o FILE] [--force]"
# masqmail's defaults where masq's differ
WARN_INTERVALS = ["1h", "4h", "8h", "1d", "2d", "3d"]
MAX_DEFER_TIME = "4d"
MAIL_DIR = "/var/mail"
MSERVDETECT = "/usr/bin/mservdetect"

# main options masq takes as they are: masqmail name -> (masq name, how to read it)
SAME = {
    "do_save_envelope_to": ("do_save_envelope_to", "bool"),
    "do_queue": ("do_queue", "bool"),
    "defer_all": ("defer_all", "bool"),
    "alias_file": ("alias_file", "text"),
    "globalias_file": ("globalias_file", "text"),
    "caseless_matching": ("caseless_matching", "bool"),
    "alias_local_caseless": ("caseless_matching", "bool"),        # 0.2.x
    "local_addresses": ("local_addresses", "list"),
    "not_local_addresses": ("not_local_addresses", "list"),
    "pipe_fromline": ("pipe_fromline", "bool"),
    "pipe_fromhack": ("pipe_fromhack", "bool"),
    "mda_fromline": ("mda_fromline", "bool"),
    "mda_fromhack": ("mda_fromhack", "bool"),
    "log_user": ("log_user", "text"),
    "max_defer_time": ("queue_lifetime", "text"),
}
WHY = {
    "run_as_user": "masq starts as root and drops to option user (the OpenWrt package: "
                   "masq); it has no mode that keeps the invoking user",
    "lock_dir": "masq locks its queue inside spool_dir",
    "do_relay": "masq relays only for relay_net (default: this host), authenticated users "
                "and relay_cert: list your LAN in relay_net",
    "ident_trusted_nets": "removed in masqmail 0.3.0; masq has no ident",
    "remote_port": "a 0.2.x option: set each route's port",
}
ROUTE_LISTS = ("query_routes.", "online_routes.", "connect_route.")     # 1.0, 0.2.x, 0.2.x
DETECTION = ("online_query", "online_detect", "online_file", "online_pipe", "mserver_iface")
DELIVERY = ("mbox_default", "mbox_users", "mda_users", "mda", "maildir_users", "mail_dir")
LATER = DETECTION + DELIVERY + ("permanent_routes", "local_net_route", "local_nets")


def run(path, rest):
    """Run `masq import-masqmail` with its arguments; return the exit status."""
    if path is not None:
        raise exits.Failure("import-masqmail: -C names masq's configuration; write the "
                            "result with -o FILE", exits.USAGE)
    if rest in (["-h"], ["--help"]):
        sys.stdout.write(USAGE + "\n\nConvert masqmail.conf (default %s) and the "
                         "route files it names\ninto masq's configuration: on stdout, or "
                         "into FILE (never over an existing\none without --force). What "
                         "cannot be carried over is listed on stderr.\n" % DEFAULT_CONF)
        return exits.OK
    conf, output, force = _arguments(rest)
    text, lines = convert(conf)
    for line in lines:
        sys.stderr.write("masq: %s\n" % line)
    if output is None:
        sys.stdout.write(text)
        return exits.OK
    from masq.config.presets import write
    write(output, text, force)
    sys.stderr.write("masq: wrote %s; `masq -C %s check-config` shows the effective "
                     "settings\n" % (output, output))
    return exits.OK


def _arguments(rest):
    conf, output, force, at = None, None, False, 0
    while at < len(rest):
        word = rest[at]
        if word == "--force":
            force = True
        elif word == "-o" and at + 1 < len(rest):
            output, at = rest[at + 1], at + 1
        elif word.startswith("-") or conf is not None:
            raise exits.Failure("import-masqmail: unexpected %r (%s)" % (word, USAGE),
                                exits.USAGE)
        else:
            conf = word
        at += 1
    return conf or DEFAULT_CONF, output, force


def convert(conf):
    """Return (UCI text, [lines about what was not carried]) for masqmail's file conf."""
    try:
        settings = masqmail.read(conf)
        draft = Draft()
        _Main(draft, settings, conf).convert()
    except ConfigError as exc:
        raise exits.Failure(str(exc), exits.DATAERR if exc.line else exits.NOINPUT) from None
    text = ("# masq configuration imported from %s by `masq import-masqmail` (masq %s).\n"
            "# Every option: docs/CONFIG.md; what changed: docs/MIGRATING.md.\n"
            % (conf, __version__)) + uci.dump(draft.sections())
    from masq.config import schema
    try:
        schema.loads(text, "(imported)")
    except ConfigError as exc:
        raise exits.Failure("import-masqmail: the result does not load (a bug): %s" % exc,
                            exits.SOFTWARE) from None
    return text, draft.lines()


class _Main:
    """masqmail.conf's settings converted into the draft."""

    def __init__(self, draft, settings, conf):
        self.draft = draft
        self.main = draft.main
        self.conf = conf
        self.by_name = last_of_each(draft, settings)

    def convert(self):
        """Convert every setting: main options, then delivery, routes and fetching."""
        hostname = self._hostname()
        for name, setting in self.by_name.items():
            handler = _HANDLERS.get(name)
            if handler is not None:
                handler(self, setting)
            elif name in SAME:
                self._same(setting, *SAME[name])
            elif name in WHY:
                if name != "run_as_user" or masqmail.boolean(setting):
                    self.draft.skip(setting, WHY[name])
            elif name.startswith(ROUTE_LISTS + ("get.", "online_gets.")) or name in LATER:
                continue
            else:
                self.draft.skip(setting, "masqmail has no option of this name (it only "
                                "logs a warning)")
        self._defaults(hostname)
        self._delivery()
        self._routes()
        self._fetches()

    # main options

    def _hostname(self):
        setting = self.by_name.get("host_name")
        if setting is None:
            return None
        value = setting.value.strip()
        if value.startswith("/"):           # the first line of a file, e.g. /etc/mailname
            try:
                value = uci.read_file(value).split("\n", 1)[0].strip()
            except ConfigError as exc:
                self.draft.skip(setting, "%s (masq uses the system host name)" % exc.message)
                return None
        return value if self.draft.put(self.main, "hostname", value, setting) else None

    def _same(self, setting, option, how):
        if how == "bool":
            value = "1" if masqmail.boolean(setting) else "0"
            if value == "0" and not self.draft.has("masq", option):
                return                      # masq does not do it either
        elif how == "list":
            value = [item for item, _, _ in masqmail.spliced(setting)]
        else:
            value = setting.value.strip()
        self.draft.put(self.main, option, value, setting)

    def _template(self, setting):
        """masqmail's templates are whole messages; masq's give the Subject: and text of
        an RFC 3464 report (docs/CONFIG.md): one cannot stand for the other."""
        if not self.draft.has("masq", setting.name):
            self.draft.skip(setting, PENDING)
            return
        self.draft.skip(setting, "masq's template is a Subject: line and the report's "
                        "text (no From:, MIME parts, @msg_headers or @msg_body): write one "
                        "from %s and set %s" % (setting.value.strip(), setting.name))

    def _local_hosts(self, setting):
        names = [item for item, _, _ in masqmail.spliced(setting)]
        if names:
            self.draft.put(self.main, "local_domain", names, setting)

    def _listen(self, setting):
        listen = []
        for item, _, _ in masqmail.spliced(setting):
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "25")
            host = "127.0.0.1" if host == "localhost" else host
            if not is_ipv4(host):
                self.draft.skip(setting, "%r: masq listens on addresses, not names (write "
                                "the IP address)" % item)
                continue
            listen.append("smtp://%s:%s" % (host, port or "25"))
        if listen and self.draft.put(self.main, "listen", listen, setting):
            if any(not url.startswith("smtp://127.") for url in listen):
                self.draft.note(setting, "masqmail relayed for anyone who could connect; "
                                "masq only for relay_net: list your LAN there")

    def _syslog(self, setting):
        if masqmail.boolean(setting):
            self.draft.put(self.main, "log", "syslog", setting)

    def _log_dir(self, setting):
        if "use_syslog" in self.by_name and masqmail.boolean(self.by_name["use_syslog"]):
            return
        value = setting.value.strip().rstrip("/")
        self.draft.put(self.main, "log", "%s/masq.log" % value if value else "stderr",
                       setting)

    def _debug(self, setting):
        if setting.value.strip() not in ("", "0"):
            self.draft.put(self.main, "log_level", "debug", setting)

    def _pid_dir(self, setting):
        self.draft.put(self.main, "pid_file", "%s/masq.pid" % setting.value.strip().rstrip("/"),
                       setting)

    def _spool(self, setting):
        value = setting.value.strip().rstrip("/")
        spool = os.path.join(os.path.dirname(value) or "/", "masq")
        if self.draft.put(self.main, "spool_dir", spool, setting):
            self.draft.note(setting, "written as spool_dir '%s': masq's queue has its own "
                            "format (run `masqmail -q` until its queue is empty)" % spool)

    def _warn(self, setting):
        values = [item for item, _, _ in masqmail.spliced(setting)]
        self.draft.put(self.main, "warn_intervals", values, setting)

    def _max_size(self, setting):
        value = setting.value.strip()
        if value in ("", "0"):
            self.draft.skip(setting, "masq needs a limit (default 10M): set "
                            "max_message_size")
        else:
            self.draft.put(self.main, "max_message_size", value, setting)

    def _defaults(self, hostname):
        """Write masqmail's defaults where masq's differ."""
        options = self.main.options
        if "local_hosts" not in self.by_name and hostname:
            names = ["localhost", hostname.split(".")[0], hostname]
            options["local_domain"] = uci.RawOption(list(dict.fromkeys(names)), 0)
        if "warn_intervals" not in self.by_name:
            options["warn_intervals"] = uci.RawOption(list(WARN_INTERVALS), 0)
        if "max_defer_time" not in self.by_name:
            options["queue_lifetime"] = uci.RawOption(MAX_DEFER_TIME, 0)
        if not {"caseless_matching", "alias_local_caseless"} & set(self.by_name):
            options["caseless_matching"] = uci.RawOption("0", 0)   # masqmail's default

    # local delivery

    def _delivery(self):
        by_name, draft = self.by_name, self.draft
        mail_dir = by_name["mail_dir"].value.strip().rstrip("/") if "mail_dir" in by_name \
            else MAIL_DIR
        mbox = "mbox:%s/%%u" % mail_dir.replace("%", "%%")
        mda = by_name.get("mda")
        mda_spec = None
        if mda is not None:
            template = masq_command(draft, mda)
            mda_spec = None if template is None else "mda:" + template
        default = by_name.get("mbox_default")
        method = default.value.strip().lower() if default is not None else "mbox"
        if method == "mda" and mda_spec is None:
            draft.skip(default, "mbox_default is mda but no usable mda command is set "
                       "(masqmail kept such mail queued)")
            method = "mbox"
        if method == "maildir":
            draft.skip(default, "masq has maildir:/PATH with %u, not each user's home: set "
                       "option mailbox 'maildir:/home/%u/Maildir' or per user")
            method = "mbox"
        elif method not in ("mbox", "mda"):
            draft.skip(default, "expected mbox or mda")
            method = "mbox"
        setting = default or by_name.get("mail_dir") or mda
        if setting is not None:
            draft.put(self.main, "mailbox", mda_spec if method == "mda" else mbox, setting)
        if "mbox_users" in by_name and method != "mbox":
            self._users(by_name["mbox_users"], mbox)
        if "mda_users" in by_name and method != "mda":
            if mda_spec is None:
                draft.skip(by_name["mda_users"], "no usable mda command is set")
            else:
                self._users(by_name["mda_users"], mda_spec)
        if "maildir_users" in by_name:
            self._maildir_users(by_name["maildir_users"])

    def _users(self, setting, spec):
        for user, _, _ in masqmail.spliced(setting):
            self._user(setting, user, spec)

    def _user(self, setting, user, spec):
        if not uci.is_name(user):
            self.draft.skip(setting, "%r cannot name a `config user` section (letters, "
                            "digits and _ only)" % user)
            return
        section = self.draft.users.get(user)
        if section is None:
            section = self.draft.users[user] = RawSection("user", user, 0)
        self.draft.put(section, "mailbox", spec, setting)

    def _maildir_users(self, setting):
        import pwd
        for user, _, _ in masqmail.spliced(setting):
            try:
                home = pwd.getpwnam(user).pw_dir
            except KeyError:
                self.draft.skip(setting, "%r: no such user here, so no home directory for "
                                "its Maildir" % user)
                continue
            self._user(setting, user, "maildir:%s/Maildir" % home.replace("%", "%%"))

    # routes

    def _routes(self):
        by_name, draft = self.by_name, self.draft
        if "permanent_routes" in by_name:
            setting = by_name["permanent_routes"]
            for path, _, _ in masqmail.items(setting):
                route_section(draft, path, route_name(path), "always", setting)
        if "local_net_route" in by_name:
            self._local_net_route(by_name["local_net_route"])
        elif "local_nets" in by_name:
            draft.skip(by_name["local_nets"], "without local_net_route it selects nothing")
        detector = self._detector()
        for name, setting in by_name.items():
            if not name.startswith(ROUTE_LISTS):
                continue
            connection = name.partition(".")[2]
            if not connection:
                draft.skip(setting, "no connection name after the dot")
                continue
            online = detector(setting)
            if online == NEVER_ONLINE:
                draft.note(setting, "no online query: its routes are online only by `masq "
                           "flush %s` (-qo), or while %s names them"
                           % (draft.name(connection), NEVER_ONLINE[len("file:"):]))
            for path, _, _ in masqmail.items(setting):
                route_section(draft, path, connection, online, setting,
                              online_name=connection)

    def _local_net_route(self, setting):
        """0.2.x: mail for the local_nets hosts left through local_net_route at any time."""
        nets = self.by_name.get("local_nets")
        patterns = ["*@" + item for item, _, _ in masqmail.spliced(nets)] if nets else []
        for path, _, _ in masqmail.items(setting):
            route = route_section(self.draft, path, route_name(path), "always", setting)
            if route is not None and patterns:
                self.draft.put(route, "allowed_recipient", patterns, nets)
        if nets is None:
            self.draft.note(setting, "carried as permanent routes for every recipient "
                            "(no local_nets)")

    def _detector(self):
        """Return a function of a query_routes setting giving its routes' `online`."""
        by_name, draft = self.by_name, self.draft
        query = by_name.get("online_query")
        detect = by_name.get("online_detect")
        if query is not None:
            return self._query(query)
        if detect is None:
            return lambda setting: NEVER_ONLINE
        method = detect.value.strip()
        option = {"file": "online_file", "pipe": "online_pipe",
                  "mserver": "mserver_iface"}.get(method)
        given = by_name.get(option) if option else None
        if given is None:
            draft.skip(detect, "online_detect %s needs %s" % (method, option)
                       if option else "unknown method %r (file, pipe, mserver)" % method)
            return lambda setting: NEVER_ONLINE
        if method == "file":
            return self._online_spec("file:" + given.value.strip(), given)
        if method == "pipe":
            return self._query(given)
        host, _, port = given.value.strip().partition(":")
        command = "%s %s %s" % (MSERVDETECT, host or "localhost", port or "224")
        draft.note(given, "masq has no masqdialer client: carried as online "
                   "'pipe:%s' (masqmail's mservdetect; or use iface:ppp0)" % command)
        return self._online_spec("pipe:" + command, given)

    def _query(self, setting):
        """online_query: `cat FILE` is masq's file: detector; anything else pipe:."""
        import shlex
        try:
            argv = shlex.split(setting.value)
        except ValueError as exc:
            self.draft.skip(setting, "cannot split the command: %s" % exc)
            return lambda named: NEVER_ONLINE
        if len(argv) == 2 and os.path.basename(argv[0]) == "cat" and argv[1].startswith("/"):
            return self._online_spec("file:" + argv[1], setting)
        if argv and os.path.basename(argv[0]) == "mservdetect":
            self.draft.note(setting, "masq has no masqdialer client: mservdetect (from "
                            "masqmail) stays the online query (or use iface:ppp0)")
        if "%" in setting.value:
            self.draft.skip(setting, "masq's pipe: detector refuses %% in the command: "
                            "put it in a script")
            return lambda named: NEVER_ONLINE
        return self._online_spec("pipe:" + setting.value.strip(), setting)

    def _online_spec(self, spec, setting):
        from masq.config.schema import SCHEMA
        try:
            SCHEMA["route"]["online"].kind.convert(spec)
        except ValueError:
            self.draft.skip(setting, "masq's online option does not take %r" % spec)
            return lambda named: NEVER_ONLINE
        return lambda named: spec

    # 0.2.x POP3

    def _fetches(self):
        by_name, draft = self.by_name, self.draft
        routes = {}                         # get name or file -> connection
        for name, setting in by_name.items():
            if name.startswith("online_gets."):
                for item, _, _ in masqmail.items(setting):
                    routes[item] = name.partition(".")[2]
        for name, setting in by_name.items():
            if not name.startswith("get."):
                continue
            get = name.partition(".")[2]
            path = setting.value.strip()
            connection = routes.get(get) or routes.get(path)
            route = self._route_of(connection)
            fetch_section(draft, path, get, route, setting)

    def _route_of(self, connection):
        """Return the route section name for a connection name, or 'always'."""
        for section in self.draft.routes:
            named = section.options.get("online_name")
            if section.name == connection or (named and named.value == connection):
                return section.name
        return "always"


_HANDLERS = {
    "host_name": lambda self, setting: None,        # read first, by _hostname
    "local_hosts": _Main._local_hosts,
    "listen_addresses": _Main._listen,
    "use_syslog": _Main._syslog,
    "log_dir": _Main._log_dir,
    "debug_level": _Main._debug,
    "pid_dir": _Main._pid_dir,
    "spool_dir": _Main._spool,
    "warn_intervals": _Main._warn,
    "max_msg_size": _Main._max_size,
    "errmsg_file": _Main._template,
    "warnmsg_file": _Main._template,
}
