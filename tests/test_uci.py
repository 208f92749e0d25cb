"""UCI grammar: how libuci reads each kind of line (test vectors), every error with its line,
libuci's merge semantics, the writer format, and a parse(dump(x)) == x round trip."""

import os
import stat

import pytest
from hypothesis import given, settings, strategies as st

from masq.config import uci
from masq.config.uci import ConfigError, RawOption, RawSection, dump, parse


def value_of(body, option="a"):
    """Parse body inside one section and return the option's value (None if absent)."""
    sections = parse("config t 'n'\n" + body + "\n", "f")
    raw = sections[0].options.get(option)
    return None if raw is None else raw.value


def error_of(text):
    with pytest.raises(ConfigError) as info:
        parse(text, "/etc/config/masq")
    return info.value


# How libuci reads each of these lines.
VECTORS = [
    ("option a bar#baz", "bar"),
    ("option a 'a#b' # c", "a#b"),
    ('option a "say \\"hi\\" \\n \\\\ $x \'q\'"', 'say "hi" n \\ $x \'q\''),
    ("option a 'back\\slash \\n $x \"d\"'", 'back\\slash \\n $x "d"'),
    ("option a un\\ quoted\\'s", "un quoted's"),
    ("option a 'ab'\"cd\"ef", "abcdef"),
    ('option a "abc\\\ndef"', "abcdef"),
    ("option a x\\\ny", "xy"),
    ("option a 'l1\nl2'", "l1\nl2"),
    ("option a ''", None),
]


@pytest.mark.parametrize("body,expected", VECTORS)
def test_vector(body, expected):
    assert value_of(body) == expected


def test_vector_list_option_list():
    assert value_of("list l a\noption l b\nlist l c", "l") == ["b", "c"]


def test_quote_escape_as_written_by_uci():
    assert value_of("option a 'it'\\''s'") == "it's"


@pytest.mark.parametrize("body,expected", [
    ("option a 'x y'  ", "x y"),
    ("\t option a b\t", "b"),
    ("option a b\r", "b"),                       # CRLF files
    ("option a \"x\\\r\ny\"", "xy"),              # backslash-CRLF continues too
    ("option a 'a\"b'", 'a"b'),
    ("option a \"a'b#c\"", "a'b#c"),
    ("option a \\#x", "#x"),
    ("option a x\\;y", "x;y"),
    ("option a 'x;y'", "x;y"),
    ("option a caf\u00e9\x01", "caf\u00e9\x01"),   # UTF-8 and controls pass through
    ("option a 'one\n\ntwo'", "one\n\ntwo"),
    ("option a \"one\ntwo\"", "one\ntwo"),
    ("option a", None),                          # no value: not set
    ("option a b ''", "b"),                      # libuci ignores an empty extra token
    ("option a b#c d", "b"),                     # '#' ends the line, so no extra token
])
def test_token_rules(body, expected):
    assert value_of(body) == expected


def test_keywords_short_forms_comments_and_blank_lines():
    text = ("# top comment\n\npackage masq\nc route 'isp'\n  # indented comment\n"
            "o a 1\nl b 2\n\t#option c 3\n\r\n")
    [section] = parse(text)
    assert (section.type, section.name, section.line) == ("route", "isp", 4)
    assert {k: o.value for k, o in section.options.items()} == {"a": "1", "b": ["2"]}


def test_option_lines():
    [section] = parse("config t\n\n  option a 1\nlist b x\nlist b y\n")
    assert section.options["a"].line == 3
    assert section.options["b"].item_lines == [4, 5]
    assert section.options["b"].line == 5


def test_empty_value_removes_earlier_option():
    [section] = parse("config t\noption a 1\noption b 2\noption a ''\noption a 3\n")
    assert list(section.options) == ["b", "a"]
    assert section.options["a"].value == "3"


def test_list_empty_item_kept():
    assert value_of("list l ''\nlist l x\nlist l", "l") == ["", "x", ""]


def test_repeated_option_last_wins_first_position():
    [section] = parse("config t\noption a 1\noption b 2\noption a 3\n")
    assert [(k, o.value) for k, o in section.options.items()] == [("a", "3"), ("b", "2")]


