"""The local delivery agent driven by a real loop: maildir, mbox, procmail and maildrop,
aliases to users, pipes, files, includes and remote addresses, and every FAULTS 4.3 row
that reaches it (#49-#61) as the scheduler would meet it."""

import mailbox as pymailbox
import os
import shutil
import tempfile

import pytest

from masq.base.loop import Loop
from masq.outbound.job import Job
from masq.outbound.local import LocalAgent, LocalSettings, combine
from masq.outbound.outcome import Outcome

from helpers import absent_users

absent_users("mqalice", "mqbob", "mqcarol", "mqdave", "mqerin")

ROOT = os.geteuid() == 0
BODY = b"From: a@example.org\r\nSubject: local\r\n\r\nhello\r\nFrom the past\r\n"
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (setuid deliveries)")


@pytest.fixture
def site():
    """A folder every user may enter: as root, deliveries run as the users (nobody)."""
    base = tempfile.mkdtemp(dir="/var/tmp")
    os.chmod(base, 0o755)
    public = os.path.join(base, "public")
    os.mkdir(public)
    os.chmod(public, 0o1777)
    with open(os.path.join(base, "procmailrc"), "w") as rc:
        rc.write("DEFAULT=%s/procmail/\nMAILDIR=%s\n" % (base, base))
    with open(os.path.join(base, "maildroprc"), "w") as rc:
        rc.write('to "%s/maildrop/"\n' % base)
    os.chmod(os.path.join(base, "maildroprc"), 0o600)
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(base, "maildrop", sub))
    yield base
    shutil.rmtree(base)


def settings(base, aliases="", **kw):
    path = os.path.join(base, "aliases")
    with open(path, "w") as out:
        out.write(aliases)
    users = {"mqbob": "mbox:%s/mail/mqbob.mbox" % base,
             "mqcarol": "mda:/usr/bin/procmail -m %s/procmailrc" % base,
             "mqdave": "mda:/usr/bin/maildrop %s/maildroprc" % base}
    users.update(kw.pop("users", {}))
    kw.setdefault("local_users", ["mqalice", "mqbob", "mqcarol", "mqdave", "mqerin"])
    kw.setdefault("lock_timeout", 0.3)
    return LocalSettings("test.example", mailbox="maildir:%s/mail/%%u" % base,
                         user_mailbox=users, alias_file=path, **kw)


def job(recipients, body=BODY, sender="a@example.org"):
    pieces = [body[i:i + 10] for i in range(0, len(body), 10)]
    return Job("M1", sender, recipients, lambda: iter(pieces), size=len(body))


def deliver(conf, job_, timeout=15.0):
    loop, got = Loop(), []
    LocalAgent(loop, conf).deliver(job_, got.append)
    loop.run_until(lambda: got, timeout)
    loop.close()
    assert len(got) == 1, "the agent never answered"
    assert len(got[0]) == len(job_.recipients)
    return got[0]


def kinds(outcomes):
    return [(o.kind, o.status) for o in outcomes]


def maildir(path):
    if not os.path.isdir(os.path.join(path, "new")):
        return []
    return [bytes(m) for m in pymailbox.Maildir(path, factory=None)]


def mbox(path):
    return [bytes(m) for m in pymailbox.mbox(path)] if os.path.exists(path) else []


# the methods


@pytest.mark.skipif(not (shutil.which("procmail") and shutil.which("maildrop")),
                    reason="procmail and maildrop are needed")
def test_maildir_mbox_procmail_and_maildrop_per_user(site):
    outcomes = deliver(settings(site), job(["mqalice@test.example", "mqbob@test.example",
                                            "mqcarol@test.example", "mqdave@test.example"]))
    assert [o.kind for o in outcomes] == ["ok"] * 4, outcomes
    [mqalice] = maildir(os.path.join(site, "mail", "mqalice"))
    assert mqalice.startswith(b"Return-Path: <a@example.org>\nDelivered-To: mqalice@test.example\n")
    assert mqalice.endswith(b"hello\nFrom the past\n")
    [mqbob] = mbox(os.path.join(site, "mail", "mqbob.mbox"))
    assert b"Delivered-To: mqbob@test.example" in mqbob and b"\n>From the past" in mqbob
    [mqcarol] = maildir(os.path.join(site, "procmail"))
    assert b"Delivered-To: mqcarol@test.example" in mqcarol and b"hello" in mqcarol
    [mqdave] = maildir(os.path.join(site, "maildrop"))
    assert b"Delivered-To: mqdave@test.example" in mqdave and b"\r" not in mqdave


