"""The one glob matcher (masq/mail/glob.py): masqmail's fnmatch meaning, and refusal of what
is not glob syntax (issue 14: `*.sub.example` was taken literally)."""

import fnmatch
import json
import os
import shutil
import subprocess

import pytest
from hypothesis import given, strategies as st

from helpers import ROOT
from masq.mail import glob


@pytest.mark.parametrize("pattern, domain, expected", [
    ("*.sub.example", "a.sub.example", True),
    ("*.sub.example", "x.y.sub.example", True),
    ("*.sub.example", "sub.example", False),
    ("*.sub.example", "A.SUB.Example", True),
    ("mail?.example.org", "mail1.example.org", True),
    ("mail?.example.org", "mail12.example.org", False),
    ("host[0-9].lan", "host7.lan", True),
    ("host[!0-9].lan", "host7.lan", False),
    ("host[^0-9].lan", "hostx.lan", True),
    ("example.org", "EXAMPLE.org", True),
    ("[192.0.2.1]", "[192.0.2.1]", True),
    ("[192.0.2.1]", "1", False),
])
def test_domains(pattern, domain, expected):
    assert glob.check_domain(pattern) == pattern
    assert glob.match_domain(pattern, domain) is expected


@pytest.mark.parametrize("pattern, addr, caseless, expected", [
    ("alice", "alice@anywhere.example", False, True),        # no @: the local part only
    ("alice", "Alice@anywhere.example", False, False),       # local part case-sensitive
    ("alice", "Alice@anywhere.example", True, True),
    ("*@example.org", "bob@EXAMPLE.ORG", False, True),       # domain never case-sensitive
    ("*@example.org", "bob", False, False),                  # unqualified: no domain
    ("bob", "bob", False, True),
    ("<>", "", False, True),
    ("<>", "bob@x", False, False),
    ("*", "", False, False),                                 # only <> matches the null sender
    ("a*@*.example", "ann@mx.example", False, True),
    ("postmaster@*", "postmaster@any.where", False, True),
])
def test_addresses(pattern, addr, caseless, expected):
    glob.check_address(pattern, null_ok=True)
    assert glob.match_address(pattern, addr, caseless) is expected


@pytest.mark.parametrize("pattern, reason", [
    ("{a,b}.example", "not glob syntax"),
    ("(a|b).example", "not glob syntax"),
    ("^mail.example$", "not glob syntax"),
    ("mail+.example", "not glob syntax"),
    (".sub.example", "write *.sub.example"),
    ("host[0-9.lan", "without a closing"),
    ("host[z-a].lan", "reversed"),
    ("host[[:digit:]].lan", "character classes"),
    ("host\\", "at the end"),
    ("a b.example", "white space"),
    ("", "empty"),
])
def test_domain_refusals(pattern, reason):
    with pytest.raises(glob.GlobError, match=reason.replace("*", r"\*")):
        glob.check_domain(pattern)


@pytest.mark.parametrize("pattern, reason", [
    ("@example.org", "nothing before"),
    ("bob@{a,b}.org", "after '@'"),
    ("bob[@x.org", "closing"),
    ("<>", "null sender"),
])
def test_address_refusals(pattern, reason):
    with pytest.raises(glob.GlobError, match=reason):
        glob.check_address(pattern)


def test_escapes_stand_for_themselves():
    assert glob.match_whole("a\\*b", "a*b")
    assert not glob.match_whole("a\\*b", "axb")
    assert glob.match_whole("[\\]]x", "]x")


ALPHABET = "ab.-*?[]!"
TEXT = "ab.-"


@given(st.text(ALPHABET, min_size=1, max_size=8), st.text(TEXT, max_size=10))
def test_agrees_with_fnmatch(pattern, text):
    """Where Python's fnmatch reads a pattern as fnmatch(3) does, the answers agree."""
    try:
        glob.check(pattern)
    except glob.GlobError:
        return                   # refused: Python would take a broken set literally
    assert glob.match_whole(pattern, text, caseless=False) == \
        fnmatch.fnmatchcase(text, pattern)


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_the_luci_form_takes_domain_patterns():
    """LuCI's local_domain field took only host names, so `*.sub.example` could not be
    entered; its check now agrees with check_domain on these."""
    view = os.path.join(ROOT, "openwrt", "luci-app-masq", "htdocs", "luci-static",
                        "resources", "view", "masq", "settings.js")
    [line] = [l for l in open(view) if l.startswith("var DOMAIN_PATTERN")]
    values = ["*.sub.example", "lan", "[192.0.2.1]", "mail[0-9].lan", "{a,b}.example",
              "a b.example", "(a|b).example", "x+.example"]
    script = line + "console.log(JSON.stringify(%s.map(v => DOMAIN_PATTERN.test(v))));" % \
        json.dumps(values)
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = []
    for value in values:
        try:
            glob.check_domain(value)
            expected.append(True)
        except glob.GlobError:
            expected.append(False)
    assert json.loads(done.stdout) == expected
