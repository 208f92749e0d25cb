"""Header and sender rewrites per route (issue 14, point 4): masqmail's map tables.

The outgoing copy is made by masq.outbound.rewrite from the queued text; each test feeds
it a message and reads the header back with Python's email package. An address list is
parsed, never searched as text: display names, comments, groups and folding stay; a
rule's display name is used only for a bare address (masqmail). A rule that cannot
apply is a configuration error naming file and line, never skipped in silence.
"""

import email
import email.policy

import pytest

from masq.config import schema
from masq.outbound import rewrite

from helpers import masq, free_port
from sinks import Sink
from test_delivery import route, send, setup

LOCAL = ("test.example",)


def is_local(addr):
    domain = addr.rpartition("@")[2].lower()
    return not domain or domain in LOCAL


def route_of(**options):
    lines = ["config route 'isp'"]
    for key, items in options.items():
        for item in (items if isinstance(items, list) else [items]):
            lines.append("\t%s %s '%s'" % ("list" if isinstance(items, list) else "option",
                                            key, item))
    return schema.loads("\n".join(lines) + "\n").route("isp")


def outgoing(head, sender="alice@test.example", **options):
    """Return (sender, header block text, whole text) of the copy leaving by the route."""
    text = head.replace("\n", "\r\n").encode() + b"\r\nbody line\r\n"
    new_sender, body = rewrite.outgoing(route_of(**options), sender,
                                        lambda: iter([text[:7], text[7:]]), is_local)
    out = b"".join(body())
    return new_sender, out.split(b"\r\n\r\n", 1)[0].decode(), out


def field(out, name):
    return email.message_from_bytes(out, policy=email.policy.default)[name]


def test_an_existing_display_name_is_kept_and_the_address_alone_changes():
    # The defect: `From: Alice <Alice Smith <alice@isp.example>>` (the rule's whole text
    # pasted over the address inside the angle brackets).
    _, head, out = outgoing("From: Alice <alice@test.example>\nSubject: s\n",
                            map_from=["alice: Alice Smith <alice@isp.example>"])
    assert "From: Alice <alice@isp.example>\r\n" in head + "\r\n"
    assert field(out, "From").addresses[0].addr_spec == "alice@isp.example"


def test_a_bare_address_gets_the_rules_display_name():
    _, head, out = outgoing("From: alice@test.example\n",
                            map_from=["alice: Alice Smith <alice@isp.example>"])
    assert head == "From: Alice Smith <alice@isp.example>"
    assert field(out, "From").addresses[0].display_name == "Alice Smith"


def test_a_rule_without_a_space_after_the_colon_applies():
    # The defect: `alice:alice@isp.example` had no space, so the rule was skipped unsaid.
    sender, head, _ = outgoing("From: alice@test.example\n",
                               map_from=["alice:alice@isp.example"],
                               map_sender=["alice:alice@isp.example"])
    assert head == "From: alice@isp.example"
    assert sender == "alice@isp.example"


@pytest.mark.parametrize("rule,why", [
    ("alice x@isp.example", "no ':'"),
    ("alice:x", "has no domain"),
    ("alice@test.example: x@isp.example", "holds '@'"),
    ("alice:", "no replacement"),
    ("alice: <>", "bad replacement"),
    ("alice: *@bad..domain", "bad replacement"),
])
def test_a_rule_that_cannot_apply_is_a_config_error_at_its_line(tmp_path, rule, why):
    conf = tmp_path / "masq.conf"
    conf.write_text("config route 'isp'\n\toption smarthost 'mx.example'\n"
                    "\tlist map_from 'bob: bob@isp.example'\n\tlist map_from '%s'\n" % rule)
    done = masq("check-config", "-C", str(conf))
    assert done.returncode == 78
    assert ("%s:4: option 'map_from'" % conf).encode() in done.stderr
    assert why.encode() in done.stderr


