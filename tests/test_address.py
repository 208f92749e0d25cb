"""Tests for masq.mail.address: SMTP paths (FAULTS 4.1 #14, #15, #18) and header address lists
(FAULTS 4.5 #76), cross-checked against Python's own email package."""

import ast
import email.header
import email.utils
import pathlib
import subprocess
import sys

import pytest
from email.headerregistry import HeaderRegistry
from hypothesis import assume, given, settings, strategies as st

from masq.mail.address import (NULL, Address, AddressError, format_address, parse_address_list,
                               parse_path, quote_local, split)

ROOT = pathlib.Path(__file__).resolve().parent.parent


def rcpt(text, **kw):
    return parse_path(text, sender=False, **kw)


def mail(text, **kw):
    return parse_path(text, sender=True, **kw)


def reply(fn, text, **kw):
    with pytest.raises(AddressError) as info:
        fn(text, **kw)
    return info.value.code, info.value.enhanced


# ---- paths: plain syntax ----

def test_plain_path_keeps_local_case_and_lowers_domain():
    addr = rcpt("<Alice.Smith@Example.ORG>")
    assert (addr.local, addr.domain, addr.routed) == ("Alice.Smith", "example.org", False)
    assert str(addr) == "Alice.Smith@example.org"
    assert addr.bracketed() == "<Alice.Smith@example.org>"
    assert not addr.is_null


def test_null_sender_only_for_mail_from():
    assert mail("<>") is NULL
    assert mail("<>").is_null and str(mail("<>")) == "" and mail("<>").bracketed() == "<>"
    assert reply(rcpt, "<>") == (501, "5.1.3")


def test_surrounding_blanks_are_ignored():
    assert rcpt("  <a@b.example> ") == Address("a", "b.example")


@pytest.mark.parametrize("text", ["a@b.example", "<a@b.example", "a@b.example>", "<<a@b>>",
                                  "<a@b> x", "", "<", "< a@b>", "<a@b >", "<a @b>"])
def test_brackets_are_required_like_strict_postfix(text):
    assert reply(rcpt, text) == (501, "5.1.3")
    assert reply(mail, text) == (501, "5.1.7")


@pytest.mark.parametrize("text", [
    "<a@b@c>", "<a..b@c>", "<.a@c>", "<a.@c>", "<a@>", "<@c>", "<a@b..c>", "<a@.b>",
    "<a@b.>", "<a@-b.c>", "<a@b-.c>", "<a@b_c.d>", '<"a@b>', '<"a"b@c>', "<a b@c>",
    "<a(b)@c>", "<a@[1.2.3.4>", "<a@1.2.3.4]>", '<"a\\"@c>', "<a,b@c>",
])
def test_malformed_paths_are_501(text):
    assert reply(rcpt, text) == (501, "5.1.3")
    assert reply(mail, text) == (501, "5.1.7")


# ---- paths: relay tricks (FAULTS 4.1 #15, #16) ----

@pytest.mark.parametrize("text, local, domain", [
    ('<"a@b"@c>', "a@b", "c"),
    ("<a%b@c>", "a%b", "c"),
    ("<b!a@c>", "b!a", "c"),
    ('<"b!a"@c>', "b!a", "c"),
    ('<"a%b"@c>', "a%b", "c"),
    ("<@x,@y:a@c>", "a", "c"),
    ("<@x:a@c>", "a", "c"),
    ("<@[192.0.2.1]:a@c>", "a", "c"),
])
def test_relay_tricks_are_flagged_routed(text, local, domain):
    addr = rcpt(text)
    assert (addr.local, addr.domain, addr.routed) == (local, domain, True)


def test_source_route_is_stripped_not_followed():
    addr = rcpt("<@relay.example,@other.example:user@final.example>")
    assert str(addr) == "user@final.example"
    assert "relay" not in addr.bracketed()