def test_option_then_list_becomes_list():
    [section] = parse("config t\noption l a\noption z 1\nlist l b\n")
    assert list(section.options) == ["l", "z"]
    assert section.options["l"].value == ["a", "b"]
    assert section.options["l"].item_lines == [2, 4]


def test_list_then_option_becomes_scalar():
    assert value_of("list l a\nlist l b\noption l c", "l") == "c"


def test_same_named_section_merges():
    sections = parse("config route 'isp'\noption a 1\noption b 2\n"
                     "config route 'other'\n"
                     "config route 'isp'\noption a 9\noption c 3\n")
    assert [s.name for s in sections] == ["isp", "other"]
    isp = sections[0]
    assert isp.line == 1
    assert [(k, o.value) for k, o in isp.options.items()] == [
        ("a", "9"), ("b", "2"), ("c", "3")]


def test_anonymous_sections_get_libuci_keys():
    # OpenWrt's default /etc/config/network: `uci -X show` calls the device cfg030f15.
    sections = parse("config interface 'loopback'\nconfig globals 'globals'\nconfig device\n")
    assert sections[2].name is None
    assert sections[2].key == "cfg030f15"
    firewall = parse("config defaults\nconfig zone\nconfig zone\n")
    assert [s.key for s in firewall] == ["cfg01e63d", "cfg02dc81", "cfg03dc81"]


def test_anonymous_section_reopened_by_key():
    [section] = parse("config route\noption a 1\nconfig route 'cfg01c8b4'\noption b 2\n")
    assert section.name is None
    assert list(section.options) == ["a", "b"]


def test_names_and_types():
    sections = parse("config my.type '0abc_D'\nconfig masq-type x_1\nconfig 'a#b'\n")
    assert [(s.type, s.name) for s in sections] == [
        ("my.type", "0abc_D"), ("masq-type", "x_1"), ("a#b", None)]


@pytest.mark.parametrize("text,line,message", [
    ("option a 1\n", 1, "option/list command found before the first section"),
    ("\n\nlist a 1\n", 3, "option/list command found before the first section"),
    ("config t x y\n", 1, "too many arguments"),
    ("config t\noption a b c\n", 2, "too many arguments"),
    ("config t\noption a 'b\nc' d\n", 3, "too many arguments"),
    ("config t\n\noption a 'x\n\n", 3, "EOF with unterminated '"),
    ("config t\noption a \"x\nmore\n", 2, 'EOF with unterminated "'),
    ("config t\noption a 'ok' \"x\\\n", 2, 'EOF with unterminated "'),
    ("config t\noption a-b 1\n", 2, "invalid character in name field"),
    ("config t\noption a.b 1\n", 2, "invalid character in name field"),
    ("config t 'my-name'\n", 1, "invalid character in name field"),
    ("package 'a.b'\n", 1, "invalid character in name field"),
    ("config 'a b'\n", 1, "invalid character in type field"),
    ("config 't\u00e9'\n", 1, "invalid character in type field"),
    ("config t\nfoo bar\n", 2, "invalid command 'foo'"),
    ("config t\noptions a 1\n", 2, "invalid command 'options'"),
    ("config t\noption#x a 1\n", 2, "invalid command 'option#x'"),
    ("config\n", 1, "insufficient arguments"),
    ("config ''\n", 1, "insufficient arguments"),
    ("config t\noption '' 1\n", 2, "insufficient arguments"),
    ("config t\noption", 2, "option without name"),
    ("config t\nlist", 2, "option without name"),
    ("config", 1, "config without name"),
    ("config a x\nconfig b x\n", 2,
     "section of different type overwrites prior section with same name"),
    ("config t x; option a 1\n", 1,
     "unquoted ';' (libuci silently drops what follows it); quote the value"),
    ("config t\noption a ;\n", 2,
     "unquoted ';' (libuci silently drops what follows it); quote the value"),
    ("config t\n\noption a b\0\n", 3, "NUL character in file"),
])
def test_errors_name_their_line(text, line, message):
    error = error_of(text)
    assert (error.path, error.line, error.message) == ("/etc/config/masq", line, message)
    assert str(error) == "/etc/config/masq:%d: %s" % (line, message)


def test_libuci_quirk_empty_extra_token_then_blank_is_invalid_command():
    # libuci skips exactly one blank after an empty extra token, then sees "\n" as a command.
    assert error_of("config t\noption a b '' \n").line == 2


