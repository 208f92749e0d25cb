"""docs/CONFIG.md tells the truth: every option is read by some code path, every documented
default is the default, and the defaults the code decides (a route's port and timeouts)
are the ones documented.

"Read" is judged from the source: an option counts as read when code outside the schema
(masq/config/schema.py) loads it as an attribute of a section (`main.X`, `cfg.main.X`,
`route.X`, `r.X`, `section.X`); an option read only through another option's default says
so in READ_THROUGH. A parsed option that nothing reads fails here.
"""

import ast
import os
import re

from masq.config import schema as config
from masq.outbound.smtp import TIMEOUTS, SMTPSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDERS = {"masq": {"main"}, "route": {"route", "r"}, "user": {"section", "u", "user"},
           "fetch": {"settings", "s", "fetch"}}
READ_THROUGH = {("masq", "delay_warning"): "warn_intervals"}    # the default of that one
# Defaults the schema computes (or leaves to the host): what the document says instead.
COMPUTED = {
    ("masq", "hostname"): "the system host name",
    ("masq", "local_domain"): "hostname, `localhost`",
    ("masq", "warn_intervals"): "`delay_warning`",
    ("masq", "dns_server"): "from `/etc/resolv.conf`",
    ("route", "tls_ca"): "system CA bundle",
    ("route", "helo"): "the masq `hostname`",
    ("user", "mailbox"): "the masq `mailbox`",
    ("user", "mda_fromline"): "the masq `mda_fromline`",
    ("user", "mda_fromhack"): "the masq `mda_fromhack`",
    ("fetch", "server"): "(required)",
    ("fetch", "user"): "(required)",
    ("fetch", "password"): "(required)",
    ("fetch", "tls_ca"): "system CA bundle",
    ("fetch", "deliver_to"): "the local part of `user`",
    ("fetch", "max_size"): "`max_message_size`",
}
EMPTY = ("(none", "(off)", "(empty")


def documented():
    """Return {(section, option): (default cell, meaning cell)} from docs/CONFIG.md."""
    rows, section = {}, None
    with open(os.path.join(ROOT, "docs", "CONFIG.md"), encoding="utf-8") as doc:
        for line in doc:
            heading = re.match(r"## config (\S+)", line)
            if heading:
                section = heading.group(1)
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if section and len(cells) == 4 and re.fullmatch(r"`[a-z0-9_]+`", cells[0]):
                rows[(section, cells[0].strip("`"))] = (cells[2], cells[3])
    return rows


def attribute_loads():
    """Return {(holder, attribute)} loaded anywhere in masq/ outside the schema."""
    found = set()
    for folder, _, names in os.walk(os.path.join(ROOT, "masq")):
        for name in names:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or os.path.relpath(path, ROOT) == "masq/config/schema.py":
                continue
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                    value = node.value
                    holder = value.attr if isinstance(value, ast.Attribute) else \
                        getattr(value, "id", None)
                    found.add((holder, node.attr))
    return found


def test_every_option_is_read_by_some_code_path():
    loads = attribute_loads()
    unread = [(row.section, row.name) for row in config.OPTIONS
              if not any((holder, row.name) in loads for holder in HOLDERS[row.section])
              and (row.section, row.name) not in READ_THROUGH]
    assert unread == []
    for (section, name), through in READ_THROUGH.items():
        assert (section, through) in {(r.section, r.name) for r in config.OPTIONS}
        main = config.loads("config masq 'main'\n\toption %s '90'\n" % name).main
        assert getattr(main, through) == [90.0]


def test_every_documented_default_is_the_schema_default():
    rows = documented()
    wrong = []
    for row in config.OPTIONS:
        cell = rows[(row.section, row.name)][0]
        if (row.section, row.name) in COMPUTED:
            if cell != COMPUTED[(row.section, row.name)] or not (
                    row.default is None or callable(row.default)):
                wrong.append((row.name, cell))
            continue
        if cell.startswith(EMPTY):
            if row.default not in (None, "", ()):
                wrong.append((row.name, cell, row.default))
            continue
        values = re.findall(r"`([^`]*)`", cell)
        if row.kind.is_list:
            got = [row.kind.convert(v) for v in values]
            if got != list(row.default):
                wrong.append((row.name, cell, row.default))
        elif not values or row.kind.convert(values[0]) != row.default:
            wrong.append((row.name, cell, row.default))
    assert wrong == []


def route(text=""):
    return config.loads("config route 'isp'\n" + text).route("isp")


def test_route_port_default_is_25_and_465_with_implicit_tls_as_documented():
    cell, meaning = documented()[("route", "port")]
    assert "`465` with `tls 'tls'`" in cell and "465" in meaning
    assert SMTPSettings.from_route(route()).port == 25
    assert SMTPSettings.from_route(route("\toption tls 'tls'\n")).port == 465
    assert SMTPSettings.from_route(route("\toption tls 'tls'\n\toption port '2525'\n")).port == 2525


def test_route_timeout_unset_is_per_step_as_documented():
    cell, meaning = documented()[("route", "timeout")]
    steps = {"greeting": "greeting", "command": "each command", "mail": "each command",
             "rcpt": "each command", "data": "DATA", "block": "each block of text",
             "final": "the final dot", "quit": "QUIT", "connect": "connecting"}
    assert sorted(steps) == sorted(TIMEOUTS)
    for step, seconds in TIMEOUTS.items():
        text = "%s `%s`" % (steps[step], config.INTERVAL.render(seconds))
        assert text in meaning, text
    assert SMTPSettings.from_route(route()).timeouts == TIMEOUTS
    set_once = SMTPSettings.from_route(route("\toption timeout '1m'\n")).timeouts
    assert set_once == dict({step: 60.0 for step in TIMEOUTS}, connect=TIMEOUTS["connect"])
    assert "`5m` for `pipe`" in cell and route().timeout == 300.0     # a pipe's time limit


def test_trusted_users_documents_everything_it_governs():
    meaning = documented()[("masq", "trusted_users")][1]
    for what in ("sendmail -f", "masq flush ROUTE", "masq online", "masq rm"):
        assert what in meaning, what
