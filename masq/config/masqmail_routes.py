"""masqmail route and get files as masq sections, and the draft configuration they go into.

Owns `Draft` (the UCI sections being built, each value checked against masq's schema as it
is put, and the list of what was not carried and why), the conversion of one route file
into a `config route` section (conditions, SMTP, AUTH, the TLS wrappers masqmail needed
and masq does natively, pipes, address maps, the route options of 0.2.x), of one 0.2.x get
file into a `config fetch` section, and of masqmail's `${var}` commands into masq's
placeholder templates. masqmail's own main file is masq.config.masqmail_import's.

Hostile input: the administrator's files, possibly from an older masqmail. A value masq
cannot take is never written: it becomes one "not carried" line naming the option, the
file and line, and why. A route file that cannot be read is one such line too; a syntax
error in it raises ConfigError (masq.config.masqmail).
"""

import os
import re
import shlex

from masq.config import masqmail
from masq.config.schema import SCHEMA
from masq.config.uci import ConfigError, RawOption, RawSection

# masqmail's ${var} (MDA, route pipe) -> masq's placeholder; others have none.
VARIABLES = {"rcpt_local": "%u", "rcpt_domain": "%d", "rcpt": "%r", "return_path": "%s"}
_VARIABLE = re.compile(r"\$\{([A-Za-z_]+)\}|\$([A-Za-z_]+)")
NEVER_ONLINE = "file:/var/run/masq/online-route"   # query routes without online_query
PENDING = "masq has no equivalent yet (issue 14)"


class Draft:
    """The masq configuration being written, and one line per thing not carried over."""

    def __init__(self):
        self.main = RawSection("masq", "main", 0)
        self.users = {}             # name -> RawSection
        self.routes = []
        self.fetches = []
        self.said = []              # (path, line, text): what was not carried, and why

    def sections(self):
        """Return every section in the order they are written."""
        return [self.main] + list(self.users.values()) + self.routes + self.fetches

    def skip(self, setting, why):
        """Record that setting is not carried over, and why."""
        self.note(setting, "not carried: " + why)

    def note(self, setting, text):
        """Record how setting was carried over when its meaning changes."""
        self.said.append((setting.path, setting.line, "%s: %s" % (setting.name, text)))

    def lines(self):
        """Return the lines for stderr, `FILE:LINE: option: text`, files in the order they
        were read, lines in file order."""
        files = list(dict.fromkeys(path for path, _, _ in self.said))
        said = sorted(self.said, key=lambda item: (files.index(item[0]), item[1]))
        return ["%s:%d: %s" % item for item in said]

    def has(self, section_type, option):
        """Return True if masq's schema has option in sections of section_type."""
        return option in SCHEMA[section_type]

    def put(self, section, option, value, setting):
        """Set option (a list option: append the items) if masq takes the value; else
        record why not. Return True if it was set."""
        row = SCHEMA[section.type].get(option)
        if row is None:
            self.skip(setting, PENDING)
            return False
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not row.kind.is_list:
            raise ValueError("%s is not a list option" % option)
        for item in values:
            try:
                row.kind.convert(item)
            except ValueError as exc:
                self.skip(setting, "masq's %s does not take %r (expected %s)%s"
                          % (option, item, row.kind.expected,
                             ": %s" % exc if str(exc) and str(exc) != item else ""))
                return False
        if row.kind.is_list:
            old = section.options.get(option)
            values = (old.value if old else []) + values
            section.options[option] = RawOption(values, 0)
        else:
            section.options[option] = RawOption(values[0], 0)
        return True

    def name(self, wanted, fallback="route"):
        """Return a section name made of wanted (UCI: letters, digits, _) that no section
        has yet (UCI: one name, one section, whatever its type)."""
        base = re.sub(r"[^A-Za-z0-9_]", "_", wanted) or fallback
        taken = {s.name for s in self.sections()}
        name, number = base, 2
        while name in taken:
            name, number = "%s_%d" % (base, number), number + 1
        return name


def command_template(text):
    """Return (masq template, [masqmail variables it has no placeholder for]) for a
    masqmail command: a literal % becomes %%, ${rcpt_local} %u and so on."""
    unknown = []

    def replace(match):
        var = match.group(1) or match.group(2)
        if var in VARIABLES:
            return VARIABLES[var]
        unknown.append(var)
        return match.group(0)
    return _VARIABLE.sub(replace, text.replace("%", "%%")), unknown


