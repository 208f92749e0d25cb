"""Aliases: the file syntax, expansion, limits and loops (FAULTS 4.3 #49-#51), includes."""

import os
import time

import pytest

from masq.aliases import expand as expansion
from masq.aliases import file as aliases
from masq.aliases.expand import expand
from masq.aliases.file import FILE, LOCAL, PIPE, REMOTE, AliasError, AliasFile, load, parse
from masq.policy.local import Locality


def table(text, path="/etc/aliases"):
    result, errors = parse(text, path)
    assert errors == []
    return result


def targets(result):
    assert not result.failed, result
    return [(t.kind, t.value) for t in result.targets]


def write(tmp_path, text, name="aliases"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_classic_syntax_comments_continuations_quotes_and_case():
    t = table("# the admin's aliases\n"
              "\n"
              "Root: alice,\n"
              "   bob@example.org,\n"
              "   # a comment inside a continued entry\n"
              "\t\"|/usr/bin/logger -t mail 'a, b'\"\n"
              '"first last": \\flast\n'
              "log: /var/log/mail.archive\n")
    assert sorted(t.names()) == ["first last", "log", "root"]
    assert targets(expand(t, "ROOT")) == [
        (LOCAL, "alice"), (REMOTE, "bob@example.org"),
        (PIPE, "/usr/bin/logger -t mail 'a, b'")]
    assert targets(expand(t, "First Last")) == [(LOCAL, "flast")]
    assert targets(expand(t, "log")) == [(FILE, "/var/log/mail.archive")]


def test_crlf_file_and_trailing_comma():
    t = table("a: b, c,\r\n  d\r\n")
    assert targets(expand(t, "a")) == [(LOCAL, "b"), (LOCAL, "c"), (LOCAL, "d")]


def test_not_aliased_is_the_user_itself_case_kept():
    assert targets(expand(table("x: y\n"), "Alice")) == [(LOCAL, "Alice")]
    assert targets(expand(None, "bob")) == [(LOCAL, "bob")]


def test_postmaster_and_mailer_daemon_always_resolve_to_root_by_default():
    for name in ("postmaster", "PostMaster", "MAILER-DAEMON", "mailer-daemon"):
        assert targets(expand(table("x: y\n"), name)) == [(LOCAL, "root")]
        assert targets(expand(None, name)) == [(LOCAL, "root")]
    t = table("postmaster: alice\nroot: bob\n")
    assert targets(expand(t, "Postmaster")) == [(LOCAL, "alice")]
    assert targets(expand(t, "MAILER-DAEMON")) == [(LOCAL, "bob")]


def test_backslash_user_is_final_and_keeps_a_copy():
    t = table("root: \\root, alice\nalice: carol\n")
    assert targets(expand(t, "root")) == [(LOCAL, "root"), (LOCAL, "carol")]


def test_address_at_a_local_domain_is_expanded_again_remote_is_kept():
    t = table("a: b@router.lan, c@Elsewhere.Example, \"x y\"@far.example\nb: \\bee\n")
    assert targets(expand(t, "a", locality=Locality(["router.lan"]))) == [
        (LOCAL, "bee"), (REMOTE, "c@elsewhere.example"), (REMOTE, '"x y"@far.example')]


def test_fault_49_alias_loop_two_aliases_bounce_5_4_6():
    result = expand(table("a: b\nb: a\n"), "a")
    assert result.failed and not result.temporary
    assert result.status == "5.4.6"
    assert "mail forwarding loop" in result.text and "a -> b -> a" in result.text
    assert result.targets == []


def test_fault_49_alias_to_itself_is_a_loop():
    result = expand(table("a: a\n"), "a")
    assert (result.status, "loop" in result.text) == ("5.4.6", True)
    result = expand(table("a: x, A@router.lan\n"), "a", locality=Locality(["router.lan"]))
    assert result.status == "5.4.6"


def test_fault_49_long_loop_and_loop_through_an_include(tmp_path):
    text = "".join("l%d: l%d\n" % (i, i + 1) for i in range(10)) + "l10: l0\n"
    assert expand(table(text), "l3").status == "5.4.6"
    inc = write(tmp_path, "x, ouch\n", "inc")
    t = table("list: :include:%s\nouch: list\n" % inc)
    assert expand(t, "list").status == "5.4.6"


def test_diamond_is_not_a_loop_and_duplicates_collapse():
    t = table("a: b, c, d, D\nb: d, e\nc: d, e, \\d\nd: \\dee\n")
    assert targets(expand(t, "a")) == [(LOCAL, "dee"), (LOCAL, "e"), (LOCAL, "d")]


def test_fault_50_alias_bomb_three_levels_of_1000_fails_fast():
    lines = ["bomb: " + ", ".join("b%d" % i for i in range(1000))]
    lines += ["b%d: " % i + ", ".join("c%d" % j for j in range(1000)) for i in range(1000)]
    lines += ["c%d: " % i + ", ".join("d%d" % j for j in range(1000)) for i in range(1000)]
    t = table("\n".join(lines) + "\n")
    lookups = []
    t.get = lambda name, caseless=True, get=t.get: lookups.append(name) or get(name, caseless)
    result = expand(t, "bomb")
    assert len(lookups) < 2 * 1000 * 1000      # stopped at the size limit, not after 10**9
    assert result.failed and not result.temporary
    assert result.status == "5.3.5"
    assert "too large" in result.text and "1000" in result.text


def test_fault_50_alias_chain_1001_deep_hits_the_depth_limit():
    text = "".join("n%d: n%d\n" % (i, i + 1) for i in range(1001))
    result = expand(table(text), "n0")
    assert result.status == "5.4.6"
    assert "deeper than 20" in result.text
    assert targets(expand(table(text), "n985")) == [(LOCAL, "n1001")]
    deep = expand(table(text), "n0", depth_limit=5000)         # Python's own stack is smaller
    assert (deep.status, deep.targets) == ("5.4.6", [])


def test_fault_50_duplicates_collapsed_and_size_limit_counts_distinct_addresses():
    many = ", ".join("u%d" % i for i in range(1000))
    t = table("list: %s, %s, U1, u2@router.lan\n" % (many, many))
    assert len(expand(t, "list", locality=Locality(["router.lan"])).targets) == 1000
    t = table("list: %s, extra\n" % many)
    result = expand(t, "list")
    assert (result.status, "over 1000 addresses" in result.text) == ("5.3.5", True)
    assert expand(t, "list", size_limit=2000).targets[-1].value == "extra"


def test_include_file_targets_comments_and_commas(tmp_path):
    inc = write(tmp_path, "# members\nalice, bob@far.example\n\ncarol\n", "members")
    t = table("list: :include:%s, \\owner\n" % inc)
    assert targets(expand(t, "list")) == [
        (LOCAL, "alice"), (REMOTE, "bob@far.example"), (LOCAL, "carol"), (LOCAL, "owner")]


def test_include_file_may_not_hold_commands_files_or_includes(tmp_path):
    for bad in ("|/bin/sh -c 'touch /tmp/x'", "/etc/passwd", ":include:/etc/aliases"):
        inc = write(tmp_path, "alice\n" + bad + "\n", "inc")
        result = expand(table("list: :include:%s\n" % inc), "list")
        assert result.status == "5.7.1", bad
        assert "not allowed in an include file" in result.text


def test_include_file_missing_or_broken_defers_without_quoting_it(tmp_path):
    result = expand(table("list: :include:%s\n" % (tmp_path / "none")), "list")
    assert result.failed and result.temporary and result.status == "4.3.0"
    secret = write(tmp_path, "root:$6$secrethash:19000:0:99999:7:::\n", "shadow")
    result = expand(table("list: :include:%s\n" % secret), "list")
    assert result.status == "4.3.0"
    assert "line 1" in result.text and "secrethash" not in result.text


def test_load_missing_file_is_no_aliases(tmp_path):
    loaded = load(str(tmp_path / "nope"))
    assert loaded.names() == []
    assert targets(expand(loaded, "postmaster")) == [(LOCAL, "root")]


def test_load_records_owner_and_reports_first_error_with_line(tmp_path):
    path = write(tmp_path, "ok: fine\n")
    assert load(path).owner == os.getuid()
    path = write(tmp_path, "ok: fine\nbroken line without colon\nalso: \"unterminated\n")
    with pytest.raises(AliasError) as info:
        load(path)
    assert (info.value.path, info.value.line) == (path, 2)
    assert str(info.value).startswith(path + ":2: ")


@pytest.mark.parametrize("text, line, words", [
    ("a b: c\n", 1, "bad alias name"),
    ("x: y\n  \nname@host: c\n", 3, "must be a local part"),
    ("a:\n", 1, "no targets"),
    ("a: |\n", 1, "empty command"),
    ("a: \"|/bin/echo 'x\"\n", 1, "bad command"),
    ("a: :include:relative/path\n", 1, "absolute path"),
    ("a: :fail: no\n", 1, "unknown target"),
    ("a: /var/mail/dir/\n", 1, "directory"),
    ("a: bad@@host\n", 1, "bad target"),
    ("a: root:x:0:0\n", 1, "bad target"),
    (" continued: x\n", 1, "continuation line without an alias"),
    ("a: \\\n", 1, "bad target"),
])
def test_every_syntax_error_names_its_line(text, line, words):
    _, errors = parse("# header\n" + text, "/etc/aliases")
    assert errors, text
    assert errors[0].line == line + 1
    assert words in errors[0].message


def test_check_lists_every_problem_with_lines_for_newaliases(tmp_path):
    path = write(tmp_path, "a: b\nb: a\nbroken\nroot: x\nroot: y\nfine: alice\n")
    problems = expansion.check(path)
    assert [p.line for p in problems] == [1, 2, 3, 5]
    assert "5.4.6" in problems[0].message and "loop" in problems[0].message
    assert "duplicate alias" in problems[3].message
    assert expansion.check(write(tmp_path, "fine: alice\n")) == []
    assert "not found" in expansion.check(str(tmp_path / "none"))[0].message


def test_duplicate_alias_first_wins():
    t, errors = parse("a: first\na: second\n")
    assert errors == [] and len(t.warnings) == 1
    assert targets(expand(t, "a")) == [(LOCAL, "first")]


def test_fault_51_aliases_file_syntax_error_is_an_error_not_silence(tmp_path):
    path = write(tmp_path, "postmaster root\n")
    with pytest.raises(AliasError):
        load(path)


def test_fault_51_aliases_path_not_a_regular_file(tmp_path):
    os.mkdir(tmp_path / "dir")
    with pytest.raises(AliasError) as info:
        load(str(tmp_path / "dir"))
    assert "not a regular file" in info.value.message
    os.mkfifo(str(tmp_path / "fifo"))
    with pytest.raises(AliasError):
        load(str(tmp_path / "fifo"))


def test_fault_51_aliases_file_being_rewritten_while_read(tmp_path, monkeypatch):
    path = write(tmp_path, "a: b\n")
    real_read, calls = os.read, []

    def read_and_append(fd, size):
        data = real_read(fd, size)
        if not calls:
            calls.append(size)
            with open(path, "a") as out:          # another program rewrites it in place
                out.write("c: d\n")
        return data

    monkeypatch.setattr(aliases.os, "read", read_and_append)
    with pytest.raises(AliasError) as info:
        load(path)
    assert "changed while being read" in info.value.message


def test_fault_51_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "aliases"
    path.write_bytes(b"a: b\nc: \xff\n")
    with pytest.raises(AliasError) as info:
        load(str(path))
    assert info.value.line == 2


def test_alias_file_reloads_when_changed_and_keeps_failing_while_broken(tmp_path):
    path = write(tmp_path, "a: b\n")
    cache = AliasFile(path)
    first = cache.get()
    assert cache.get() is first
    with open(path, "w") as out:
        out.write("a: c, \"oops\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    with pytest.raises(AliasError):
        cache.get()
    with pytest.raises(AliasError):
        cache.get()
    with open(path, "w") as out:
        out.write("a: fixed\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10 ** 9))
    assert targets(expand(cache.get(), "a")) == [(LOCAL, "fixed")]


def test_pipe_and_file_targets_keep_shell_text_inert():
    t = table('evil: "|/usr/bin/procmail -a $(touch /tmp/pwned) ; rm -rf /"\n')
    assert targets(expand(t, "evil")) == [
        (PIPE, "/usr/bin/procmail -a $(touch /tmp/pwned) ; rm -rf /")]


def test_hostile_local_parts_are_just_unknown_names():
    t = table("a: b\n")
    for local in ("../../etc/passwd", "-oQ/tmp", "a;b", "$(id)", "x\x00y"):
        assert targets(expand(t, local)) == [(LOCAL, local)]
