"""The configuration schema: defaults, types, errors with file:line and suggestions,
the Config/Section interface, describe(), and docs/CONFIG.md against the table."""

import os
import re
import socket
import subprocess
import sys

import pytest

from masq.config import schema as config
from masq.config.schema import ConfigError, describe, load, loads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = "/etc/config/masq"


def error_of(text):
    with pytest.raises(ConfigError) as info:
        loads(text, PATH)
    return info.value


def config_with(*lines):
    return loads("config masq 'main'\n" + "".join("\t%s\n" % line for line in lines), PATH)


def main_with(*lines):
    return config_with(*lines).main


def route_with(*lines):
    text = "config route 'isp'\n" + "".join("\t%s\n" % line for line in lines)
    return loads(text, PATH).routes[0]


MAIN_DEFAULTS = {
    "spool_dir": "/var/spool/masq", "volatile_spool": False,
    "listen": ["smtp://127.0.0.1:25"], "relay_net": ["127.0.0.0/8", "::1/128"],
    "local_users": [], "alias_file": "/etc/aliases", "mailbox": "mbox:/var/mail/%u",
    "max_message_size": 10 * 1024 * 1024, "max_recipients": 100, "max_connections": 50,
    "max_connections_per_ip": 10, "smtp_timeout": 300.0, "tls_cert": None, "tls_key": None,
    "dns_server": None, "status_listen": "", "status_password": None,
    "status_file": "/var/run/masq/status.json", "pid_file": "/var/run/masq.pid",
    "user": "", "trusted_users": ["root", "mail", "daemon"], "queue_interval": 0.0,
    "queue_lifetime": 5 * 86400.0, "delay_warning": 4 * 3600.0, "retry_interval": 300.0,
    "retry_max": 4 * 3600.0, "online_check_interval": 300.0, "do_queue": False,
    "log": "syslog", "log_level": "info",
}
ROUTE_DEFAULTS = {
    "online": "always", "smarthost": None, "port": 25, "tls": "opportunistic",
    "tls_verify": True, "tls_ca": None, "auth_user": None, "auth_pass": None, "helo": None,
    "allowed_sender": [], "denied_sender": [], "allowed_recipient": [],
    "denied_recipient": [], "allowed_from": [], "denied_from": [], "from_domain": None,
    "map_sender": [], "map_from": [], "last_route": False, "connect_error_fail": False,
    "pipe": None, "wrapper": None, "timeout": 300.0,
}


def test_empty_file_is_all_defaults():
    cfg = loads("", PATH)
    assert cfg.path == PATH
    assert (cfg.main.type, cfg.main.name, cfg.main.line) == ("masq", "main", 0)
    assert cfg.main.hostname == socket.gethostname()
    assert cfg.main.local_domain == [socket.gethostname(), "localhost"]
    assert {k: cfg.main[k] for k in MAIN_DEFAULTS} == MAIN_DEFAULTS
    assert cfg.routes == [] and cfg.users == {}


def test_route_defaults():
    route = route_with()
    assert {k: route[k] for k in ROUTE_DEFAULTS} == ROUTE_DEFAULTS


def test_user_defaults():
    user = loads("config user 'alice'\n").users["alice"]
    assert (user.password, user.mailbox) == (None, None)


def test_local_domain_default_follows_hostname():
    assert main_with("option hostname router.lan").local_domain == ["router.lan", "localhost"]


def test_list_defaults_are_not_shared():
    first = loads("")
    first.main.trusted_users.append("eve")
    assert loads("").main.trusted_users == ["root", "mail", "daemon"]


def test_example_configuration_loads():
    # A configuration with a user, a route and its rules (EXAMPLE below).
    cfg = loads(EXAMPLE, PATH)
    assert cfg.main.mailbox == "maildir:/var/mail/%u"
    assert cfg.main.max_message_size == 10 << 20
    assert cfg.users["alice"].password.startswith("$pbkdf2-sha256$")
    [isp] = cfg.routes
    assert (isp.name, isp.online, isp.smarthost, isp.tls) == (
        "isp", "iface:ppp0", "mail.isp.example:587", "starttls")
    assert isp.allowed_recipient == ["*"] and isp.denied_sender == ["*@lan"]


