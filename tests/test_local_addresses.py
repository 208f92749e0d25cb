"""Which addresses are local, end to end (issue 14 points 2 and 3): local_domain globs (the
`*.sub.example` mail that silently went to the smarthost), local_addresses,
not_local_addresses, route patterns with sets, glob aliases and caseless_matching. Mail is
read back from the mailboxes with Python's mailbox module, or from the smarthost (aiosmtpd)."""

import mailbox
import os

import pytest

from helpers import absent_users, free_port, masq, write_config
from sinks import Sink

USERS = absent_users("mqlocann", "mqlocbob", "mqloccat")
ANN, BOB, CAT = USERS


@pytest.fixture
def site(tmp_path):
    """A spool, mboxes for three local users (not system accounts) and a smarthost route."""
    os.chmod(tmp_path, 0o755)
    (tmp_path / "mail").mkdir()
    os.chmod(tmp_path / "mail", 0o1777)
    (tmp_path / "aliases").write_text("team: %s\nTeam2: %s\n" % (ANN, CAT))
    port = free_port()

    def configure(extra="", routes=None):
        text = ("".join("\tlist local_users '%s'\n" % u for u in USERS) +
                "\toption mailbox 'mbox:%s/mail/%%u'\n"
                "\toption alias_file '%s/aliases'\n" % (tmp_path, tmp_path) + extra)
        if routes is None:
            routes = ("config route 'smarthost'\n\toption smarthost '127.0.0.1:%d'\n"
                      "\toption tls 'none'\n" % port)
        return write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                            extra=text, routes=routes)
    return {"base": tmp_path, "configure": configure, "port": port}


def mbox(site, user):
    path = site["base"] / "mail" / user
    return list(mailbox.mbox(str(path))) if path.exists() else []


def send(conf, *rcpts, sender="alice@test.example"):
    """Submit a message with sendmail and run the queue; return the sendmail result."""
    text = "From: %s\nSubject: to %s\n\nhello\n" % (sender, ", ".join(rcpts))
    done = masq("-C", conf, "-f", sender, *rcpts, input=text.encode())
    assert done.returncode == 0, done.stderr
    ran = masq("-C", conf, "-q")
    assert ran.returncode == 0, ran.stderr
    return done


def smtp_stdio(conf, *lines):
    script = "\r\n".join(lines).encode() + b"\r\n"
    done = masq("-C", conf, "-bs", input=script)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def rcpt_reply(conf, rcpt):
    out = smtp_stdio(conf, "HELO me", "MAIL FROM:<alice@test.example>",
                     "RCPT TO:<%s>" % rcpt, "QUIT")
    return out.split("\r\n")[3]


def test_glob_local_domain_is_delivered_here_not_to_the_smarthost(site):
    """The issue's case: `*.sub.example` was matched literally and the mail left."""
    conf = site["configure"]("\tlist local_domain '*.sub.example'\n")
    with Sink(site["port"]) as smarthost:
        send(conf, "%s@a.sub.example" % ANN, "%s@x.y.SUB.example" % BOB,
             "%s@sub.example" % CAT)
        got = smarthost.wait(1)
    assert [m["Subject"] for m in mbox(site, ANN)] == ["to %s@a.sub.example, "
                                                      "%s@x.y.SUB.example, %s@sub.example"
                                                      % (ANN, BOB, CAT)]
    assert len(mbox(site, BOB)) == 1
    assert mbox(site, CAT) == []                # sub.example itself is not *.sub.example
    assert [rcpts for _, rcpts, _ in got] == [["%s@sub.example" % CAT]]


def test_unknown_pattern_syntax_is_a_config_error_with_file_and_line(site):
    conf = site["configure"]("\tlist local_domain '{a,b}.sub.example'\n")
    done = masq("check-config", "-C", conf, text=True)
    assert done.returncode == 78
    line = open(conf).read().split("\n").index("\tlist local_domain '{a,b}.sub.example'") + 1
    assert "%s:%d:" % (conf, line) in done.stderr
    assert "not glob syntax" in done.stderr
    sent = masq("-C", conf, "-f", "alice@test.example", "%s@a.sub.example" % ANN,
                input=b"Subject: x\n\nhi\n")
    assert sent.returncode == 78 and mbox(site, ANN) == []     # refused, never a literal


def test_local_addresses_are_delivered_here(site):
    conf = site["configure"]("\tlist local_addresses '%s@isp.example'\n" % BOB)
    with Sink(site["port"]) as smarthost:
        send(conf, "%s@isp.example" % BOB, "%s@isp.example" % ANN)
        got = smarthost.wait(1)
    assert len(mbox(site, BOB)) == 1
    assert mbox(site, ANN) == []
    assert [rcpts for _, rcpts, _ in got] == [["%s@isp.example" % ANN]]
    assert rcpt_reply(conf, "%s@isp.example" % BOB).startswith("250")