def masq_command(draft, setting):
    """Return setting's command as a masq template, or None (recorded) if masq has no
    placeholder for one of its variables."""
    template, unknown = command_template(setting.value)
    if not unknown:
        return template
    draft.skip(setting, "masq has no placeholder for %s (it has %s; the environment "
               "holds SENDER_LOCAL, SENDER_DOMAIN, MESSAGE_ID)"
               % (", ".join("${%s}" % v for v in unknown),
                  ", ".join("${%s} %s" % kv for kv in VARIABLES.items())))
    return None


def put_command(draft, section, option, setting):
    """Put a masqmail command into option as a masq template; return True if set."""
    template = masq_command(draft, setting)
    return template is not None and draft.put(section, option, template, setting)


def route_section(draft, path, wanted, online, named_by, online_name=None):
    """Convert the route file at path into a `config route` section called about wanted,
    with detector online; return it, or None (recorded) if the file cannot be read."""
    try:
        settings = masqmail.read(path)
    except ConfigError as exc:
        if exc.line:
            raise
        draft.skip(named_by, "route file %s: %s" % (path, exc.message))
        return None
    section = RawSection("route", draft.name(wanted), 0)
    draft.routes.append(section)
    if online != "always":
        draft.put(section, "online", online, named_by)
    if online_name is not None and online_name != section.name:
        draft.put(section, "online_name", online_name, named_by)
    _Route(draft, section, settings).convert()
    return section


def last_of_each(draft, settings):
    """Return {name: setting} of the last setting of each name, in the order of those
    (masqmail uses the last); note each earlier one as not carried."""
    last = {}
    for setting in settings:
        earlier = last.pop(setting.name, None)
        if earlier is not None:
            draft.skip(earlier, "set again at line %d (masqmail uses the last)"
                       % setting.line)
        last[setting.name] = setting
    return last


def route_name(path):
    """Return the section name a route file suggests: its file name without `.route`."""
    base = os.path.basename(path)
    return base[:-len(".route")] if base.endswith(".route") else base


# route options: masqmail name -> masq list option (conditions, same globs)
CONDITIONS = {
    "allowed_senders": "allowed_sender", "denied_senders": "denied_sender",
    "allowed_recipients": "allowed_recipient", "denied_recipients": "denied_recipient",
    "allowed_from_hdrs": "allowed_from", "denied_from_hdrs": "denied_from",
    # 0.2.x names for the same (a pattern without @ matches the local part)
    "allowed_mail_locals": "allowed_sender", "not_allowed_mail_locals": "denied_sender",
    "allowed_return_paths": "allowed_sender", "not_allowed_return_paths": "denied_sender",
}
DOMAIN_CONDITIONS = {"allowed_rcpt_domains": "allowed_recipient",
                     "not_allowed_rcpt_domains": "denied_recipient"}
# address maps: masqmail name -> masq list option of `PATTERN: REPLACEMENT` rules
MAPS = {
    "map_h_from_addresses": "map_from",
    "map_return_path_addresses": "map_sender",
    "map_h_reply_to_addresses": "map_reply_to",
    "map_h_mail_followup_to_addresses": "map_followup_to",
    "map_outgoing_addresses": "map_outgoing",
}
DOMAIN_MAPS = {"set_h_from_domain": "map_from", "set_return_path_domain": "map_sender",
               "set_h_reply_to_domain": "map_reply_to"}
BOOLEANS = {"last_route": "last_route", "connect_error_fail": "connect_error_fail",
            "pipe_fromline": "pipe_fromline", "pipe_fromhack": "pipe_fromhack"}
WHY = {
    "do_correct_helo": "masq sends `helo` (default: hostname); it does not look up the "
                       "local address's reverse DNS name",
    "do_ssl": "it never had an effect in masqmail",
    "expand_h_sender_domain": "removed in masqmail 1.0; use map_h_sender_addresses",
    "expand_h_sender_address": "removed in masqmail 1.0; use map_h_sender_addresses",
    "pop3_login": "masq's pop3_login names a `config fetch` section: add one for the "
                  "mailbox and set it by hand",
}
AUTH = ("auth_name", "auth_login", "auth_secret")
SMTP_ONLY = ("mail_host", "smtp_port", "wrapper", "instant_helo", "resolve_list",
             "helo_name", "do_pipelining") + AUTH