def test_unknown_user_bounces_5_1_1_and_outcomes_keep_order(site):
    outcomes = deliver(settings(site), job(["nosuchuser@test.example", "mqalice@test.example"]))
    assert kinds(outcomes) == [("permfail", "5.1.1"), ("ok", "2.0.0")]
    assert "nosuchuser" in outcomes[0].text


def test_postmaster_reaches_root_by_default(site):
    conf = settings(site, users={"root": "mbox:%s/mail/root.mbox" % site})
    [outcome] = deliver(conf, job(["PostMaster@test.example"]))
    assert outcome.is_ok, outcome
    [text] = mbox(os.path.join(site, "mail", "root.mbox"))
    assert b"Delivered-To: PostMaster@test.example" in text


@needs_root
def test_real_user_mailbox_is_created_owned_by_the_user(site):
    conf = settings(site, users={"nobody": "mbox:%s/spool/%%u" % site})
    [outcome] = deliver(conf, job(["nobody@test.example"]))
    assert outcome.is_ok, outcome
    path = os.path.join(site, "spool", "nobody")
    assert (os.stat(path).st_uid, os.stat(path).st_mode & 0o777) == (65534, 0o600)
    assert len(mbox(path)) == 1


def test_in_process_delivery_does_not_wait_for_a_lock(site):
    conf = settings(site, in_child=False, lock_timeout=30)
    os.makedirs(os.path.join(site, "mail"))
    with open(os.path.join(site, "mail", "mqbob.mbox.lock"), "w"):
        pass
    [outcome] = deliver(conf, job(["mqbob@test.example"]))
    assert kinds([outcome]) == [("tempfail", "4.2.1")]
    assert "locked for 0s" in outcome.text                 # one try, not lock_timeout's 30 s
    assert deliver(conf, job(["mqalice@test.example"]))[0].is_ok


# aliases


ALIASES = """\
team: mqalice, mqbob
everyone: :include:{site}/members
outside: friend@remote.example, mqalice
logger: "|/bin/sh -c 'cat >> {site}/public/piped'"
whoami: "|/bin/sh -c 'id -u > {site}/public/who'"
archive: {site}/public/archive.mbox
mixed: mqalice, nosuchuser
mixedtemp: mqalice, "|/bin/sh -c 'exit 75'"
"""


def alias_settings(site, **kw):
    with open(os.path.join(site, "members"), "w") as out:
        out.write("# the list\nmqerin, mqalice\n")
    return settings(site, ALIASES.format(site=site), **kw)


def test_alias_to_users_and_include(site):
    conf = alias_settings(site)
    assert kinds(deliver(conf, job(["team@test.example", "everyone@test.example"]))) == \
        [("ok", "2.0.0")] * 2
    assert len(maildir(os.path.join(site, "mail", "mqalice"))) == 1   # one copy for two paths
    assert len(mbox(os.path.join(site, "mail", "mqbob.mbox"))) == 1
    assert len(maildir(os.path.join(site, "mail", "mqerin"))) == 1


def test_pipe_and_file_targets_from_a_root_owned_aliases_file_run_as_nobody(site):
    conf = alias_settings(site)
    outcomes = deliver(conf, job(["logger@test.example", "archive@test.example",
                                  "whoami@test.example"]))
    assert [o.kind for o in outcomes] == ["ok"] * 3, outcomes
    with open(os.path.join(site, "public", "piped"), "rb") as f:
        piped = f.read()
    assert piped.startswith(b"Return-Path: <a@example.org>\nDelivered-To: logger@test")
    [archived] = mbox(os.path.join(site, "public", "archive.mbox"))
    assert b"Delivered-To: archive@test.example" in archived
    if ROOT:
        with open(os.path.join(site, "public", "who")) as f:
            assert f.read().strip() == "65534"
        assert os.stat(os.path.join(site, "public", "archive.mbox")).st_uid == 65534


