"""Which addresses are local (masq/policy/local.py): masqmail's rule with local_domain
patterns, local_addresses, not_local_addresses and caseless_matching (issue 14)."""

import pytest

from masq.config import schema
from masq.policy.local import Locality, is_local_user


def locality(**options):
    text = "config masq 'main'\n\toption hostname 'host.example'\n"
    for name, values in options.items():
        for value in values if isinstance(values, (list, tuple)) else [values]:
            text += "\tlist %s '%s'\n" % (name, value) if isinstance(values, list) else \
                "\toption %s '%s'\n" % (name, value)
    return Locality.from_config(schema.loads(text).main)


@pytest.mark.parametrize("addr, expected", [
    ("bob", True),                              # unqualified
    ("bob@host.example", True),                 # the default local_domain: hostname
    ("bob@LOCALHOST", True),                    # and localhost, any case
    ("bob@other.example", False),
    ("bob@sub.host.example", False),
])
def test_default_domains(addr, expected):
    assert locality().is_local(addr) is expected


@pytest.mark.parametrize("addr, expected", [
    ("bob@a.sub.example", True),
    ("bob@x.y.SUB.example", True),
    ("bob@sub.example", False),                 # * needs at least the dot before sub
    ("bob@*.sub.example", True),                # the literal, too, matches (* matches *)
    ("bob@mail7.lan", True),
    ("bob@mailx.lan", False),
])
def test_glob_domains(addr, expected):
    loc = locality(local_domain=["*.sub.example", "mail[0-9].lan"])
    assert loc.is_local(addr) is expected


def test_local_and_not_local_addresses():
    loc = locality(local_domain=["example.org"],
                   local_addresses=["bob@isp.example", "*@pop.example", "carol"],
                   not_local_addresses=["alice@example.org", "dave"])
    assert loc.is_local("bob@isp.example")          # a non-local domain, delivered here
    assert loc.is_local("bob@ISP.example")
    assert not loc.is_local("eve@isp.example")
    assert loc.is_local("x@pop.example")
    assert loc.is_local("carol@other.example") is False   # `carol` means carol@host.example
    assert not loc.is_local("alice@example.org")    # a local domain, sent away
    assert loc.is_local("eve@example.org")
    assert not loc.is_local("dave@host.example")


def test_not_local_unqualified_entry_is_qualified_with_the_hostname():
    loc = locality(local_domain=["host.example"], not_local_addresses=["dave"])
    assert not loc.is_local("dave@host.example")
    assert loc.is_local("dave")                     # unqualified: always local


@pytest.mark.parametrize("caseless, expected", [("1", True), ("0", False)])
def test_caseless_matching_covers_the_address_lists(caseless, expected):
    loc = locality(local_domain=["example.org"], local_addresses=["bob@isp.example"],
                   not_local_addresses=["alice@example.org"], caseless_matching=caseless)
    assert loc.is_local("Bob@isp.example") is expected
    assert loc.is_local("Alice@example.org") is not expected


def test_rewrites_see_only_local_domains():
    loc = locality(local_domain=["*.lan"], local_addresses=["bob@isp.example"])
    assert loc.in_local_domain_of("bob@pc.lan")
    assert loc.in_local_domain_of("bob")
    assert not loc.in_local_domain_of("bob@isp.example")    # local, but never rewritten


def test_local_users_case():
    assert is_local_user("Postmaster", caseless=False)
    assert is_local_user("MAILER-DAEMON", caseless=False)
    assert is_local_user("ROOT", caseless=True)
    assert not is_local_user("ROOT", caseless=False)
    assert is_local_user("root", caseless=False)
    assert is_local_user("Team", aliases={"team"}, caseless=True)
    assert not is_local_user("Team", aliases={"team"}, caseless=False)
    assert is_local_user("team", aliases={"team"}, caseless=False)
    assert not is_local_user("Mqnobodyx", local_users=["mqnobodyx"], caseless=False)
    assert is_local_user("Mqnobodyx", local_users=["mqnobodyx"], caseless=True)


def test_the_default_is_caseless():
    assert schema.loads("").main.caseless_matching is True


def test_archive_bare_user_keys_cover_glob_local_domains():
    """recipient_bcc's bare `user` key means that user in any local domain: a glob
    local_domain counts (it was compared literally)."""
    from masq.policy.archive import Rules
    main = schema.loads("config masq 'main'\n\toption hostname 'host.example'\n"
                        "\tlist local_domain '*.lan'\n"
                        "\tlist recipient_bcc 'bob archive@host.example'\n").main
    rules = Rules(main)
    assert rules.copies("x@far.example", ["bob@pc.lan"]) == ["archive@host.example"]
    assert rules.copies("x@far.example", ["bob@far.example"]) == []