EXAMPLE = """\
config masq 'main'
\toption hostname 'router.lan'
\toption spool_dir '/var/spool/masq'
\tlist listen 'smtp://127.0.0.1:25'          # smtp, submission, smtps, qmtp
\tlist local_domain 'router.lan'
\tlist relay_net '127.0.0.0/8'
\tlist local_users 'alice'
\toption alias_file '/etc/aliases'
\toption mailbox 'maildir:/var/mail/%u'     # or mbox:PATH, or mda:COMMAND
\toption max_message_size '10M'
\toption max_recipients '100'
\toption tls_cert '/etc/masq/cert.pem'
\toption tls_key '/etc/masq/key.pem'
\toption dns_server '127.0.0.1:53'          # default: /etc/resolv.conf
\toption status_listen '127.0.0.1:8025'

config user 'alice'                           # incoming SMTP AUTH
\toption password '$pbkdf2-sha256$...'       # from `masq passwd`

config route 'isp'
\toption online 'iface:ppp0'
\toption smarthost 'mail.isp.example:587'
\toption tls 'starttls'
\toption auth_user 'alice'
\toption auth_pass 'secret'
\tlist allowed_recipient '*'
\tlist denied_sender '*@lan'
\toption from_domain 'isp.example'
"""


@pytest.mark.parametrize("text,value", [
    ("1", True), ("yes", True), ("on", True), ("true", True), ("enabled", True),
    ("0", False), ("no", False), ("off", False), ("false", False), ("disabled", False)])
def test_bool_spellings(text, value):
    assert main_with("option do_queue %s" % text).do_queue is value


@pytest.mark.parametrize("text,value", [
    ("512", 512), ("512k", 512 * 1024), ("512K", 512 * 1024), ("10M", 10 << 20),
    ("1G", 1 << 30), ("0", 0)])
def test_size(text, value):
    assert main_with("option max_message_size %s" % text).max_message_size == value