def test_remote_targets_are_forwarded_with_a_delivered_to_line(site):
    calls = []

    def forward(copy, addresses):
        calls.append((copy.sender, addresses, b"".join(copy.open_body())))
        return Outcome.ok("queued")

    [outcome] = deliver(alias_settings(site, forward=forward), job(["outside@test.example"]))
    assert outcome.is_ok
    [(sender, addresses, body)] = calls
    assert (sender, addresses) == ("a@example.org", ["friend@remote.example"])
    assert body == b"Delivered-To: outside@test.example\r\n" + BODY
    assert len(maildir(os.path.join(site, "mail", "mqalice"))) == 1


def test_remote_targets_without_a_forwarder_defer(site):
    [outcome] = deliver(alias_settings(site), job(["outside@test.example"]))
    assert kinds([outcome]) == [("tempfail", "4.3.5")]


def test_several_targets_rule_ok_perm_and_temp(site):
    conf = alias_settings(site)
    mixed, temp = deliver(conf, job(["mixed@test.example", "mixedtemp@test.example"]))
    assert (mixed.kind, mixed.status) == ("permfail", "5.1.1")
    assert "user nosuchuser" in mixed.text and "(1 of 2 targets delivered)" in mixed.text
    assert (temp.kind, temp.status) == ("tempfail", "4.3.0")
    assert "EX_TEMPFAIL" in temp.text


def test_combine_rule_table():
    ok, temp, perm = Outcome.ok(), Outcome.temp("4.3.0", "t"), Outcome.perm("5.1.1", "p")
    assert combine([]).is_ok
    assert combine([("a", perm)]) is perm
    assert combine([("a", ok), ("b", ok)]).is_ok
    assert combine([("a", ok), ("b", temp), ("c", perm)]).kind == "tempfail"
    assert combine([("a", perm), ("b", temp)]).kind == "tempfail"
    assert combine([("a", perm), ("b", perm)]).kind == "permfail"
    assert combine([("a", ok), ("b", perm)]).text == "b: p (1 of 2 targets delivered)"


def test_fault_49_alias_loop_bounces_5_4_6(site):
    conf = settings(site, "a: b\nb: a\nself: self\n")
    outcomes = deliver(conf, job(["a@test.example", "self@test.example", "mqalice@test.example"]))
    assert kinds(outcomes) == [("permfail", "5.4.6"), ("permfail", "5.4.6"), ("ok", "2.0.0")]
    assert "mail forwarding loop" in outcomes[0].text


def test_fault_49_our_delivered_to_already_in_the_message_bounces_5_4_6(site):
    looped = b"Delivered-To: mqalice@test.example\r\n" + BODY
    outcomes = deliver(settings(site), job(["MqAlice@test.example", "mqbob@test.example"],
                                           body=looped))
    assert kinds(outcomes) == [("permfail", "5.4.6"), ("ok", "2.0.0")]
    assert maildir(os.path.join(site, "mail", "mqalice")) == []


def test_fault_50_alias_bomb_bounces_quickly_with_a_clear_reason(site):
    lines = ["bomb: " + ", ".join("b%d" % i for i in range(1000))]
    lines += ["b%d: " % i + ", ".join("c%d" % j for j in range(1000)) for i in range(1000)]
    lines += ["c%d: " % i + ", ".join("d%d" % j for j in range(1000)) for i in range(1000)]
    lines += ["n%d: n%d" % (i, i + 1) for i in range(1001)]
    conf = settings(site, "\n".join(lines) + "\n")
    bomb, chain = deliver(conf, job(["bomb@test.example", "n0@test.example"]), timeout=30)
    assert (bomb.kind, bomb.status) == ("permfail", "5.3.5")
    assert "alias expansion too large" in bomb.text
    assert (chain.kind, chain.status) == ("permfail", "5.4.6")
    assert "nested deeper than 20" in chain.text
    assert not os.path.exists(os.path.join(site, "mail"))       # nobody got anything