class _Route:
    """One route file's settings converted into one route section."""

    def __init__(self, draft, section, settings):
        self.draft = draft
        self.section = section
        self.by_name = last_of_each(draft, settings)

    def convert(self):
        """Put every setting of the file into the section, or record why not."""
        by_name, draft, section = self.by_name, self.draft, self.section
        is_pipe = "pipe" in by_name
        for name, setting in by_name.items():
            if name in CONDITIONS:
                draft.put(section, CONDITIONS[name], _list(setting), setting)
            elif name in DOMAIN_CONDITIONS:
                draft.put(section, DOMAIN_CONDITIONS[name],
                          ["*@" + item for item in _list(setting)], setting)
            elif name in MAPS:
                self._map(MAPS[name], setting)
            elif name == "map_h_sender_addresses":
                self._sender_map(setting)
            elif name in DOMAIN_MAPS:
                draft.put(section, DOMAIN_MAPS[name], ["*: *@" + setting.value.strip()],
                          setting)
            elif name in BOOLEANS:
                if masqmail.boolean(setting) or draft.has("route", BOOLEANS[name]):
                    draft.put(section, BOOLEANS[name], _bool(setting), setting)
            elif name == "max_size":
                if setting.value.strip() not in ("", "0"):
                    draft.put(section, "max_message_size", setting.value.strip(), setting)
            elif name == "pipe":
                put_command(draft, section, "pipe", setting)
            elif name == "protocol":
                if setting.value.strip() == "pipe" and not is_pipe:
                    draft.skip(setting, "protocol pipe without a pipe command")
            elif name in SMTP_ONLY:
                if is_pipe:
                    draft.skip(setting, "the route delivers through its pipe: SMTP "
                               "options do not apply (as in masqmail)")
            elif name in WHY:
                if name != "do_correct_helo" or masqmail.boolean(setting):
                    draft.skip(setting, WHY[name])
            else:
                draft.skip(setting, "masqmail has no route option of this name")
        if not is_pipe:
            self._smtp()

    def _map(self, option, setting):
        rules = [_rule(item) for item in masqmail.items(setting)]
        bad = [item for item, rule in zip(masqmail.items(setting), rules) if rule is None]
        if bad:
            self.draft.skip(setting, "%r is not `PATTERN: REPLACEMENT`" % bad[0][0])
            return
        self.draft.put(self.section, option, rules, setting)

    def _sender_map(self, setting):
        """masq's map_from rewrites From: and Sender: alike: carry the Sender: table only
        when it is the From: table (or there is none)."""
        own = self.by_name.get("map_h_from_addresses")
        if self.draft.has("route", "map_h_sender"):
            self._map("map_h_sender", setting)
        elif own is None:
            self._map("map_from", setting)
            self.draft.note(setting, "carried as map_from: masq rewrites From: and Sender: "
                            "with one table")
        elif own.value.split() != setting.value.split():
            self.draft.skip(setting, "masq rewrites Sender: with map_from (the From: "
                            "table), and this table differs from map_h_from_addresses")

    def _smtp(self):
        """Carry the SMTP options, which depend on one another."""
        by_name, draft, section = self.by_name, self.draft, self.section
        host = by_name.get("mail_host")
        if host is not None and not host.value.strip():
            host = None                         # empty: direct delivery
        port = by_name.get("smtp_port")
        wrapper = by_name.get("wrapper")
        tls = _tls_wrapper(wrapper.value) if wrapper is not None else None
        if wrapper is not None and tls is None:
            put_command(draft, section, "wrapper", wrapper)
            if "instant_helo" in by_name and masqmail.boolean(by_name["instant_helo"]):
                draft.skip(by_name["instant_helo"], "masq waits for the greeting, also "
                           "through a wrapper (masq speaks STARTTLS itself: drop the wrapper "
                           "and set tls 'starttls')")
        elif tls is not None:
            for option, value in tls:
                draft.put(section, option, value, wrapper)
            if host is not None and host.value.split(":")[0] not in wrapper.value:
                draft.note(host, "not used: the wrapper named the server")
            host = None
        elif "instant_helo" in by_name and masqmail.boolean(by_name["instant_helo"]):
            draft.skip(by_name["instant_helo"], "masq waits for the server's greeting")
        if host is not None:
            value = host.value.strip()
            if ":" not in value and port is not None:
                value = "%s:25" % value         # masqmail's smtp_port is for MX only
            draft.put(section, "smarthost", value, host)
        if port is not None and host is None and tls is None:
            draft.put(section, "port", port.value.strip(), port)   # else unused, as in masqmail
        if "helo_name" in by_name:
            draft.put(section, "helo", by_name["helo_name"].value.strip(),
                      by_name["helo_name"])
        if "do_pipelining" in by_name and not masqmail.boolean(by_name["do_pipelining"]):
            draft.skip(by_name["do_pipelining"], "masq uses PIPELINING whenever the server "
                       "offers it")
        if "resolve_list" in by_name:
            self._resolve(by_name["resolve_list"], host is not None or tls is not None)
        self._auth(tls is not None)

    def _resolve(self, setting, smarthost):
        methods = [item for item, _, _ in masqmail.items(setting)]
        unknown = [m for m in methods if m not in ("dns_mx", "dns_a", "byname")]
        if unknown:
            self.draft.skip(setting, "unknown resolver %r" % unknown[0])
        elif not smarthost and "byname" in methods and not ({"dns_mx", "dns_a"} & set(methods)):
            self.draft.skip(setting, "masq delivers to the recipient domain's MX hosts "
                            "(A/AAAA when there is none) and looks names up in hosts_file "
                            "first; it has no byname-only mode")

    def _auth(self, tls):
        given = {name: self.by_name[name] for name in AUTH if name in self.by_name}
        if not given:
            return
        if len(given) < len(AUTH):
            for setting in given.values():
                self.draft.skip(setting, "masqmail authenticates only with all three of "
                                "auth_name, auth_login and auth_secret")
            return
        mechanism = given["auth_name"].value.strip().lower()
        if mechanism not in ("login", "cram-md5"):
            self.draft.skip(given["auth_name"], "masqmail knows only login and cram-md5")
            return
        self.draft.put(self.section, "auth_user", given["auth_login"].value,
                       given["auth_login"])
        self.draft.put(self.section, "auth_pass", given["auth_secret"].value,
                       given["auth_secret"])
        if mechanism == "login" and not tls:
            self.draft.note(given["auth_name"], "masq picks the mechanism: PLAIN or LOGIN "
                            "only under TLS (STARTTLS when offered), CRAM-MD5 without; for "
                            "LOGIN on a link without TLS set tls 'none'")