@pytest.mark.parametrize("text,value", [
    ("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("4h", 14400.0), ("5d", 432000.0),
    ("1w", 604800.0), ("1.5h", 5400.0), ("0", 0.0)])
def test_interval(text, value):
    assert main_with("option queue_interval %s" % text).queue_interval == value


@pytest.mark.parametrize("option,text,expected", [
    ("do_queue", "Yes", "a boolean (1/0, yes/no, on/off, true/false, enabled/disabled)"),
    ("max_recipients", "ten", "an integer >= 1"),
    ("max_recipients", "0", "an integer >= 1"),
    ("max_recipients", "+5", "an integer >= 1"),
    ("max_message_size", "10MB", "a size (bytes, or a number with k, M or G)"),
    ("max_message_size", "-1", "a size (bytes, or a number with k, M or G)"),
    ("queue_lifetime", "5 days", "an interval (seconds, or a number with s, m, h, d or w)"),
    ("log", "file", "syslog, stderr or an absolute file path"),
    ("log_level", "INFO", "one of error, warning, info, debug"),
    ("mailbox", "/var/mail/%u", "maildir:/PATH, mbox:/PATH or mda:COMMAND"),
    ("mailbox", "mbox:", "maildir:/PATH, mbox:/PATH or mda:COMMAND"),
    ("dns_server", "127.0.0.1:99999", "an IP address, optionally with :PORT (IPv6 in "
     "brackets)"),
])
def test_wrong_type_names_file_line_option_and_expectation(option, text, expected):
    error = error_of("config masq 'main'\n\n\toption %s '%s'\n" % (option, text))
    assert error.line == 3
    assert str(error) == "%s:3: option '%s' in masq 'main': expected %s, got '%s'" % (
        PATH, option, expected, text)


@pytest.mark.parametrize("option,text", [
    ("port", "0"), ("port", "65536"), ("tls", "ssl"), ("tls_verify", "maybe"),
    ("timeout", "1y"), ("online", "sometimes"), ("online", "iface:"),
    ("smarthost", "mail.isp:587:1"), ("smarthost", "2001:db8::1"), ("smarthost", "-bad")])
def test_route_type_errors(option, text):
    error = error_of("config route 'isp'\n\toption %s '%s'\n" % (option, text))
    assert error.line == 2
    assert error.message.startswith("option '%s' in route 'isp': expected " % option)


@pytest.mark.parametrize("text", [
    "always", "file:/var/run/masq.online", "pipe:/usr/bin/check isp", "iface:ppp0",
    "ubus:wan", "modem:/dev/ttyUSB2"])
def test_online_detectors(text):
    assert route_with("option online '%s'" % text).online == text


@pytest.mark.parametrize("text", ["mail.isp.example", "mail.isp.example:587",
                                  "192.0.2.1:25", "[2001:db8::1]:587", "[::1]"])
def test_smarthost_forms(text):
    assert route_with("option smarthost '%s'" % text).smarthost == text


def test_port_range():
    assert route_with("option port 587").port == 587


def test_relay_net_each_item_checked_at_its_line():
    main = main_with("list relay_net 192.168.1.0/24", "list relay_net 10.1.2.3/8",
                     "list relay_net fd00::/8")
    assert main.relay_net == ["192.168.1.0/24", "10.1.2.3/8", "fd00::/8"]
    error = error_of("config masq\n\tlist relay_net 192.168.1.0/24\n"
                     "\tlist relay_net 10.0.0.0/33\n")
    assert str(error) == (PATH + ":3: option 'relay_net' in masq section: expected an IP "
                          "network such as 192.168.1.0/24, got '10.0.0.0/33'")


def test_listen_urls():
    main = main_with("list listen smtp://0.0.0.0:25", "list listen submission://[::]:587",
                     "list listen smtps://192.0.2.1", "list listen qmtp://127.0.0.1:0",
                     "option tls_cert /etc/masq/cert.pem", "option tls_key /etc/masq/key.pem")
    assert len(main.listen) == 4
    assert "expected a listener" in error_of(
        "config masq\n\tlist listen http://127.0.0.1:80\n").message


def test_option_for_list_is_one_item_list():
    assert main_with("option local_users alice").local_users == ["alice"]


def test_list_for_scalar_is_an_error():
    error = error_of("config route 'isp'\n\tlist port 25\n\tlist port 587\n")
    assert str(error) == (PATH + ":3: option 'port' in route 'isp' takes one value: "
                          "write 'option port ...', not 'list'")


def test_empty_option_is_default():
    assert route_with("option port 587", "option port ''").port == 25


def test_unknown_option_suggests_nearest():
    error = error_of("config route 'isp'\n\toption smarthots 'mail.isp'\n")
    assert str(error) == (PATH + ":2: unknown option 'smarthots' in route 'isp'; "
                          "did you mean 'smarthost'?")


def test_unknown_option_from_another_section_says_where_it_belongs():
    error = error_of("config masq 'main'\n\toption smarthost 'mail.isp'\n")
    assert error.message == ("unknown option 'smarthost' in masq 'main'; "
                             "it belongs in a route section")


def test_unknown_option_without_suggestion():
    error = error_of("config user 'bob'\n\toption xyzzy 1\n")
    assert (error.line, error.message) == (2, "unknown option 'xyzzy' in user 'bob'")


def test_unknown_section_type_suggests_nearest():
    error = error_of("config masq\n\nconfig rout 'isp'\n")
    assert str(error) == PATH + ":3: unknown section type 'rout'; did you mean 'route'?"


@pytest.mark.parametrize("kind", ["route", "user"])
def test_anonymous_route_or_user_is_an_error(kind):
    error = error_of("config masq\n\nconfig %s\n\toption x 1\n" % kind)
    assert str(error) == PATH + ":3: a %s section needs a name: config %s 'NAME'" % (
        kind, kind)


def test_masq_section_may_be_anonymous():
    cfg = loads("config masq\n\toption hostname h\n")
    assert (cfg.main.name, cfg.main.line, cfg.main.hostname) == (None, 1, "h")


def test_second_masq_section_is_an_error():
    error = error_of("config masq 'main'\nconfig route 'a'\nconfig masq 'other'\n")
    assert str(error) == (PATH + ":3: a second masq section; the first is at line 1 "
                          "and there can be only one")


def test_same_named_masq_sections_merge():
    cfg = loads("config masq 'main'\n\toption hostname a\nconfig masq 'main'\n"
                "\toption log stderr\n")
    assert (cfg.main.hostname, cfg.main.log) == ("a", "stderr")


def test_uci_syntax_errors_come_through():
    error = error_of("config masq 'main'\n\toption hostname 'router\n")
    assert str(error) == PATH + ":2: EOF with unterminated '"


@pytest.mark.parametrize("text,line,given,missing", [
    ("config masq\n\toption tls_cert /c.pem\n", 2, "tls_cert", "tls_key"),
    ("config masq\n\toption tls_key /k.pem\n", 2, "tls_key", "tls_cert"),
    ("config route 'isp'\n\toption auth_pass x\n", 2, "auth_pass", "auth_user"),
])
def test_options_that_need_each_other(text, line, given, missing):
    error = error_of(text)
    assert error.line == line
    assert error.message.startswith("option '%s'" % given)
    assert error.message.endswith("needs '%s' as well" % missing)


def test_routes_in_file_order_users_by_name():
    cfg = loads("config route 'b'\nconfig user 'zed'\nconfig route 'a'\n"
                "config user 'amy'\nconfig route 'c'\n")
    assert [r.name for r in cfg.routes] == ["b", "a", "c"]
    assert list(cfg.users) == ["zed", "amy"]
    assert cfg.route("a") is cfg.routes[1]
    assert cfg.route("nope") is None


def test_section_interface():
    cfg = loads("config route 'isp'\n\toption smarthost mail.isp\n\n\toption port 587\n", PATH)
    route = cfg.routes[0]
    assert (route.type, route.name, route.line) == ("route", "isp", 1)
    assert route.port == route["port"] == 587
    assert route.is_set("port") and not route.is_set("tls")
    assert route.line_of("port") == 4
    assert route.line_of("tls") == 1            # unset: the section's line
    assert dict(route.items())["tls"] == "opportunistic"
    with pytest.raises(AttributeError):
        route.smarthots
    with pytest.raises(KeyError):
        route["smarthots"]
    error = cfg.error(route, "port", "port 587 needs tls")
    assert str(error) == PATH + ":4: port 587 needs tls"


def test_no_option_shadows_a_section_attribute():
    reserved = {name for name in dir(config.Section) if not name.startswith("_")}
    assert reserved.isdisjoint(row.name for row in config.OPTIONS)


def test_load_reads_the_file(tmp_path):
    path = tmp_path / "masq"
    path.write_text("config masq 'main'\n\toption hostname router.lan\n")
    cfg = load(str(path))
    assert (cfg.path, cfg.main.hostname) == (str(path), "router.lan")


def test_load_missing_file(tmp_path):
    path = str(tmp_path / "absent")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert (info.value.path, info.value.line) == (path, 0)
    assert str(info.value) == path + ": cannot read: No such file or directory"


def test_describe_hides_secrets_and_round_trips():
    cfg = loads(EXAMPLE, PATH)
    text = describe(cfg)
    assert "secret" not in text and "$pbkdf2" not in text
    assert "\toption auth_pass '(hidden)'\n" in text
    again = loads(describe(cfg, show_secrets=True))
    for before, after in zip([cfg.main, *cfg.users.values(), *cfg.routes],
                             [again.main, *again.users.values(), *again.routes]):
        assert (before.type, before.name) == (after.type, after.name)
        assert dict(before.items()) == dict(after.items())


def test_describe_shows_defaults_in_their_own_units():
    text = describe(loads("config masq 'main'\n\toption hostname h\n"))
    assert text.startswith("\nconfig masq 'main'\n\toption hostname 'h'\n")
    for line in ["\toption max_message_size '10M'\n", "\toption queue_lifetime '5d'\n",
                 "\toption smtp_timeout '5m'\n", "\toption do_queue '0'\n",
                 "\tlist relay_net '::1/128'\n", "\toption queue_interval '0'\n"]:
        assert line in text
    assert "tls_cert" not in text and "status_listen" not in text


def test_describe_odd_values_round_trip():
    cfg = config_with("option max_message_size 1000", "option retry_max 1.25",
                      "option delay_warning 90")
    again = loads(describe(cfg))
    assert (again.main.max_message_size, again.main.retry_max, again.main.delay_warning) == (
        1000, 1.25, 90.0)
    assert "'1m30s'" not in describe(cfg) and "'90s'" in describe(cfg)


def documented_options():
    text = open(os.path.join(ROOT, "docs", "CONFIG.md")).read()
    found, section = {}, None
    for line in text.splitlines():
        heading = re.match(r"## config (\S+)", line)
        if heading:
            section = heading.group(1)
        row = re.match(r"\| `([a-z0-9_]+)` \| ([a-z]+)", line)
        if row:
            found[(section, row.group(1))] = row.group(2)
    return found


def test_every_option_documented_and_every_documented_option_exists():
    schema = {(row.section, row.name) for row in config.OPTIONS}
    documented = set(documented_options())
    assert sorted(schema - documented) == []
    assert sorted(documented - schema) == []


def test_documented_types_match_the_schema():
    documented = documented_options()
    assert [(row.name, row.kind.name) for row in config.OPTIONS
            if documented[(row.section, row.name)] != row.kind.name] == []


def test_import_stays_cheap():
    code = ("import sys; import masq.config.schema, masq.config.uci; "
            "print(sorted(m for m in ('difflib', 'ipaddress', 'socket', 'dataclasses') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "[]"