def test_fault_51_broken_aliases_file_defers_then_recovers(site):
    conf = settings(site, 'team: mqalice, "mqbob\n')
    outcomes = deliver(conf, job(["team@test.example", "mqalice@test.example"]))
    assert kinds(outcomes) == [("tempfail", "4.3.0")] * 2
    assert "aliases unusable" in outcomes[0].text and "unterminated quote" in outcomes[0].text
    with open(conf.alias_file, "w") as out:
        out.write("team: mqalice, mqbob\n")
    assert kinds(deliver(conf, job(["team@test.example"]))) == [("ok", "2.0.0")]


def test_fault_51_unreadable_aliases_file_defers(site):
    conf = settings(site)
    os.unlink(conf.alias_file)
    os.mkdir(conf.alias_file)                 # root reads anything: a directory it cannot
    [outcome] = deliver(conf, job(["mqalice@test.example"]))
    assert kinds([outcome]) == [("tempfail", "4.3.0")]
    os.rmdir(conf.alias_file)                 # missing: no aliases, delivery goes on
    assert deliver(conf, job(["mqalice@test.example"]))[0].is_ok


def test_fault_52_bad_mailbox_setting_defers_4_3_5_never_bounces(site):
    conf = settings(site, users={"mqerin": "mbox:relative/%u", "mqdave": "pop3:somewhere",
                                 "mqcarol": "mda:/usr/bin/procmail -d %q"})
    outcomes = deliver(conf, job(["mqerin@test.example", "mqdave@test.example",
                                  "mqcarol@test.example", "mqalice@test.example"]))
    assert kinds(outcomes) == [("tempfail", "4.3.5")] * 3 + [("ok", "2.0.0")]
    assert "not absolute" in outcomes[0].text and "bad mailbox setting" in outcomes[1].text
    assert "bad placeholder %q" in outcomes[2].text


# MDA exits and hangs


def mda_settings(site, script, **kw):
    return settings(site, users={"mqerin": "mda:/bin/sh -c '%s'" % script}, **kw)


def test_fault_53_mda_exit_75_defers(site):
    os.rmdir(os.path.join(site, "maildrop", "new"))    # maildrop cannot deliver: exit 75
    [outcome] = deliver(settings(site), job(["mqdave@test.example"]))
    assert kinds([outcome]) == [("tempfail", "4.3.0")]
    assert "EX_TEMPFAIL" in outcome.text
    [outcome] = deliver(mda_settings(site, "cat >/dev/null; exit 75"), job(["mqerin@test.example"]))
    assert kinds([outcome]) == [("tempfail", "4.3.0")]


def test_fault_54_mda_exit_67_bounces_5_1_1(site):
    with open(os.path.join(site, "procmailrc"), "w") as rc:
        rc.write("EXITCODE=67\n:0\n/dev/null\n")
    [outcome] = deliver(settings(site), job(["mqcarol@test.example"]))
    assert kinds([outcome]) == [("permfail", "5.1.1")]


@pytest.mark.parametrize("script", ["exit 1", "exit 2", "exit 255", "kill -KILL $$"])
def test_fault_55_mda_unknown_exit_or_signal_defers_with_output(site, script):
    conf = mda_settings(site, "echo mda says why; " + script)
    [outcome] = deliver(conf, job(["mqerin@test.example"]))
    assert kinds([outcome]) == [("tempfail", "4.3.0")]
    assert "mda says why" in outcome.text


def test_fault_56_hanging_mda_is_killed_and_deferred(site):
    conf = mda_settings(site, "sleep 1000", command_timeout=0.5)
    outcomes = deliver(conf, job(["mqerin@test.example", "mqalice@test.example"]))
    assert kinds(outcomes) == [("tempfail", "4.3.0"), ("ok", "2.0.0")]
    assert "timed out after 0.5s" in outcomes[0].text


# unsafe mailboxes


def test_fault_58_mbox_write_failure_leaves_the_mailbox_as_it_was(site):
    conf = settings(site)
    assert deliver(conf, job(["mqbob@test.example"]))[0].is_ok
    path = os.path.join(site, "mail", "mqbob.mbox")
    with open(path, "rb") as f:
        before = f.read()

    def broken():
        yield b"Subject: half\r\n\r\n" + b"x" * 100000
        raise OSError(5, "Input/output error")

    failing = Job("M2", "a@example.org", ["mqbob@test.example"], broken)
    [outcome] = deliver(conf, failing)              # the read fails half-way through
    assert kinds([outcome]) == [("tempfail", "4.3.0")]
    with open(path, "rb") as f:
        assert f.read() == before