@pytest.mark.parametrize("text", ["<@x,y:a@c>", "<@:a@c>", "<@x,@:a@c>", "<@x@y:a@c>"])
def test_malformed_source_routes_are_refused(text):
    assert reply(rcpt, text) == (501, "5.1.3")


def test_quoted_local_part_is_unquoted_in_value_and_requoted_in_text():
    addr = rcpt('<"john smith"@example.com>')
    assert addr.local == "john smith" and not addr.routed
    assert str(addr) == '"john smith"@example.com'
    escaped = rcpt('<"a\\"b\\\\c"@example.com>')
    assert escaped.local == 'a"b\\c'
    assert str(escaped) == '"a\\"b\\\\c"@example.com'
    assert rcpt('<"plain"@example.com>').local == "plain"
    assert str(rcpt('<"plain"@example.com>')) == "plain@example.com"


def test_empty_quoted_local_part_is_refused():
    assert reply(rcpt, '<""@example.com>') == (501, "5.1.3")


# ---- paths: address literals ----

def test_ipv4_literal_is_accepted():
    assert rcpt("<a@[192.0.2.1]>").domain == "[192.0.2.1]"


def test_ipv6_literal_is_canonical_and_lower_case():
    addr = rcpt("<a@[IPv6:2001:DB8:0:0::1]>")
    assert addr.domain == "[ipv6:2001:db8::1]"


@pytest.mark.parametrize("literal", ["[300.1.1.1]", "[1.2.3]", "[1.2.3.4.5]", "[01.2.3.4]",
                                     "[IPv6:fe80::1%eth0]", "[IPv6:1.2.3.4]", "[x400:foo]",
                                     "[2001:db8::1]", "[]", "[ 1.2.3.4]", "[IPv6:::g]"])
def test_bad_address_literals_are_501(literal):
    assert reply(rcpt, "<a@%s>" % literal) == (501, "5.1.3")


# ---- paths: limits (RFC 5321 4.5.3.1) ----

def test_local_part_limit_is_64_octets():
    assert rcpt("<%s@b.example>" % ("x" * 64)).local == "x" * 64
    assert reply(rcpt, "<%s@b.example>" % ("x" * 65)) == (553, "5.1.0")


def test_local_part_limit_counts_the_quotes():
    assert reply(rcpt, '<"%s"@b.example>' % ("x" * 63)) == (553, "5.1.0")


def test_path_limit_is_256_octets_including_brackets():
    domain = ".".join(["d" * 63, "e" * 63, "f" * 63, "g" * 57])
    assert len(domain) == 249
    ok = "<abcd@%s>" % domain
    assert len(ok) == 256 and rcpt(ok).domain == domain
    assert reply(rcpt, "<abcde@%s>" % domain) == (553, "5.1.0")


def test_domain_of_256_octets_is_refused():
    domain = ".".join(["d" * 63] * 4)
    assert len(domain) == 255
    assert reply(rcpt, "<a@%sx>" % domain) == (553, "5.1.0")


def test_label_over_63_octets_is_refused():
    assert rcpt("<a@%s.example>" % ("l" * 63)).domain.startswith("l" * 63)
    assert reply(rcpt, "<a@%s.example>" % ("l" * 64)) == (553, "5.1.0")


def test_ten_kib_path_is_refused_without_parsing_it():
    assert reply(rcpt, "<" + "a" * 10240 + "@b>") == (553, "5.1.0")


# ---- paths: control characters (FAULTS 4.1 #12, #20) ----

@pytest.mark.parametrize("bad", ["\x00", "\r", "\n", "\r\n", "\t", "\x7f", "\x1b", "\x85",
                                 "\u2028", "\udcff"])
@pytest.mark.parametrize("where", ["<a{}b@c.example>", '<"a{}b"@c.example>', "<ab@c{}.example>",
                                   "<ab@c.example>{}"])