def test_not_local_addresses_leave_by_the_route(site):
    conf = site["configure"]("\tlist not_local_addresses '%s@test.example'\n" % ANN)
    with Sink(site["port"]) as smarthost:
        send(conf, "%s@test.example" % ANN, "%s@test.example" % BOB)
        got = smarthost.wait(1)
    assert mbox(site, ANN) == []
    assert len(mbox(site, BOB)) == 1
    assert [rcpts for _, rcpts, _ in got] == [["%s@test.example" % ANN]]


def test_route_patterns_take_sets(site):
    """`[ab]*` was matched literally too: the route took nothing and mail stayed queued."""
    other = free_port()
    routes = ("config route 'lan'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
              "\tlist allowed_recipient '*@[ab]?.example'\n"
              "config route 'rest'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
              % (other, site["port"]))
    conf = site["configure"](routes=routes)
    with Sink(other) as lan, Sink(site["port"]) as rest:
        send(conf, "x@a1.example", "y@c1.example")
        lan_got, rest_got = lan.wait(1), rest.wait(1)
    assert [rcpts for _, rcpts, _ in lan_got] == [["x@a1.example"]]
    assert [rcpts for _, rcpts, _ in rest_got] == [["y@c1.example"]]


def test_glob_aliases(site):
    """masqmail's globalias_file: whole addresses, first matching line wins, consulted
    before the plain aliases; an address only a glob alias knows is accepted at RCPT."""
    (site["base"] / "globaliases").write_text(
        "# catch-all for a virtual domain, and postmaster anywhere\n"
        "team@virt.example: %s\n"
        "*@virt.example: %s\n"
        "postmaster@*: %s\n" % (CAT, BOB, ANN))
    conf = site["configure"]("\tlist local_domain 'virt.example'\n"
                             "\toption globalias_file '%s/globaliases'\n" % site["base"])
    assert rcpt_reply(conf, "nobody-such@virt.example").startswith("250")
    assert rcpt_reply(conf, "nobody-such@test.example").startswith("550")
    send(conf, "anyone@virt.example")
    assert [m["Subject"] for m in mbox(site, BOB)] == ["to anyone@virt.example"]
    send(conf, "team@virt.example")             # the glob line beats the plain alias
    assert [m["Subject"] for m in mbox(site, CAT)] == ["to team@virt.example"]
    send(conf, "team@test.example")             # no glob line: the plain alias
    assert [m["Subject"] for m in mbox(site, ANN)] == ["to team@test.example"]
    send(conf, "PostMaster@test.example")       # postmaster in any case
    assert [m["Subject"] for m in mbox(site, ANN)][-1] == "to PostMaster@test.example"


def test_bad_glob_alias_pattern_defers_and_check_config_names_the_line(site):
    (site["base"] / "globaliases").write_text("ok@virt.example: %s\n"
                                              "bad@{a,b}.example: %s\n" % (ANN, ANN))
    conf = site["configure"]("\tlist local_domain 'virt.example'\n"
                             "\toption globalias_file '%s/globaliases'\n" % site["base"])
    out = smtp_stdio(conf, "HELO me", "MAIL FROM:<alice@test.example>",
                     "RCPT TO:<ok@virt.example>", "QUIT")
    assert "450 4.3.0" in out                    # never bounced while the file is broken
    done = masq("-C", conf, "-bi", text=True)
    assert done.returncode != 0 and "globaliases:2:" in done.stderr


@pytest.mark.parametrize("caseless", [None, "1", "0"])
def test_caseless_matching(site, caseless):
    """masq's default is caseless; `0` (masqmail's default) makes local parts exact."""
    extra = "\toption caseless_matching '%s'\n" % caseless if caseless else ""
    conf = site["configure"](extra)
    exact = caseless == "0"
    upper = ANN.capitalize()
    assert rcpt_reply(conf, "%s@test.example" % upper).startswith("550" if exact else "250")
    assert rcpt_reply(conf, "TEAM@test.example").startswith("550" if exact else "250")
    assert rcpt_reply(conf, "Team2@test.example").startswith("250")
    assert rcpt_reply(conf, "%s@test.example" % ANN).startswith("250")
    send(conf, "%s@test.example" % upper, "Team2@test.example")
    if exact:
        assert mbox(site, ANN) == []            # Mqlocann is nobody: bounced
        assert len(mbox(site, CAT)) == 1
    else:
        assert len(mbox(site, ANN)) == 1 and len(mbox(site, CAT)) == 1