def _list(setting):
    return [item for item, _, _ in masqmail.spliced(setting)]


def _bool(setting):
    return "1" if masqmail.boolean(setting) else "0"


def _rule(item):
    """Return masqmail's `key: replacement` as masq's `KEY: REPLACEMENT`, or None."""
    key, colon, replacement = item[0].partition(":")
    if not colon or not key.strip() or not replacement.strip():
        return None
    return "%s: %s" % (key.strip(), replacement.strip())


# TLS wrappers masqmail's docs give: gnutls-cli and openssl s_client

_GNUTLS_FLAGS = {"--crlf", "--quiet", "-q"}
_GNUTLS_VALUES = {"--logfile", "--starttls-proto", "-p", "--port", "--x509cafile"}
_OPENSSL_FLAGS = {"-quiet", "-crlf", "-ign_eof", "-no_ign_eof", "-brief",
                  "-verify_return_error", "-verify_quiet"}
_OPENSSL_VALUES = {"-connect", "-starttls", "-CAfile", "-servername", "-verify"}


def _tls_wrapper(command):
    """Return the route options of a gnutls-cli or openssl s_client wrapper, or None if the
    command is something else (or has options this does not know)."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if not argv:
        return None
    program = os.path.basename(argv[0])
    if program == "gnutls-cli":
        found = _options(argv[1:], _GNUTLS_FLAGS | {"--insecure"}, _GNUTLS_VALUES)
        if found is None or len(found["args"]) != 1:
            return None
        port = found.get("-p") or found.get("--port")
        host = found["args"][0]
        starttls = found.get("--starttls-proto")
        verify = "--insecure" not in found
        ca = found.get("--x509cafile")
    elif program == "openssl" and argv[1:2] == ["s_client"]:
        found = _options(argv[2:], _OPENSSL_FLAGS, _OPENSSL_VALUES)
        if found is None or found["args"] or "-connect" not in found:
            return None
        host, _, port = found["-connect"].rpartition(":")
        starttls = found.get("-starttls")
        verify, ca = True, found.get("-CAfile")
    else:
        return None
    if not host or not port or starttls not in (None, "smtp"):
        return None
    options = [("smarthost", "%s:%s" % (host, port)),
               ("tls", "starttls" if starttls else "tls")]
    if not verify:
        options.append(("tls_verify", "0"))
    if ca:
        options.append(("tls_ca", ca))
    return options


def _options(words, flags, valued):
    """Return {option: value or True, "args": [positional]} of words, or None for an
    option not in flags or valued. `--opt=value` and `--opt value` are both read."""
    found, args, at = {}, [], 0
    while at < len(words):
        word = words[at]
        name, eq, value = word.partition("=")
        if word.startswith("2>"):
            pass                                # the docs' `2>/dev/null`: stderr is logged
        elif word in flags:
            found[word] = True
        elif name in valued and eq:
            found[name] = value
        elif word in valued and at + 1 < len(words):
            found[word] = words[at + 1]
            at += 1
        elif word.startswith("-"):
            return None
        else:
            args.append(word)
        at += 1
    found["args"] = args
    return found


# 0.2.x get files (POP3): a `config fetch` section

GET_OPTIONS = {"server", "port", "protocol", "user", "pass", "address", "do_keep",
               "max_size", "max_count", "wrapper", "resolve_list", "do_uidl"}
GET_WHY = {
    "return_path": "masq keeps each fetched message's own return path",
    "do_uidl_dele": "masq deletes a message once it is queued (keep '0'), or never "
                    "(keep '1')",
    "max_size_delete": "masq leaves a message over max_size on the server",
}


def fetch_section(draft, path, wanted, route, named_by):
    """Convert a 0.2.x get file into a `config fetch` section; return it, or None."""
    try:
        settings = masqmail.read(path)
    except ConfigError as exc:
        if exc.line:
            raise
        draft.skip(named_by, "get file %s: %s" % (path, exc.message))
        return None
    by_name = last_of_each(draft, settings)
    missing = [n for n in ("server", "user", "pass") if n not in by_name]
    if missing:
        draft.skip(named_by, "get file %s has no %s" % (path, " or ".join(missing)))
        return None
    section = RawSection("fetch", draft.name(wanted, "fetch"), 0)
    for name, setting in by_name.items():
        if name in GET_WHY:
            draft.skip(setting, GET_WHY[name])
        elif name not in GET_OPTIONS:
            draft.skip(setting, "masqmail 0.2's get files have no option of this name")
    tls = _get_tls(draft, by_name)
    server = by_name["server"].value.strip()
    if "port" in by_name and tls is None:
        server = "%s:%s" % (server, by_name["port"].value.strip())
    if tls is not None:
        server = tls
    if not draft.put(section, "server", server, by_name["server"]):
        return None
    protocol = by_name.get("protocol")
    if protocol is not None and protocol.value.strip().lower() not in ("pop3", "apop"):
        draft.skip(protocol, "masq fetches by POP3 or IMAP")
        return None
    draft.put(section, "user", by_name["user"].value, by_name["user"])
    draft.put(section, "password", by_name["pass"].value, by_name["pass"])
    draft.put(section, "tls", "tls" if tls else "none", by_name.get("wrapper", named_by))
    if "address" in by_name:
        draft.put(section, "deliver_to", by_name["address"].value.strip(),
                  by_name["address"])
    if "do_keep" in by_name:
        draft.put(section, "keep", _bool(by_name["do_keep"]), by_name["do_keep"])
    for name in ("max_size", "max_count"):
        if name in by_name and by_name[name].value.strip() not in ("", "0"):
            draft.put(section, name, by_name[name].value.strip(), by_name[name])
    if route != "always":
        draft.put(section, "route", route, named_by)
    draft.fetches.append(section)
    return section


def _get_tls(draft, by_name):
    """Return HOST:PORT of a get file's TLS wrapper (openssl s_client -connect), or None."""
    wrapper = by_name.get("wrapper")
    if wrapper is None:
        return None
    tls = _tls_wrapper(wrapper.value)
    if tls is None or tls[1] != ("tls", "tls"):
        draft.skip(wrapper, "masq speaks TLS itself (tls 'tls' or 'starttls'); this "
                   "wrapper is not one it recognises")
        return None
    return tls[0][1]