def test_control_characters_are_refused_everywhere(bad, where):
    text = where.format(bad)
    assert reply(rcpt, text, smtputf8=True) == (501, "5.1.3")
    assert reply(mail, text, smtputf8=True) == (501, "5.1.7")


def test_nul_is_not_a_truncation_point():
    assert reply(rcpt, "<a@b.example>\x00<root@localhost>") == (501, "5.1.3")


# ---- paths: SMTPUTF8 (FAULTS 4.1 #14) ----

def test_non_ascii_needs_smtputf8():
    assert reply(rcpt, "<jörg@example.com>") == (553, "5.6.7")
    assert reply(rcpt, "<jorg@exämple.com>") == (553, "5.6.7")
    assert reply(rcpt, "<jörg@example.com>".encode()) == (553, "5.6.7")


def test_non_ascii_with_smtputf8_is_accepted():
    addr = rcpt("<jörg@Exämple.com>", smtputf8=True)
    assert (addr.local, addr.domain) == ("jörg", "exämple.com")
    assert rcpt("<Δοκιμή@παράδειγμα.δοκιμή>".encode(), smtputf8=True).local == "Δοκιμή"


def test_invalid_utf8_bytes_give_bad_utf8_reply():
    assert reply(rcpt, b"<j\xf6rg@example.com>", smtputf8=True) == (500, "5.5.2")
    assert reply(rcpt, b"<a@b\xed\xa0\x80>", smtputf8=True) == (500, "5.5.2")


def test_bytes_and_str_agree():
    assert rcpt(b"<a@B.example>") == rcpt("<a@B.example>")


def test_non_ascii_length_is_counted_in_octets():
    assert reply(rcpt, "<%s@b.example>" % ("ö" * 33), smtputf8=True) == (553, "5.1.0")


# ---- paths: shell metacharacters (FAULTS 4.1 #18) ----

@pytest.mark.parametrize("local", ["`id`", "$(reboot)", ";sleep 9;", "|cmd", "%{rcpt}",
                                   "${run{x}}", "a;b", "-oQ/tmp", "../../etc/passwd"])
def test_shell_metacharacters_are_refused_or_inert(local):
    for text in ("<%s@example.com>" % local, '<"%s"@example.com>' % local):
        try:
            addr = rcpt(text)
        except AddressError as err:
            assert (err.code, err.enhanced) == (501, "5.1.3")
        else:
            assert addr.local == local
            assert addr.domain == "example.com"
    with pytest.raises(AddressError):
        rcpt("<$(reboot)@example.com>")


# ---- paths: unqualified ----

def test_postmaster_without_domain_is_accepted_as_recipient():
    addr = rcpt("<Postmaster>")
    assert (addr.local, addr.domain) == ("Postmaster", "")
    assert str(addr) == "Postmaster"
    assert reply(mail, "<postmaster>") == (501, "5.1.7")


def test_unqualified_only_when_allowed():
    assert reply(rcpt, "<alice>") == (501, "5.1.3")
    assert rcpt("<alice>", unqualified=True) == Address("alice", "")
    assert mail("<alice>", unqualified=True).local == "alice"


# ---- the Address value ----

def test_address_is_immutable_and_hashable():
    addr = Address("a", "B.example")
    with pytest.raises(AttributeError):
        addr.local = "root"
    with pytest.raises(AttributeError):
        del addr.domain
    assert addr == Address("a", "b.example")
    assert addr != Address("A", "b.example")
    assert len({addr, Address("a", "b.EXAMPLE")}) == 1
    assert "routed" in repr(Address("a", "b", routed=True))


def test_quote_local():
    assert quote_local("a.b+c") == "a.b+c"
    assert quote_local("a b") == '"a b"'
    assert quote_local("a..b") == '"a..b"'
    assert quote_local('a"b') == '"a\\"b"'
    assert quote_local("") == '""'


