"""Glob aliases (masqmail's globalias_file) in expansion: whole-address patterns, first
line wins, consulted before the plain aliases, loops, caseless_matching; and relay control
asking the one Locality (issue 14 point 3)."""

from masq.aliases.expand import expand
from masq.aliases.file import LOCAL, PIPE, REMOTE, parse, parse_globs
from masq.mail.address import parse_path
from masq.policy import relay
from masq.policy.local import Locality


def globs(text):
    result, errors = parse_globs(text, "/etc/globaliases")
    assert errors == []
    return result


def targets(result):
    assert not result.failed, result
    return [(t.kind, t.value) for t in result.targets]


LOC = Locality(["router.lan", "virt.example"], "router.lan")


def test_first_matching_line_wins_and_beats_the_plain_alias():
    g = globs("team@virt.example: carol\n*@virt.example: bob\npostmaster@*: ann\n")
    plain, _ = parse("team: dave\n")
    assert targets(expand(plain, "team", LOC, domain="virt.example", globs=g)) == [
        (LOCAL, "carol")]
    assert targets(expand(plain, "x", LOC, domain="virt.example", globs=g)) == [(LOCAL, "bob")]
    assert targets(expand(plain, "team", LOC, domain="router.lan", globs=g)) == [
        (LOCAL, "dave")]
    assert targets(expand(plain, "POSTMASTER", LOC, domain="router.lan", globs=g)) == [
        (LOCAL, "ann")]


def test_unqualified_targets_take_the_hostname_and_are_looked_up_again():
    g = globs("*@router.lan: \"|/bin/logger\"\nlist@virt.example: x, y@virt.example, "
              "z@far.example\n")
    assert targets(expand(None, "list", LOC, domain="virt.example", globs=g)) == [
        (PIPE, "/bin/logger"), (LOCAL, "y"), (REMOTE, "z@far.example")]


def test_a_line_reached_twice_in_one_chain_is_a_loop():
    g = globs("*@virt.example: x@virt.example\n")
    result = expand(None, "a", LOC, domain="virt.example", globs=g)
    assert result.status == "5.4.6" and "glob:*@virt.example" in result.text


def test_a_pattern_without_at_matches_the_whole_address():
    g = globs("*: \\root\n")             # `*: root` would match root@router.lan again: a loop
    assert targets(expand(None, "anyone", LOC, domain="virt.example", globs=g)) == [
        (LOCAL, "root")]
    g = globs("*virt.example: \\root\n")
    assert targets(expand(None, "anyone", LOC, domain="virt.example", globs=g)) == [
        (LOCAL, "root")]


def test_caseless_matching_off_makes_the_local_part_exact():
    exact = Locality(["virt.example"], "router.lan", caseless=False)
    g = globs("team@virt.example: carol\n")
    assert targets(expand(None, "Team", exact, domain="VIRT.example", globs=g)) == [
        (LOCAL, "Team")]
    assert targets(expand(None, "team", exact, domain="VIRT.example", globs=g)) == [
        (LOCAL, "carol")]
    assert targets(expand(None, "Team", LOC, domain="virt.example", globs=g)) == [
        (LOCAL, "carol")]


def test_bad_patterns_are_errors_with_their_line():
    result, errors = parse_globs("ok@x: a\nbad@{x}: a\n[oops: a\n", "/g")
    assert [(e.line, "bad pattern" in e.message) for e in errors] == [(2, True), (3, True)]
    assert [pattern for _, pattern, _ in result.entries] == ["ok@x"]


def test_relay_control_asks_the_locality():
    loc = Locality(["*.lan"], "router.lan", local_addresses=["bob@isp.example"],
                   not_local_addresses=["alice@pc.lan"])
    stranger = relay.Peer("192.0.2.9")

    def check(text):
        reply = relay.check_rcpt(stranger, parse_path("<%s>" % text, sender=False), loc,
                                 lambda addr: True)
        return reply.code if reply else 250
    assert check("eve@pc.lan") == 250               # *.lan is ours
    assert check("bob@isp.example") == 250          # a local address in another domain
    assert check("alice@pc.lan") == 554             # not local: no relaying for strangers
    assert check("eve@isp.example") == 554
