"""Run a delivery command (MDA, `|command` alias, pipe route) in the loop, message on stdin.

Owns: turning a command template into argv (shlex split first, then `%u %d %s %r %%`
expanded inside single arguments, so no value can add, split or quote an argument), the
refusal of values that would become a dangerous path component or an option, the
command's environment and the exit-code table that turns how it ended into an Outcome.
The child itself is a masq.base.child.Child: its own session and process group, the
message fed to stdin through a non-blocking pipe, stdout and stderr collected up to a cap
and drained past it, SIGKILL to the whole group at the time limit. Also `run_in_child`: a
Python function (a mailbox write) run in a forked child that first becomes the mailbox
owner, its Outcome read back as one line on a pipe.

Does not decide which command runs or as whom (masq.outbound.local does). A command is what
its template says, run by execve; the one exception is a `|command` alias with shell syntax
(`shell_argv`: the aliases file is the administrator's, as with sendmail and Postfix's
local(8)), which `/bin/sh -c` runs verbatim, with no placeholder expanded into it.

Hostile input: sender and recipient (any RFC 5321 local part: quotes, spaces, `;`, `$()`,
backticks are all legal) and everything the command prints. Output is bounded in memory
and reaches the Outcome text as one sanitised line of at most 200 characters.

Fails: never raises after start; `done(Outcome)` is called exactly once, from the loop.
The exit-code table (docs/LOCAL.md): 0 ok; 75 temp 4.3.0; 67 perm 5.1.1; 64, 65, 68, 69,
70, 76, 77, 78 and 100 (qmail's hard error) perm 5.3.0; the time limit temp 4.3.0; any
other code or a signal temp 4.3.0, so that the queue retries until the queue lifetime and
nothing is lost to a crashing script.
"""

import os
import re
import shlex
import signal

from masq.base.child import STDOUT, Child
from masq.outbound.outcome import OK, PERMFAIL, TEMPFAIL, Outcome

PATH = "/usr/bin:/bin"
EXCERPT = 200
_PERMANENT = {
    64: "command line usage error (EX_USAGE)",
    65: "data format error (EX_DATAERR)",
    68: "host name unknown (EX_NOHOST)",
    69: "service unavailable (EX_UNAVAILABLE)",
    70: "internal software error (EX_SOFTWARE)",
    76: "remote protocol error (EX_PROTOCOL)",
    77: "permission denied (EX_NOPERM)",
    78: "configuration error (EX_CONFIG)",
    100: "permanent error (exit 100)",
}
_TEMPORARY = {
    66: "cannot open input (EX_NOINPUT)",
    71: "system error (EX_OSERR)",
    72: "critical OS file missing (EX_OSFILE)",
    73: "cannot create output file (EX_CANTCREAT)",
    74: "input/output error (EX_IOERR)",
    75: "temporary failure (EX_TEMPFAIL)",
}
_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PLACEHOLDER = re.compile("%(.?)")


class Refused(Exception):
    """A command or path cannot be built safely; `outcome` says what to report."""

    def __init__(self, outcome):
        super().__init__(outcome.text)
        self.outcome = outcome


def become(identity):
    """Turn this (forked child) process into identity (uid, gid, groups()) for good."""
    if identity is None or (os.geteuid() == identity.uid and os.getegid() == identity.gid):
        return
    os.setgroups(identity.groups())
    os.setgid(identity.gid)
    os.setuid(identity.uid)


# building argv and paths


def unsafe_component(value):
    """Return why value may not be used as a file name or argument, or None if it may."""
    if not value:
        return "empty"
    if "\0" in value or _UNSAFE_TEXT.search(value):
        return "control character"
    if "/" in value:
        return "'/'"
    if value in (".", ".."):
        return "'%s'" % value
    if value.startswith("-"):
        return "leading '-'"
    return None