def test_split_plain_addr_spec():
    assert split("a@B.example") == ("a", "b.example")
    assert split('"a b"@c') == ("a b", "c")
    assert split("alice") == ("alice", "")
    for bad in ("a@b@c", "<a@b>", "a@", "a b@c", ""):
        with pytest.raises(AddressError):
            split(bad)


ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
LABEL = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?\Z")
DOMAINS = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
DOT_ATOMS = st.lists(st.text(ATEXT, min_size=1, max_size=8), min_size=1, max_size=4).map(".".join)
LOCALS = st.one_of(DOT_ATOMS, st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                      min_size=1, max_size=20))


@given(LOCALS, DOMAINS)
def test_address_text_round_trips_through_parse_path(local, domain):
    addr = Address(local, domain)
    assume(len(addr.bracketed()) <= 256 and len(quote_local(local)) <= 64)
    again = rcpt(addr.bracketed())
    assert again == addr
    assert again.routed == any(c in local for c in "@%!")
    assert split(str(addr)) == (local, domain)


@given(st.text(max_size=40))
@settings(max_examples=500)
def test_parse_path_never_raises_anything_but_address_error(text):
    for candidate in (text, "<" + text + ">", "<" + text + "@b.example>"):
        try:
            addr = parse_path(candidate, sender=False, smtputf8=True)
        except AddressError as err:
            assert err.code in (500, 501, 553)
        else:
            assert "\r" not in str(addr) and "\n" not in str(addr) and "\x00" not in str(addr)


# ---- header address lists (sendmail -t, FAULTS 4.5 #76) ----

@pytest.mark.parametrize("value, expected", [
    ("a@b.example", ["a@b.example"]),
    ("Alice <alice@Example.org>, bob@example.org", ["alice@example.org", "bob@example.org"]),
    ('"Smith, John" <js@example.org>', ["js@example.org"]),
    ('"a \\"quoted\\" <name>" <q@example.org>', ["q@example.org"]),
    ("undisclosed-recipients:;", []),
    ("undisclosed-recipients: ;", []),
    ("friends: a@b.example, c@d.example;", ["a@b.example", "c@d.example"]),
    ("friends: a@b.example, Cee <c@d.example>;, e@f.example",
     ["a@b.example", "c@d.example", "e@f.example"]),
    ("a@b.example (comment (nested (deeply)) \\) escaped)", ["a@b.example"]),
    ("(lead) a (mid) @ (x) b.example (tail)", ["a@b.example"]),
    ("a@b.example,\r\n c@d.example,\r\n\tJohn\r\n <j@x.example>",
     ["a@b.example", "c@d.example", "j@x.example"]),
    ('"john smith"@example.org', ['"john smith"@example.org']),
    ('"a@b"@example.org', ['"a@b"@example.org']),
    ('"plain"@example.org', ["plain@example.org"]),
    ('"a".b@example.org', ["a.b@example.org"]),
    ("<@relay.example,@other.example:user@final.example>", ["user@final.example"]),
    ("Name <@relay.example:user@final.example>", ["user@final.example"]),
    ("alice", ["alice"]),
    ("alice, Bob <bob>", ["alice", "bob"]),
    (", , a@b.example, ,", ["a@b.example"]),
    ("John Q. Public <jqp@example.org>", ["jqp@example.org"]),
    ("=?utf-8?q?J=C3=B6rg?= <j@example.org>", ["j@example.org"]),
    ("Jörg <jörg@exämple.org>", ["jörg@exämple.org"]),
    ("a@[192.0.2.1]", ["a@[192.0.2.1]"]),
    ("a@[IPv6:2001:DB8::1]", ["a@[ipv6:2001:db8::1]"]),
    ("", []),
    ("  (just a comment)  ", []),
    ("list: a@b.example", ["a@b.example"]),
])
def test_address_lists(value, expected):
    assert parse_address_list(value) == expected


