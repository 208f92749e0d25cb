"""The DNS list decisions without the network: postscreen's `dnsbl_sites` grammar, the
names asked (IPv4 octets and IPv6 nibbles reversed), the score with weights and filters,
allow lists, the TXT text made safe, and the verdicts kept by TTL in a bounded table."""

import pytest

from masq.config import dnsbl_site, schema
from masq.config.uci import ConfigError
from masq.policy import dnsbl


@pytest.mark.parametrize("text,zone,weight,good,bad", [
    ("zen.example=127.0.0.[2..11]*3", "zen.example", 3, ["127.0.0.2", "127.0.0.11"],
     ["127.0.0.1", "127.0.0.12", "127.0.1.2"]),
    ("list.example=127.0.[2..15].[0;2..3]*-2", "list.example", -2,
     ["127.0.2.0", "127.0.15.3"], ["127.0.2.1", "127.0.16.0"]),
    ("wl.example=127.0.0.[17;18]", "wl.example", 1, ["127.0.0.17", "127.0.0.18"],
     ["127.0.0.19"]),
    ("Plain.Example.", "plain.example", 1, ["127.0.0.2", "127.1.2.3"],
     ["127.255.255.254", "192.0.2.1", "::1"]),
    ("one.example=127.0.0.4*10", "one.example", 10, ["127.0.0.4"], ["127.0.0.5"]),
])
def test_entries_parse_as_postscreen_reads_them(text, zone, weight, good, bad):
    site = dnsbl_site.parse(text)
    assert (site.zone, site.weight) == (zone, weight)
    assert [a for a in good + bad if site.counts(a)] == good


@pytest.mark.parametrize("text", [
    "nodot", "a.example=127.0.0", "a.example=127.0.0.[3..2]", "a.example=127.0.0.256",
    "a.example=127.0.0.[2..]", "a.example*", "a.example*x", "a.example=127.0.0.2*1.5",
    "bad_zone!.example", "a.example=[1;2].0.0.1.5"])
def test_a_bad_entry_is_a_configuration_error_naming_it(text):
    with pytest.raises(ConfigError) as caught:
        schema.loads("config masq 'main'\n\tlist dnsbl '%s'\n" % text)
    assert "dnsbl" in str(caught.value)


@pytest.mark.parametrize("ip,name", [
    ("192.0.2.99", "99.2.0.192.bl.example"),
    ("::ffff:192.0.2.99", "99.2.0.192.bl.example"),
    ("2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example"),
])
def test_the_name_asked_reverses_octets_or_nibbles(ip, name):
    assert dnsbl.query_name(ip, "bl.example") == name


def lists():
    return dnsbl.Lists(["big.example=127.0.0.[2..11]*3", "small.example",
                        "allow.example=127.0.0.[20;21]*-2"], ["white.example"], 3)


def test_weights_add_up_and_negative_weights_take_off():
    answers = {"white.example": ([], 300), "big.example": (["127.0.0.2"], 300),
               "small.example": (["127.0.0.2"], 600), "allow.example": ([], 900)}
    verdict = lists().verdict(answers)
    assert (verdict.score, verdict.blocked, verdict.listed_by) == (
        4, True, ["big.example", "small.example"])
    assert verdict.ttl == 300 and verdict.complete
    answers["allow.example"] = (["127.0.0.21"], 900)
    assert (lists().verdict(answers).score, lists().verdict(answers).blocked) == (2, False)


def test_an_allow_list_hit_wins_and_a_failed_lookup_adds_nothing():
    answers = {"white.example": (["127.0.0.2"], 30), "big.example": (["127.0.0.2"], 30),
               "small.example": ([], 30), "allow.example": ([], 30)}
    verdict = lists().verdict(answers)
    assert verdict.allowed_by == "white.example" and not verdict.blocked
    assert verdict.ttl == dnsbl.MIN_TTL                 # kept at least MIN_TTL
    failed = {"white.example": (None, 0), "big.example": (None, 0),
              "small.example": (["127.0.0.2"], 30), "allow.example": ([], 30)}
    verdict = lists().verdict(failed)
    assert (verdict.score, verdict.blocked, verdict.complete) == (1, False, False)


def test_the_txt_text_is_printable_ascii_and_bounded():
    rdata = b"\x0bListed \x00by\n" + b"\x05 see " + bytes([200]) + b"x" * 199
    text = dnsbl.txt_text(rdata)
    assert text.startswith("Listed by see ") and len(text) == dnsbl.TXT_MAX
    assert all(" " <= c <= "~" for c in text)
    assert dnsbl.refusal("192.0.2.1", "bl.example", None).to_bytes() == (
        b"554 5.7.1 Service unavailable; client [192.0.2.1] blocked using bl.example\r\n")


def test_verdicts_are_kept_for_their_ttl_and_bounded():
    kept = dnsbl.Verdicts(size=3)
    verdict = lists().verdict({"white.example": ([], 100), "big.example": ([], 100),
                               "small.example": ([], 100), "allow.example": ([], 100)})
    kept.put("192.0.2.1", verdict, None, now=1000.0)
    assert kept.get("192.0.2.1", 1099.0) == (verdict, None)
    assert kept.get("192.0.2.1", 1100.0) is None
    for n in range(10):
        kept.put("192.0.2.%d" % n, verdict, None, now=2000.0 + n)
    assert len(kept.kept) == 3 and kept.get("192.0.2.9", 2010.0) is not None
    incomplete = lists().verdict({})
    kept.put("192.0.2.50", incomplete, None, now=3000.0)
    assert kept.get("192.0.2.50", 3000.0) is None