def _value(letter, values, at_start):
    """Return the text a placeholder stands for; raise Refused if it is unsafe there."""
    if letter == "%":
        return "%"
    if letter not in ("u", "d", "s", "r") or letter not in values:
        raise Refused(Outcome.temp("4.3.5", "bad placeholder %%%s in command or path" % letter))
    value = values[letter]
    if letter in ("u", "d"):
        why = unsafe_component(value)
    else:
        why = "control character" if _UNSAFE_TEXT.search(value) else None
        if why is None and at_start and value.startswith("-"):
            why = "leading '-'"
    if why:
        status, what = ("5.1.7", "sender") if letter == "s" else ("5.1.3", "recipient")
        raise Refused(Outcome.perm(status, "%s %s unsafe in a command or path (%s)"
                                   % (what, _show(value), why)))
    return value


def expand(template, values):
    """Return template with placeholders replaced (values: letter -> text); may raise Refused."""
    out, pos = [], 0
    for match in _PLACEHOLDER.finditer(template):
        out.append(template[pos:match.start()])
        out.append(_value(match.group(1), values, at_start=match.start() == 0))
        pos = match.end()
    out.append(template[pos:])
    return "".join(out)


def expand_argv(command, values):
    """Return the argv of a command template: shlex-split, then each word expanded."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise Refused(Outcome.temp("4.3.5", "bad command %s: %s" % (_show(command), exc)))
    if not words:
        raise Refused(Outcome.temp("4.3.5", "empty command"))
    return [expand(word, values) for word in words]


SHELL_SYNTAX = frozenset("|&;<>()$`*?[]{}~\n")


def shell_argv(command):
    """Return the argv of an alias pipe: `/bin/sh -c COMMAND` when it has shell syntax
    outside single quotes (redirection, pipes, variables ...), else None (then it is split
    and expanded by expand_argv, so `/bin/sh -c '...' sh %s` keeps its arguments).

    The command goes to the shell verbatim: placeholders are not expanded in it, so
    nothing of the message reaches the command line; the values are in the environment."""
    return ["/bin/sh", "-c", command] if _has_shell_syntax(command) else None


def _has_shell_syntax(command):
    quote, escaped = None, False
    for char in command:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = None if char == "'" else quote
        elif char == "\\":
            escaped = True
        elif char == quote:
            quote = None
        elif quote is None and char in "'\"":
            quote = char
        elif char in SHELL_SYNTAX and (quote is None or char in "$`"):
            return True
    return False


def expand_path(template, values):
    """Return a mailbox path from its template; it must come out absolute."""
    path = expand(template, values)
    if not path.startswith("/"):
        raise Refused(Outcome.temp("4.3.5", "mailbox path %s is not absolute" % _show(path)))
    return path


def environment(sender, recipient, identity, extra=None, message_id=None, qualify_domain=None):
    """Return the environment of a delivery command (nothing inherited from masq).

    masq's names (SENDER, RECIPIENT, LOCAL, DOMAIN; USER, LOGNAME and HOME of the account
    the command runs as) and masqmail's (RETURN_PATH, SENDER_LOCAL, SENDER_DOMAIN,
    LOCAL_PART, MESSAGE_ID = the queue ID, QUALIFY_DOMAIN = the host name): docs/LOCAL.md."""
    local, _, domain = recipient.rpartition("@")
    sender_local, _, sender_domain = sender.rpartition("@")
    local = local if domain else recipient
    env = {"PATH": PATH, "SENDER": sender, "RECIPIENT": recipient,
           "LOCAL": local, "DOMAIN": domain,
           "USER": identity.name, "LOGNAME": identity.name, "HOME": identity.home,
           "RETURN_PATH": sender, "LOCAL_PART": local,
           "SENDER_LOCAL": sender_local if sender_domain else sender,
           "SENDER_DOMAIN": sender_domain}
    if message_id:
        env["MESSAGE_ID"] = message_id
    if qualify_domain:
        env["QUALIFY_DOMAIN"] = qualify_domain
    env.update(extra or {})
    return env


def _show(text, limit=80):
    text = _UNSAFE_TEXT.sub("?", text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def excerpt(output, limit=EXCERPT):
    """Return output as one sanitised line of at most limit characters."""
    text = _UNSAFE_TEXT.sub(" ", output.decode("utf-8", "replace"))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def exit_outcome(name, status, output=b"", timed_out=None):
    """Return the Outcome for how a command ended (status as from os.waitpid)."""
    said = excerpt(output)
    tail = (": " + said) if said else ""
    if timed_out is not None:
        return Outcome.temp("4.3.0", "command %s timed out after %gs%s" % (name, timed_out, tail))
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return Outcome.ok("delivered to command %s%s" % (name, tail))
    if code < 0:
        try:
            signame = signal.Signals(-code).name
        except ValueError:
            signame = "signal %d" % -code
        return Outcome.temp("4.3.0", "command %s killed by %s%s" % (name, signame, tail))
    if code == 67:
        return Outcome.perm("5.1.1", "command %s: user unknown (EX_NOUSER)%s" % (name, tail))
    if code in _PERMANENT:
        return Outcome.perm("5.3.0", "command %s exited %d, %s%s"
                            % (name, code, _PERMANENT[code], tail))
    meaning = _TEMPORARY.get(code, "unknown exit status, will retry")
    return Outcome.temp("4.3.0", "command %s exited %d, %s%s" % (name, code, meaning, tail))


# running


def run_command(loop, argv, env, stdin_iter, time_limit, output_cap, done, identity=None,
                cwd="/"):
    """Run argv with stdin_iter's bytes on its stdin; call done(Outcome) once, from the
    loop; return the Child (masq.base.child: kill() ends it early, as a deferral)."""
    argv = list(argv)
    name = os.path.basename(argv[0]) or argv[0]
    child = Child(loop, lambda child: done(_command_outcome(name, child)), time_limit,
                  output_cap)
    child.spawn(argv, stdin=stdin_iter, stderr=STDOUT, env=env, cwd=cwd,
                **(identity.switch_args() if identity else {}))
    return child


def _command_outcome(name, child):
    """Return the Outcome of a command that has ended."""
    if child.error is not None:
        return Outcome.temp("4.3.5", "cannot run command %s: %s" % (name, child.error))
    if child.feed_error is not None:
        exc = child.feed_error
        return Outcome.temp("4.3.0", "cannot read the message: %s"
                            % (getattr(exc, "strerror", None) or exc))
    return exit_outcome(name, child.status, bytes(child.output),
                        child.time_limit if child.timed_out else None)


# running a Python function in a child


def _encode(outcome):
    text = excerpt(outcome.text.encode("utf-8", "replace"), 900)
    return ("%s %s %s\n" % (outcome.kind, outcome.status, text)).encode("utf-8")


def _decode(line):
    parts = line.decode("utf-8", "replace").rstrip("\n").split(" ", 2)
    if len(parts) == 3 and parts[0] in (OK, TEMPFAIL, PERMFAIL):
        return Outcome(parts[0], parts[1], parts[2])
    return None


def _child(write_fd, identity, prepare, work):
    """Run in the forked child: prepare (as root), become identity, work, report, exit."""
    code = 1
    try:
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        try:
            prepared = prepare()
            become(identity)
            outcome = work(prepared)
        except BaseException as exc:    # whatever happens, the parent gets one line
            outcome = Outcome.temp("4.3.0", "delivery process failed: %s" % exc)
        line = _encode(outcome)
        while line:
            line = line[os.write(write_fd, line):]
        code = 0
    finally:
        os._exit(code)


def run_in_child(loop, identity, prepare, work, done, time_limit, what="delivery"):
    """Fork a child that runs prepare() with our privileges (create the mailbox, open the
    message), becomes identity, reports work(prepared)'s Outcome on a pipe; call
    done(Outcome) from the loop."""
    child = Child(loop, lambda child: done(_child_outcome(child, what)), time_limit)
    child.fork(lambda write_fd: _child(write_fd, identity, prepare, work))


def _child_outcome(child, what):
    """Return the Outcome a forked child reported, or why it reported none."""
    if child.error is not None:
        return Outcome.temp("4.3.0", "%s: %s" % (what, child.error))
    outcome = _decode(bytes(child.output)) if not child.timed_out else None
    if outcome is None:
        how = "timed out" if child.timed_out else "ended without a result (status %d)" % (
            os.waitstatus_to_exitcode(child.status))
        outcome = Outcome.temp("4.3.0", "%s: delivery process %s" % (what, how))
    return outcome