@pytest.mark.parametrize("value, words", [
    ('"unbalanced@example.org', "unbalanced '\"'"),
    ("(open a@b.example", "unbalanced '('"),
    ("a@b.example)", "unbalanced ')'"),
    ("<a@b.example", "unbalanced '<'"),
    ("a@b.example>", "'>'"),
    ("<>", "empty address"),
    ("outer: inner: a@b;;", "nested group"),
    ("a@b.example\r\nBcc: victim@example.org", "line break"),
    ("a@b.example\nBcc: victim@example.org", "line break"),
    ("a@b.example\rc@d", "line break"),
    ("a@b.example\r\n", "line break"),
    ("a\x00@b.example", "control"),
    ("a@", "missing domain"),
    ("a@b.example c@d.example", "'c'"),
    ("John Doe john@example.org", "'Doe'"),
    ("a@b..example", "'.'"),
    ("a@[300.1.1.1]", "address literal"),
    ("a@bad_domain.example", "bad domain"),
    ("x" * 65 + "@b.example", "local part"),
    ("a@[1.2.3.4", "unterminated domain literal"),
    ("a@b.example;", "';'"),
    ("<a@b.example> trailing", "'trailing'"),
    ("a\\b@c", "'\\\\'"),
    ("Name <a@b.example", "unbalanced '<'"),
])
def test_malformed_lists_name_the_fault(value, words):
    with pytest.raises(AddressError) as info:
        parse_address_list(value)
    assert words in info.value.text
    assert "\n" not in info.value.text and "\r" not in info.value.text


def test_folded_value_equals_unfolded_value():
    folded = "a@b.example,\r\n\r\n c@d.example"
    with pytest.raises(AddressError):
        parse_address_list(folded)   # CRLF CRLF is not folding: it would end the header
    assert parse_address_list("a@b.example,\r\n c@d.example") == ["a@b.example", "c@d.example"]


def test_long_list_is_linear():
    value = ", ".join("user%d@example.org" % i for i in range(20000))
    assert len(parse_address_list(value)) == 20000
    deep = "(" * 50000 + ")" * 50000 + " a@b.example"
    assert parse_address_list(deep) == ["a@b.example"]


def test_error_text_is_bounded():
    with pytest.raises(AddressError) as info:
        parse_address_list("a@b.example " + "x" * 100000)
    assert len(info.value.text) < 200


# cross-check against the email package on a corpus of valid lists

CORPUS = [
    "a@b.example",
    "Alice Example <alice@example.org>",
    '"Example, Alice" <alice@example.org>, bob@example.net',
    "undisclosed-recipients:;",
    "team: a@example.org, B <b@example.org>;, c@example.org",
    "a@example.org (Alice), (Bob) b@example.org",
    "a (c (n)) @ b . example",
    '"john smith"@example.com',
    '"a\\"b"@example.com',
    "<@r.example,@s.example:x@y.example>",
    "John Q. Public <jqp@example.org>",
    '"a".b@example.com',
    "x@[192.0.2.7]",
    "a@example.org,\r\n b@example.org,\r\n\tc@example.org",
    "Mixed.Case+Tag@Example.ORG",
    "empty:;, a@b.example",
    "=?utf-8?b?SsO2cmc=?= <j@example.org>",
    "a!b%c@example.org",
]


def email_package_addresses(value):
    header = HeaderRegistry()("To", value.replace("\r\n", ""))  # it does not unfold
    return [(a.username, a.domain.lower()) for a in header.addresses]


@pytest.mark.parametrize("value", CORPUS)
def test_list_parser_agrees_with_email_headerregistry(value):
    ours = [split(addr) for addr in parse_address_list(value)]
    assert ours == email_package_addresses(value)


