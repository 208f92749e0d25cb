"""Fuzz UCI files (masq/config/uci.py) and the typed configuration read from them
(masq/config/schema.py).

Input: text from the UCI grammar (package/config/option/list and their short forms,
single and double quotes, backslash escapes and continuations, comments, `;`, NUL, CR,
surrogate-escaped bytes as `read_file` makes them), with masq's own section types, option
names and hostile values (huge numbers, sizes, listen URLs, paths, junk).
Properties: `uci.parse` returns sections or raises ConfigError naming a line of the file;
what it returns survives `dump` and parses back the same; `config.loads` returns a
Config or raises ConfigError, never anything else (exit 70 must not be reachable from
a configuration).
"""

from hypothesis import given, strategies as st

from fuzzing import fuzz_settings
from masq.config import schema as config, uci

_word = st.sampled_from(["config", "c", "option", "o", "list", "l", "package", "p", "masq",
                         "main", "route", "user", "isp", "alice", "x_y", "a-b", "a.b", "#",
                         "#c", ";", "\\", "\\\n", "\t", " ", "\n", "\r\n", "'", '"', "''",
                         '""', "'a b'", '"a\\"b"', "'it'\\''s'", "\x00", "\udcff", "é",
                         "cfg030f15", "x" * 300])
_junk_text = st.lists(_word, max_size=40).map(" ".join)

_types = sorted(config.SCHEMA)
_values = st.sampled_from([
    "1", "0", "-1", "yes", "off", "10M", "1G", "999999999999999999999", "9" * 5000, "-" + "9" * 5000,
    "1h", "5m", "x", "", " ", "smtp://127.0.0.1:25", "smtps://[::1]:465", "qmtp://0.0.0.0:209",
    "smtp://host:99999", "garbage", "127.0.0.0/8", "::1/129", "10.0.0.0/33", "/var/spool/masq",
    "relative/path", "maildir:/var/mail/%u", "mbox:rel/%u", "mda:%x", "pipe:'unterminated",
    "iface:ppp0", "file:/tmp/x", "modem:usb:zz:yy", "starttls", "tls", "none", "mx.example:587",
    "mx.example:", "[::1]:25", "sha256:AB:CD", "a b\nc", "\udcff", "é.example", "x" * 3000,
    "*", "*@lan", "alice: alice@isp.example", "zen.example=127.0.0.[2..11]*3", "1.5", "0x10",
    "127.0.0.1:8025", "0.0.0.0:80"])


@st.composite
def typed_files(draw):
    """UCI text with masq's section types, option names and hostile values."""
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(_types + ["nosuch"]))
        name = draw(st.sampled_from(["", " 'main'", " isp", " alice", " 'a b'"]))
        lines.append("config %s%s" % (kind, name))
        rows = sorted(config.SCHEMA.get(kind, {"bogus": None}))
        for _ in range(draw(st.integers(0, 6))):
            verb = draw(st.sampled_from(["option", "list"]))
            lines.append("\t%s %s %s" % (verb, draw(st.sampled_from(rows + ["nosuch"])),
                                         uci.quote(draw(_values))))
    return "\n".join(lines) + "\n"


_text = st.one_of(_junk_text, typed_files(), st.text(max_size=80))


@fuzz_settings()
@given(_text)
def test_parse_returns_sections_or_a_config_error_and_dump_round_trips(text):
    try:
        sections = uci.parse(text, "/etc/config/masq")
    except uci.ConfigError as err:
        assert err.path == "/etc/config/masq"
        assert 0 <= err.line <= text.count("\n") + 1
        return
    again = uci.parse(uci.dump(sections))
    assert [(s.type, s.name, {k: o.value for k, o in s.options.items()}) for s in again] == \
        [(s.type, s.name, {k: o.value for k, o in s.options.items() if o.value != ""})
         for s in sections]


@fuzz_settings()
@given(_text)
def test_loads_returns_a_config_or_a_config_error(text):
    try:
        cfg = config.loads(text, "/etc/config/masq")
    except config.ConfigError as err:
        assert str(err).startswith("/etc/config/masq")
        return
    assert cfg.main is not None
