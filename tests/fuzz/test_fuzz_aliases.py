"""Fuzz aliases files (masq/aliases/file.py) and their expansion (masq/aliases/expand.py).

Input: files from the aliases grammar (names, quoted names, `\\user`, addresses, pipes with
good and broken quoting, /files, `:include:` of files the test writes with the same kind of
content, comments, continuation lines, CRLF) mixed with random text and random bytes.
Properties: reading returns text or raises AliasError; `parse` never raises and reports
errors as AliasError with a line of the file; expanding any alias (or a random local
part) returns an Expansion, never raises, and keeps to the size limit.
"""

from hypothesis import given, strategies as st

from fuzzing import fuzz_settings
from masq.aliases import expand as expansion
from masq.aliases import file as aliases
from masq.policy.local import Locality

_name = st.sampled_from(["root", "alice", "bob", "list", "Postmaster", "mailer-daemon", "a.b",
                         '"odd name"', "x@y", "", "é", "a\tb"])
_target = st.one_of(_name, st.sampled_from([
    "\\alice", "\\", "bob@example.org", "list@router.lan", "|/bin/cat", "|'unterminated",
    '"|/bin/echo a,b"', "/var/mail/x", "/tmp/dir/", ":include:INCLUDE", ":include:relative",
    ":other:", "<bob@example.org>", "\"q\\\"x\"@example.org", "a@@b", "a@[127.0.0.1]",
    "a\x00b", "x" * 300]))


@st.composite
def files(draw):
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        form = draw(st.integers(0, 9))
        if form == 0:
            lines.append(draw(st.sampled_from(["# comment", "", "   ", "\tcontinued, bob"])))
        elif form == 1:
            lines.append(draw(st.text(max_size=30)))
        else:
            targets = draw(st.lists(_target, min_size=0, max_size=4))
            lines.append("%s:%s%s" % (draw(_name), draw(st.sampled_from([" ", "", "\t"])),
                                      draw(st.sampled_from([", ", ",", " , "])).join(targets)))
            if draw(st.booleans()):
                lines.append("  " + ", ".join(draw(st.lists(_target, max_size=2))))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines)


def write(tmp_path, name, text, include):
    path = tmp_path / name
    path.write_bytes(text.replace(":include:INCLUDE", ":include:" + include)
                     .encode("utf-8", "surrogatepass"))
    return str(path)


@fuzz_settings(weight=2)
@given(st.one_of(files(), st.text(max_size=60)), files(), st.binary(max_size=40),
       st.sampled_from(["root", "alice", "list", "nosuch", "POSTMASTER", "x@y", ""]))
def test_any_aliases_file_parses_and_expands_without_raising(tmp_path_factory, text, include,
                                                             raw, local_part):
    folder = tmp_path_factory.mktemp("aliases")
    include_path = str(folder / "include")
    write(folder, "include", include, include_path)
    path = write(folder, "aliases", text, include_path)
    try:
        read, _ = aliases.read_file(path)
    except aliases.AliasError as err:
        assert err.line >= 1 and err.message == "not valid UTF-8"
        return
    parsed, errors = aliases.parse(read, path)
    lines = read.count("\n") + 1
    assert all(isinstance(e, aliases.AliasError) and 1 <= e.line <= lines for e in errors)
    globs, glob_errors = aliases.parse_globs(read, path)     # the same text as glob aliases
    assert all(isinstance(e, aliases.AliasError) and 1 <= e.line <= lines for e in glob_errors)
    locality = Locality(["router.lan", "*.lan"], "router.lan")
    for name in parsed.names() + [local_part]:
        result = expansion.expand(parsed, name, locality, globs=globs)
        assert result.failed or len(result.targets) <= expansion.SIZE_LIMIT
        assert all(t.kind in (aliases.LOCAL, aliases.REMOTE, aliases.PIPE, aliases.FILE)
                   for t in result.targets)
    assert isinstance(expansion.check(path, locality), list)
    (folder / "raw").write_bytes(raw)
    try:
        items = aliases.read_include(str(folder / "raw"))
        assert all(isinstance(i, aliases.Item) for i in items)
    except aliases.AliasError as err:
        assert "raw" in err.path
