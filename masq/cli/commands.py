"""The `masq COMMAND` commands: daemon, queue, flush, fetch, rm, online, status, passwd, setup,
import-masqmail, check-config, version.

Owns the table from command name to function and their argument checking; `-C FILE` may
stand anywhere among a command's arguments. Each command that needs the daemon asks it
over the control socket; those that can work without it read the spool themselves.
"""

import sys

from masq import __version__
from masq.base import control, exits
from masq.cli.common import split_command_args
from masq.config.load import config_path, load_config


def run(name, args):
    """Run command name with args; return the exit status."""
    command = _COMMANDS.get(name)
    if command is None:
        raise exits.Failure("unknown command %r (try `masq --help`)" % name, exits.USAGE)
    path, rest = split_command_args(args)
    return command(path, rest)


def _no_args(name, rest):
    if rest:
        raise exits.Failure("%s: unexpected argument %r" % (name, rest[0]), exits.USAGE)


def _daemon(path, rest):
    _no_args("daemon", rest)
    from masq.daemon import host as daemon
    return daemon.run(config_path(path), detach=False)


def _queue(path, rest):
    cfg = load_config(path)
    if rest == ["--dump"]:
        from masq.queue.dump import dump_lines
        from masq.queue.log import LogError
        try:
            for line in dump_lines(cfg.main.spool_dir):
                sys.stdout.write(line + "\n")
        except (LogError, OSError) as exc:
            raise exits.Failure(str(exc), exits.IOERR) from None
        return exits.OK
    style = "masq"
    if rest == ["--format", "masqmail"]:
        style, rest = "masqmail", []
    _no_args("queue", rest)
    from masq.cli import mailq
    return mailq.run(cfg, sys.stdout, style)


def _rm(path, rest):
    from masq.cli import mailq
    return mailq.remove(load_config(path), rest)


def flush(cfg, route=None, forced=False):
    """Ask the daemon to run the queue (through route only); return the exit status."""
    reply = control.request(cfg.main.spool_dir, "flush", timeout=3600, route=route,
                            forced=forced)
    if reply is None:
        from masq.daemon import runner
        summary = runner.run_once(cfg, route, forced)
        print(_summary(summary))
        return exits.OK
    if not reply.get("ok"):
        raise exits.Failure(reply.get("error", "flush failed"),
                            exits.NOPERM if reply.get("denied") else exits.UNAVAILABLE)
    print(reply.get("note") or _summary(reply))
    return exits.OK


def _summary(summary):
    return "%d attempted: %d delivered, %d deferred, %d bounced" % tuple(
        summary.get(k, 0) for k in ("attempted", "delivered", "deferred", "bounced"))


def _flush(path, rest):
    if len(rest) > 1:
        raise exits.Failure("flush: name at most one route", exits.USAGE)
    cfg = load_config(path)
    if rest and rest[0] not in [r.name for r in cfg.routes]:
        raise exits.Failure("no route named %r in the configuration" % rest[0], exits.USAGE)
    return flush(cfg, rest[0] if rest else None, forced=bool(rest))


def fetch(cfg, names=(), route=None):
    """Ask the daemon to fetch mail (`masq fetch [NAME...]`, `-g`, `-go ROUTE`); print
    one line per source; return the exit status."""
    known = [f.name for f in cfg.fetches]
    for name in names:
        if name not in known:
            raise exits.Failure("no fetch section named %r in the configuration" % name,
                                exits.USAGE)
    if route is not None and route not in [r.name for r in cfg.routes]:
        raise exits.Failure("no route named %r in the configuration" % route, exits.USAGE)
    if not known:
        raise exits.Failure("no fetch section in the configuration", exits.CONFIG)
    reply = control.request(cfg.main.spool_dir, "fetch", timeout=3600, names=list(names),
                            route=route)
    if reply is None:
        raise exits.Failure("no daemon runs (start it with `masq daemon`)", exits.UNAVAILABLE)
    if not reply.get("ok"):
        raise exits.Failure(reply.get("error", "fetch failed"),
                            exits.NOPERM if reply.get("denied") else exits.UNAVAILABLE)
    failed = False
    if not reply.get("sources"):
        print("no fetch source is online%s" % (" for route %s" % route if route else ""))
    for source in reply.get("sources", ()):
        error = source.get("last_error")
        failed = failed or error is not None
        print("%s: %d taken%s" % (source["name"], source["taken"],
                                  "; error: %s" % error if error else ""))
    return exits.TEMPFAIL if failed else exits.OK


def _fetch(path, rest):
    return fetch(load_config(path), rest)