NAMES = st.text(st.characters(min_codepoint=32, max_codepoint=0x2fff,
                              blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30)


@given(st.lists(st.tuples(NAMES, LOCALS, DOMAINS), min_size=1, max_size=5),
       st.booleans())
@settings(max_examples=300)
def test_format_then_parse_round_trips(entries, as_group):
    formatted, expected = [], []
    for name, local, domain in entries:
        assume(len(quote_local(local)) <= 64)
        formatted.append(format_address(name, quote_local(local) + "@" + domain))
        expected.append((local, domain))
    value = ", ".join(formatted)
    if as_group:
        value = "group: " + value + ";"
    assert [split(a) for a in parse_address_list(value)] == expected
    # the email package decodes RFC 2047 encoded words even inside an addr-spec, where
    # RFC 2047 section 5 forbids them: it is no oracle for such local parts
    if not any("=?" in local for _, local, _ in entries):
        assert email_package_addresses(value) == expected


@given(NAMES)
@settings(max_examples=300)
def test_display_name_survives_format(name):
    text = format_address(name, "a@b.example")
    expected = " ".join(name.split())
    if not expected:
        assert text == "a@b.example"
    elif text.startswith("=?"):
        words = email.header.decode_header(text.rsplit(" <", 1)[0])
        assert str(email.header.make_header(words)) == expected
    else:
        assert email.utils.parseaddr(text) == (expected, "a@b.example")


# ---- format_address ----

def test_format_address_plain_and_quoted_names():
    assert format_address("John Doe", "j@example.org") == "John Doe <j@example.org>"
    assert format_address("Doe, John", "j@example.org") == '"Doe, John" <j@example.org>'
    assert format_address('say "hi"', "j@x") == '"say \\"hi\\"" <j@x>'
    assert format_address("J. Doe", "j@x") == '"J. Doe" <j@x>'
    assert format_address("", "j@x") == "j@x"
    assert format_address(None, "j@x") == "j@x"
    assert format_address("=?utf-8?q?x?=", "j@x") == '"=?utf-8?q?x?=" <j@x>'


def test_format_address_encodes_non_ascii_names():
    text = format_address("Jörg Müller-Lüdenscheidt " * 4, "j@example.org")
    assert text.isascii()
    words = text.split(" <")[0].split(" ")
    assert all(len(w) <= 75 for w in words)
    decoded = str(email.header.make_header(email.header.decode_header(text.split(" <")[0])))
    assert decoded == ("Jörg Müller-Lüdenscheidt " * 4).strip()
    # (email.headerregistry is not the oracle here: it mis-joins adjacent encoded words)
    assert HeaderRegistry()("From", text).addresses[0].addr_spec == "j@example.org"


def test_format_address_cannot_inject_headers():
    text = format_address("Evil\r\nBcc: victim@example.org", "j@example.org")
    assert "\r" not in text and "\n" not in text
    with pytest.raises(AddressError):
        format_address("x", "j@example.org\r\nBcc: victim@example.org")
    with pytest.raises(AddressError):
        format_address("x", "j@example.org> <victim@example.org")


def test_format_address_quotes_local_part():
    assert format_address("A", '"a b"@x.example') == 'A <"a b"@x.example>'


# ---- runtime rules ----

def test_imports_are_cheap_and_python3_light_only():
    tree = ast.parse((ROOT / "masq" / "mail" / "address.py").read_text())
    names = {alias.name.split(".")[0] for node in ast.walk(tree)
             if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    assert names <= {"re", "ipaddress", "base64"}


def test_works_with_email_package_blocked():
    code = ("import sys\n"
            "for m in ('email', 'logging', 'asyncio', 'unicodedata', 'urllib', 'uuid'):\n"
            "    sys.modules[m] = None\n"
            "from masq.mail.address import parse_path, parse_address_list, format_address\n"
            "assert str(parse_path('<a@[IPv6:::1]>', sender=False)) == 'a@[ipv6:::1]'\n"
            "assert parse_address_list('g: A <a@b>;') == ['a@b']\n"
            "assert format_address('\u00e9', 'a@b').startswith('=?utf-8?b?')\n"
            "assert 'ipaddress' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