def test_fault_59_symlinked_hardlinked_or_foreign_mbox_is_refused(site):
    conf = settings(site)
    os.makedirs(os.path.join(site, "mail"))
    victim = os.path.join(site, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    path = os.path.join(site, "mail", "mqbob.mbox")
    os.symlink(victim, path)
    assert kinds(deliver(conf, job(["mqbob@test.example"]))) == [("tempfail", "4.2.0")]
    os.unlink(path)
    os.link(victim, path)
    assert kinds(deliver(conf, job(["mqbob@test.example"]))) == [("tempfail", "4.2.0")]
    with open(victim) as f:
        assert f.read() == "precious\n"
    if ROOT:
        os.unlink(path)
        with open(path, "w"):
            pass
        os.chown(path, 65534, 65534)
        [outcome] = deliver(conf, job(["mqbob@test.example"]))
        assert kinds([outcome]) == [("tempfail", "4.2.0")]
        assert "owned by uid 65534" in outcome.text


def test_fault_59_mbox_lock_held_defers_4_2_1(site):
    conf = settings(site)
    os.makedirs(os.path.join(site, "mail"))
    with open(os.path.join(site, "mail", "mqbob.mbox.lock"), "w"):
        pass
    [outcome] = deliver(conf, job(["mqbob@test.example"]))
    assert kinds([outcome]) == [("tempfail", "4.2.1")]


def test_fault_60_maildir_delivery_leaves_tmp_empty(site):
    assert deliver(settings(site), job(["mqalice@test.example"]))[0].is_ok
    assert os.listdir(os.path.join(site, "mail", "mqalice", "tmp")) == []


def test_fault_61_path_and_option_injection_in_recipients_refused(site):
    conf = settings(site, local_users=["mqalice", "mqerin", "-oQ"],
                    users={"mqerin": "mda:/bin/echo %u"})
    outcomes = deliver(conf, job(['"../../etc/cron.d/x"@test.example', "-oQ@test.example",
                                  '".."@test.example', '"a/b"@test.example']))
    assert kinds(outcomes) == [("permfail", "5.1.3")] * 4
    assert not os.path.exists(os.path.join(site, "etc"))
    assert not os.path.exists(os.path.join(site, "mail"))


def test_fault_61_shell_metacharacters_in_sender_and_recipient_stay_inert(site):
    canary = "/tmp/mc%d" % os.getpid()         # short: a local part holds 64 octets at most
    out = os.path.join(site, "public", "out")
    # the script as the aliases file holds it: inside "...", with \" and \\ escaped, and
    # %% for a literal percent sign (placeholders are expanded in alias commands too)
    script = r'printf \"%%s|%%s|%%s\\n\" \"$SENDER\" \"$RECIPIENT\" \"$1\" >> ' + out
    local = "x;touch %s`touch %s`$(touch %s)" % (canary, canary, canary)
    conf = settings(site, '"%s": "|/bin/sh -c \'%s\' sh %%s"\n' % (local, script))
    sender = "$(touch %s)`touch %s`;touch %s@evil.example" % (canary, canary, canary)
    rcpt = '"%s"@test.example' % local
    try:
        [outcome] = deliver(conf, job([rcpt], sender=sender))
        assert outcome.is_ok, outcome
        assert not os.path.exists(canary)
    finally:
        if os.path.exists(canary):
            os.unlink(canary)
    with open(out) as f:
        assert f.read() == "%s|%s|%s\n" % (sender, rcpt, sender)


def test_message_that_cannot_be_read_defers_every_recipient(site):
    def unreadable():
        raise OSError(5, "Input/output error")

    broken = Job("M3", "a@example.org", ["mqalice@test.example", "mqbob@test.example"], unreadable)
    assert kinds(deliver(settings(site), broken)) == [("tempfail", "4.3.0")] * 2
