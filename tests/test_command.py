"""Delivery commands: argv building without a shell, unsafe values (FAULTS 4.3 #61), the
exit-code table (#53, #54, #55), time limits and commands that stop reading (#56)."""

import ast
import os
import shlex
import signal
import sys
import time

import pytest

from masq.base.loop import Loop
from masq.outbound import command
from masq.outbound.command import Refused, expand_argv, expand_path, run_command
from masq.outbound.local import Identity

PY = sys.executable
VALUES = {"u": "alice", "d": "test.example", "s": "a@example.org", "r": "alice@test.example"}


def run(argv, stdin=(b"hello\n",), time_limit=5.0, cap=4096, env=None, identity=None):
    loop, got = Loop(), []
    cmd = run_command(loop, argv, env if env is not None else {"PATH": "/usr/bin:/bin"},
                      iter(stdin), time_limit, cap, got.append, identity=identity)
    loop.run_until(lambda: got, time_limit + 10)
    loop.close()
    assert len(got) == 1
    return got[0], cmd


def alive(pid):
    """Return True if pid runs (a zombie waiting for its parent to reap it does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return not f.read().rsplit(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return False


def sh(script, **kw):
    return run(["/bin/sh", "-c", script], **kw)


# argv and paths


def test_argv_is_split_first_then_expanded_per_word():
    argv = expand_argv("/usr/bin/procmail -a 'x y' -d %u --from=%s %%u %r", VALUES)
    assert argv == ["/usr/bin/procmail", "-a", "x y", "-d", "alice", "--from=a@example.org",
                    "%u", "alice@test.example"]


def test_shell_metacharacters_stay_one_inert_argument(tmp_path):
    canary = tmp_path / "canary"
    hostile = {"u": "alice", "d": "test.example",
               "s": "$(touch %s)@x.example" % canary,
               "r": '"a b;touch %s;`touch %s`"@test.example' % (canary, canary)}
    argv = expand_argv(PY + " -c 'import sys; print(repr(sys.argv[1:]))' %s %r", hostile)
    outcome, cmd = run(argv)
    assert outcome.is_ok
    assert ast.literal_eval(bytes(cmd.output).decode()) == [hostile["s"], hostile["r"]]
    assert not canary.exists()


def test_unknown_placeholder_is_a_configuration_error():
    with pytest.raises(Refused) as info:
        expand_argv("/bin/mda %x", VALUES)
    assert (info.value.outcome.kind, info.value.outcome.status) == ("tempfail", "4.3.5")
    with pytest.raises(Refused):
        expand_argv("/bin/mda 'unbalanced", VALUES)
    with pytest.raises(Refused):
        expand_path("relative/%u", VALUES)


@pytest.mark.parametrize("user", ["../../etc", "a/b", "..", ".", "-oQ/tmp", "x\x00y", "",
                                  "a\nb"])
def test_fault_61_unsafe_user_refused_in_paths_and_argv(user):
    values = dict(VALUES, u=user)
    for build in (lambda: expand_path("/var/mail/%u", values),
                  lambda: expand_argv("/usr/bin/procmail -d %u", values),
                  lambda: expand_argv("/usr/bin/deliver --user=%u", values)):
        with pytest.raises(Refused) as info:
            build()
        assert (info.value.outcome.kind, info.value.outcome.status) == ("permfail", "5.1.3")


def test_fault_61_leading_dash_only_matters_at_the_start_of_an_argument():
    values = dict(VALUES, r="-oQ/tmp/x@test.example", s="-f@evil.example")
    with pytest.raises(Refused) as info:
        expand_argv("/usr/bin/mda %r", values)
    assert info.value.outcome.status == "5.1.3"
    with pytest.raises(Refused) as info:
        expand_argv("/usr/bin/mda -f %s", values)
    assert info.value.outcome.status == "5.1.7"
    assert expand_argv("/usr/bin/mda --to=%r", values) == ["/usr/bin/mda",
                                                           "--to=-oQ/tmp/x@test.example"]
    assert expand_path("/var/mail/%u", VALUES) == "/var/mail/alice"


def test_environment_is_built_not_inherited(monkeypatch):
    monkeypatch.setenv("MASQ_SECRET", "leak")
    me = Identity(1000, 1000, "alice", "/home/alice")
    env = command.environment("a@example.org", "alice@test.example", me)
    outcome, cmd = run(["/usr/bin/env"], env=env)
    assert outcome.is_ok
    lines = set(bytes(cmd.output).decode().splitlines())
    assert lines == {"PATH=/usr/bin:/bin", "SENDER=a@example.org",
                     "RECIPIENT=alice@test.example", "LOCAL=alice", "DOMAIN=test.example",
                     "USER=alice", "LOGNAME=alice", "HOME=/home/alice",
                     "RETURN_PATH=a@example.org", "SENDER_LOCAL=a", "SENDER_DOMAIN=example.org",
                     "LOCAL_PART=alice"}


# running


def test_message_reaches_stdin_and_exit_0_is_delivered(tmp_path):
    out = tmp_path / "out"
    outcome, _ = sh("cat > %s" % shlex.quote(str(out)), stdin=[b"one\n", b"", b"two\n"])
    assert (outcome.kind, outcome.status) == ("ok", "2.0.0")
    assert out.read_bytes() == b"one\ntwo\n"


def test_fault_53_mda_exit_75_defers():
    outcome, _ = sh("echo 'mailbox busy, try later'; exit 75")
    assert (outcome.kind, outcome.status) == ("tempfail", "4.3.0")
    assert "EX_TEMPFAIL" in outcome.text and "mailbox busy, try later" in outcome.text


def test_fault_54_mda_exit_67_bounces_user_unknown():
    outcome, _ = sh("echo 'no such user' >&2; exit 67")
    assert (outcome.kind, outcome.status) == ("permfail", "5.1.1")
    assert "no such user" in outcome.text


@pytest.mark.parametrize("code", [64, 65, 68, 69, 70, 76, 77, 78, 100])
def test_permanent_sysexits_bounce_5_3_0(code):
    outcome, _ = sh("exit %d" % code)
    assert (outcome.kind, outcome.status) == ("permfail", "5.3.0")
    assert "exited %d" % code in outcome.text


@pytest.mark.parametrize("code", [1, 2, 66, 71, 72, 73, 74, 111, 255])
def test_fault_55_other_exit_codes_defer_with_the_output(code):
    outcome, _ = sh("echo 'procmail: Error while writing to \"/var/mail/x\"'; exit %d" % code)
    assert (outcome.kind, outcome.status) == ("tempfail", "4.3.0")
    assert "exited %d" % code in outcome.text
    assert 'Error while writing to "/var/mail/x"' in outcome.text


def test_fault_55_killed_by_a_signal_defers():
    outcome, _ = sh("echo dying; kill -SEGV $$")
    assert (outcome.kind, outcome.status) == ("tempfail", "4.3.0")
    assert "SIGSEGV" in outcome.text and "dying" in outcome.text


def test_fault_56_hanging_command_killed_with_its_process_group(tmp_path):
    pids = tmp_path / "pids"
    outcome, cmd = sh("sleep 1000 & echo $! > %s; sleep 1000" % pids, time_limit=0.5)
    assert (outcome.kind, outcome.status) == ("tempfail", "4.3.0")
    assert "timed out after 0.5s" in outcome.text
    with pytest.raises(ChildProcessError):          # reaped: no zombie
        os.waitpid(cmd.proc.pid, os.WNOHANG)
    background = int(pids.read_text())
    deadline = time.monotonic() + 60        # a bound on a failing wait, not a timing
    while alive(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(background)                      # the whole group got SIGKILL


def test_fault_56_command_that_stops_reading_does_not_block_the_loop():
    loop, got, ticks = Loop(), [], []
    endless = (b"x" * 65536 for _ in range(10 ** 6))       # 64 GB if anyone read it all
    run_command(loop, ["/bin/sleep", "1000"], {}, endless, 0.6, 4096, got.append)

    def tick():
        ticks.append(time.monotonic())
        if not got:
            loop.call_later(0.05, tick)
    loop.call_later(0.05, tick)
    loop.run_until(lambda: got, 10)
    loop.close()
    assert got[0].kind == "tempfail" and "timed out" in got[0].text
    assert len(ticks) >= 5                                  # the loop kept turning


def test_command_that_exits_without_reading_is_fine():
    big = (b"y" * 65536 for _ in range(200))
    outcome, _ = run(["/bin/true"], stdin=big)
    assert outcome.is_ok


def test_output_flood_is_capped_and_drained_and_excerpt_is_one_line():
    outcome, cmd = sh("printf 'first\\033[31m red\\r\\nsecond\\n'; yes flood | head -c 5000000;"
                      " exit 1", cap=1000)
    assert (outcome.kind, outcome.status) == ("tempfail", "4.3.0")
    assert len(cmd.output) == 1000
    assert "\n" not in outcome.text and "\r" not in outcome.text and "\x1b" not in outcome.text
    assert "first [31m red second flood" in outcome.text
    assert len(outcome.text) < 300


def test_missing_program_is_a_configuration_deferral():
    outcome, _ = run(["/nonexistent/mda", "-d", "x"])
    assert (outcome.kind, outcome.status) == ("tempfail", "4.3.5")
    assert "cannot run command mda" in outcome.text


def test_command_runs_in_its_own_session():
    outcome, cmd = run([PY, "-c", "import os; print(os.getsid(0) == os.getpid())"])
    assert outcome.is_ok and bytes(cmd.output).strip() == b"True"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_command_runs_as_the_given_identity():
    nobody = Identity.of_uid(65534)
    outcome, cmd = run(["/usr/bin/id", "-u"], identity=nobody)
    assert outcome.is_ok and bytes(cmd.output).strip() == b"65534"
    assert Identity.current().switch_args() == {}


def test_kill_ends_a_command_early():
    loop, got = Loop(), []
    cmd = run_command(loop, ["/bin/sleep", "1000"], {}, iter([b""]), 30, 100, got.append)
    loop.call_later(0.1, cmd.kill)
    loop.run_until(lambda: got, 10)
    loop.close()
    assert got[0].kind == "tempfail" and "SIGKILL" in got[0].text


def test_exit_outcome_table_directly():
    status = lambda code: code << 8
    assert command.exit_outcome("x", status(0)).is_ok
    assert command.exit_outcome("x", status(75)).status == "4.3.0"
    assert command.exit_outcome("x", status(67)).status == "5.1.1"
    assert command.exit_outcome("x", signal.SIGTERM).kind == "tempfail"
    assert command.exit_outcome("x", 0, b"", timed_out=3).text == "command x timed out after 3s"


@pytest.mark.parametrize("text, shell", [
    ("cat >> /var/log/mail.txt", True), ("a | b", True), ('echo "$HOME"', True),
    ("(echo; cat) > f", True), ("/bin/sh -c 'cat >> x' sh %s", False),
    ("/usr/bin/procmail -d %u", False), ("echo '$HOME'", False), ('echo "a>b"', False)])
def test_alias_pipes_with_shell_syntax_go_to_sh(text, shell):
    argv = command.shell_argv(text)
    assert argv == (["/bin/sh", "-c", text] if shell else None)