def test_the_envelope_sender_refuses_a_display_name():
    with pytest.raises(schema.ConfigError) as info:
        route_of(map_sender=["alice: Alice <alice@isp.example>"])
    assert "no display name" in str(info.value) and info.value.line == 2


def test_comments_groups_folding_and_other_addresses_stay_as_they_were():
    head = ("From: (the boss) alice@test.example (Alice),\n"
            "\t\"al@test.example\" <bob@elsewhere.example>,\n"
            " friends: pal@test.example, al@test.example;\n")
    _, got, out = outgoing(head, map_from=["al: al@isp.example", "alice: *@isp.example"])
    assert got == ("From: (the boss) alice@isp.example (Alice),\r\n"
                   "\t\"al@test.example\" <bob@elsewhere.example>,\r\n"
                   " friends: pal@test.example, al@isp.example;")
    parsed = field(out, "From")
    assert [a.addr_spec for a in parsed.addresses] == [
        "alice@isp.example", "bob@elsewhere.example", "pal@test.example", "al@isp.example"]


def test_a_header_that_does_not_parse_leaves_as_it_came():
    _, head, _ = outgoing("From: alice@test.example <<\n", map_from=["*: *@isp.example"])
    assert head == "From: alice@test.example <<"


def test_reply_to_and_mail_followup_to_have_their_own_tables():
    head = ("From: alice@test.example\nReply-To: Alice <alice@test.example>\n"
            "Mail-Followup-To: list@test.example, alice@test.example\n"
            "To: alice@test.example\n")
    _, got, _ = outgoing(head, map_reply_to=["alice: replies@isp.example"],
                         map_followup_to=["list: list@lists.example"])
    assert got.split("\r\n") == [
        "From: alice@test.example", "Reply-To: Alice <replies@isp.example>",
        "Mail-Followup-To: list@lists.example, alice@test.example",
        "To: alice@test.example"]


def test_map_outgoing_covers_sender_and_headers_after_the_specific_tables():
    head = ("From: alice@test.example\nSender: bob@test.example\n"
            "Reply-To: alice@test.example\nMail-Followup-To: alice@test.example\n")
    sender, got, _ = outgoing(head, sender="alice@test.example",
                              map_from=["alice: Alice <a.smith@isp.example>"],
                              map_outgoing=["*: Mail Box <*@isp.example>",
                                            "bob: Bob <bob@corp.example>"])
    assert sender == "alice@isp.example"            # no display name for the envelope
    assert got.split("\r\n") == [
        "From: Alice <a.smith@isp.example>", "Sender: Mail Box <bob@isp.example>",
        "Reply-To: Mail Box <alice@isp.example>",
        "Mail-Followup-To: Mail Box <alice@isp.example>"]     # the first match wins


def test_only_local_addresses_are_rewritten_and_the_body_streams_unchanged():
    _, got, out = outgoing("From: alice@test.example, alice@far.example\n",
                           map_outgoing=["alice: alice@isp.example"])
    assert got == "From: alice@isp.example, alice@far.example"
    assert out.endswith(b"\r\n\r\nbody line\r\n")


def test_reply_to_is_rewritten_on_the_wire(tmp_path):
    port = free_port()
    conf = setup(tmp_path, route("isp", smarthost="127.0.0.1:%d" % port, tls="none",
                                 map_reply_to=["alice:alice@isp.example"],
                                 map_from=["alice: Alice Smith <alice@isp.example>"]))
    with Sink(port) as sink:
        send(conf, "x@example.org", sender="alice@test.example",
             body=b"From: Alice <alice@test.example>\nReply-To: alice@test.example\n"
                  b"Subject: r\n\nbody\n")
        masq("flush", "-C", conf)
        [(_, _, text)] = sink.wait(1)
    msg = email.message_from_bytes(text, policy=email.policy.default)
    assert str(msg["From"]) == "Alice <alice@isp.example>"
    assert str(msg["Reply-To"]) == "alice@isp.example"