def test_error_without_line():
    error = ConfigError("/etc/config/masq", 0, "cannot read: No such file or directory")
    assert str(error) == "/etc/config/masq: cannot read: No such file or directory"


def test_read_file_missing(tmp_path):
    path = str(tmp_path / "missing")
    with pytest.raises(ConfigError) as info:
        uci.read_file(path)
    assert info.value.line == 0
    assert str(info.value) == path + ": cannot read: No such file or directory"


def test_read_file_keeps_undecodable_bytes(tmp_path):
    path = tmp_path / "masq"
    path.write_bytes(b"config t\noption a '\xff\xfe'\n")
    [section] = parse(uci.read_file(str(path)))
    uci.write_file(str(path), dump([section]))
    assert path.read_bytes() == b"\nconfig t\n\toption a '\xff\xfe'\n\n"


def test_dump_writer_format():
    main = RawSection("masq", "main", 1)
    main.options["hostname"] = RawOption("router.lan", 2)
    main.options["listen"] = RawOption(["smtp://127.0.0.1:25", "it's"], 3)
    main.options["unset"] = RawOption("", 4)
    route = RawSection("route", None, 5)
    route.options["online"] = RawOption("iface:ppp0", 6)
    assert dump([main, route]) == (
        "\nconfig masq 'main'\n"
        "\toption hostname 'router.lan'\n"
        "\tlist listen 'smtp://127.0.0.1:25'\n"
        "\tlist listen 'it'\\''s'\n"
        "\nconfig route\n"
        "\toption online 'iface:ppp0'\n"
        "\n")


def test_dump_quotes_types_libuci_would_break():
    assert dump([RawSection("a#b", None, 1)]) == "\nconfig 'a#b'\n\n"
    assert dump([RawSection("my.type-1", None, 1)]) == "\nconfig my.type-1\n\n"


@pytest.mark.parametrize("section", [
    RawSection("a b", None, 1), RawSection("t", "a-b", 1)])
def test_dump_refuses_what_cannot_be_read_back(section):
    with pytest.raises(ValueError):
        dump([section])


def test_write_file_replaces_atomically_and_keeps_mode(tmp_path):
    path = tmp_path / "masq"
    path.write_text("old")
    os.chmod(path, 0o640)
    uci.write_file(str(path), "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.listdir(tmp_path) == ["masq"]


def test_write_file_new_file_is_private_and_symlink_target_replaced(tmp_path):
    target = tmp_path / "real"
    uci.write_file(str(target), "x")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    link = tmp_path / "link"
    link.symlink_to(target)
    uci.write_file(str(link), "y")
    assert link.is_symlink()
    assert target.read_text() == "y"


def test_write_file_failure_leaves_no_temp_file(tmp_path):
    (tmp_path / "masq").mkdir()              # rename over a directory fails
    with pytest.raises(OSError):
        uci.write_file(str(tmp_path / "masq"), "x")
    assert os.listdir(tmp_path) == ["masq"]


# Round trip: any sections libuci can hold survive dump() then parse().

NAMES = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_",
                min_size=1, max_size=8).filter(lambda n: not n.startswith("cfg"))
TYPES = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8)
VALUES = st.text(st.one_of(
    st.sampled_from("'\"\\#; \t\n\r$"),
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")), max_size=20)
OPTIONS = st.dictionaries(NAMES, st.one_of(
    VALUES.filter(bool), st.lists(VALUES, min_size=1, max_size=4)), max_size=5)


@st.composite
def section_lists(draw):
    names = draw(st.lists(st.one_of(st.none(), NAMES), max_size=5))
    named = set()
    sections = []
    for name in names:
        if name is not None and name in named:
            continue
        named.add(name)
        section = RawSection(draw(TYPES), name, 0)
        for option, value in draw(OPTIONS).items():
            section.options[option] = RawOption(value, 0)
        sections.append(section)
    return sections


def shape(sections):
    return [(s.type, s.name, [(k, o.value) for k, o in s.options.items()]) for s in sections]


@settings(max_examples=300)
@given(section_lists())
def test_dump_parse_round_trip(sections):
    assert shape(parse(dump(sections))) == shape(sections)