def _online(path, rest):
    if len(rest) != 2 or rest[1] not in ("up", "down", "auto"):
        raise exits.Failure("usage: masq online ROUTE up|down|auto", exits.USAGE)
    cfg = load_config(path)
    if rest[0] not in [r.name for r in cfg.routes]:
        raise exits.Failure("no route named %r in the configuration" % rest[0], exits.USAGE)
    reply = control.request(cfg.main.spool_dir, "online", route=rest[0], how=rest[1])
    if reply is None and rest[1] == "up":     # no daemon to hold the state: flush, as -qo
        from masq.daemon import runner
        print("no daemon runs: flushing through route %s once" % rest[0])
        print(_summary(runner.run_once(cfg, rest[0], True)))
        return exits.OK
    if reply is None:       # nothing sends without a daemon: down and auto hold already
        print("no daemon runs: nothing goes out through route %s until one starts (it "
              "then follows the route's online detector)" % rest[0])
        return exits.OK
    if not reply.get("ok"):
        raise exits.Failure(reply.get("error", "failed"), exits.NOPERM)
    state = reply["route"]
    print("route %s is %s" % (state["name"], "online" if state["online"] else "offline"))
    return exits.OK


def _status(path, rest):
    if rest not in ([], ["--json"]):
        raise exits.Failure("usage: masq status [--json]", exits.USAGE)
    from masq.status import text
    cfg = load_config(path)
    doc = text.status_document(cfg)
    if rest:
        from masq.base import compat
        sys.stdout.write(compat.dumps(doc) + "\n")
    else:
        sys.stdout.write(text.render(doc))
    return exits.OK


def _passwd(path, rest):
    if rest in (["-h"], ["--help"]):
        print("usage: masq passwd USER\n\nHash a password (asked twice on a terminal, read "
              "once from a pipe) into `config user 'USER'` of the configuration file.")
        return exits.OK
    if len(rest) != 1 or rest[0].startswith("-"):
        raise exits.Failure("usage: masq passwd USER", exits.USAGE)
    from masq.policy import passwords
    return passwords.command(rest[0], path)


def _check_config(path, rest):
    _no_args("check-config", rest)
    from masq.config import schema as config
    from masq.daemon import preflight
    cfg = load_config(path, check=preflight.check)
    for warning in list(getattr(cfg, "warnings", ())) + _readable_secrets(cfg):
        sys.stderr.write("masq: warning: %s\n" % warning)
    sys.stdout.write("# masq: the settings read from %s, defaults included\n" % cfg.path)
    sys.stdout.write(config.describe(cfg))
    sys.stdout.write("# ok: %s is valid\n" % cfg.path)
    return exits.OK


def _readable_secrets(cfg):
    """Return a warning if the file holds passwords for other servers (fetch mailboxes,
    route AUTH) and users other than its owner may read it."""
    import os
    holders = ["fetch %s" % f.name for f in cfg.fetches if f.password] + \
        ["route %s" % r.name for r in cfg.routes if r.auth_pass]
    try:
        mode = os.stat(cfg.path).st_mode
    except (OSError, TypeError):
        return []
    if not holders or not mode & 0o077:
        return []
    return ["%s holds passwords (%s) and is mode %03o: `chmod 600 %s`"
            % (cfg.path, ", ".join(holders), mode & 0o777, cfg.path)]


def _version(path, rest):
    sys.stdout.write("masq %s\n" % __version__)
    return exits.OK


def newaliases(cfg):
    """Check the aliases file (`newaliases`, `-bi`); masq reads it as text, nothing to build."""
    import os
    from masq.aliases import expand as expansion
    path = cfg.main.alias_file
    globs = cfg.main.globalias_file
    problems = expansion.check_globs(globs) if globs else []
    if not os.path.exists(path):
        for problem in problems:
            sys.stderr.write("newaliases: %s\n" % problem)
        print("%s: no aliases file; postmaster and MAILER-DAEMON go to root" % path)
        return exits.DATAERR if problems else exits.OK
    from masq.policy.local import Locality
    problems += expansion.check(path, Locality.from_config(cfg.main))
    for problem in problems:
        sys.stderr.write("newaliases: %s\n" % problem)
    if problems:
        return exits.DATAERR
    print("%s: no problems (masq reads it directly; nothing to rebuild)" % path)
    return exits.OK


_COMMANDS = {
    "daemon": _daemon, "queue": _queue, "flush": _flush, "rm": _rm, "online": _online,
    "fetch": _fetch,
    "status": _status, "passwd": _passwd, "check-config": _check_config,
    "version": _version,
    "setup": lambda path, rest: __import__("masq.config.presets").config.presets.run(path, rest),
    "import-masqmail": lambda path, rest: __import__(
        "masq.config.masqmail_import").config.masqmail_import.run(path, rest),
}
