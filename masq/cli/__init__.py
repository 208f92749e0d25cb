"""The command line: dispatch on the name masq was called by, then on the first argument.

Called as `sendmail`, `mailq`, `runq`, `rmail`, `mailrm`, `newaliases`, `smtpd` or
`in.smtpd`, masq behaves as that program. Called as `masq` with a first argument that starts
with `-`, it is `sendmail`; otherwise the first argument is a command (`masq daemon`, ...).

Every failure ends as one line on stderr and a sysexits status; a traceback is a bug, and
even then the user sees one line (set MASQ_DEBUG=1 to see the traceback).
"""

import os
import sys

from masq.base import exits

COMMANDS = ("daemon", "queue", "flush", "rm", "online", "status", "passwd", "setup",
            "import-masqmail", "check-config", "version")


def main(argv=None):
    """Run the command line; return the exit status."""
    argv = list(sys.argv if argv is None else argv)
    name = os.path.basename(argv[0]) if argv else "masq"
    if name in ("__main__.py", "python3", "python") or name.startswith("masq"):
        name = "masq"
    args = argv[1:]
    try:
        return _dispatch(name, args)
    except exits.Failure as exc:
        _say(name, str(exc))
        return exc.status
    except KeyboardInterrupt:
        _say(name, "interrupted")
        return exits.TEMPFAIL
    except BrokenPipeError:
        return exits.IOERR
    except Exception as exc:  # a bug: one line, never a traceback (unless debugging)
        if os.environ.get("MASQ_DEBUG"):
            raise
        _say(name, "internal error: %s: %s" % (type(exc).__name__, exc))
        return exits.SOFTWARE


def run(argv=None):
    """Run the command line and end the process with its status, skipping Python's teardown.

    The installed launcher's entry: every file masq writes is closed (and synced where it
    must be) before main() returns, so the interpreter's finalisation (freeing each module,
    ~3 ms of a `sendmail` run) has nothing left to do. stdout and stderr are flushed here."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    try:
        sys.stdout.flush()
    except OSError:
        status = status or exits.IOERR
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(status)


def _say(name, text):
    sys.stderr.write("%s: %s\n" % (name, text))
    sys.stderr.flush()


def _dispatch(name, args):
    if name == "masq" and args[:1] == ["-C"] and len(args) > 2 and args[2] in COMMANDS:
        args = [args[2]] + args[:2] + args[3:]     # `masq -C FILE status` is a command
    if name == "masq" and args and not args[0].startswith("-"):
        from masq.cli import commands
        return commands.run(args[0], args[1:])
    if name == "masq" and args[:1] == ["--version"]:
        from masq.cli import commands
        return commands.run("version", args[1:])
    if name == "masq" and args[:1] in (["--help"], ["-h"]):
        sys.stdout.write(HELP)
        return exits.OK
    if name == "masq" and not args:
        sys.stderr.write(HELP)
        return exits.USAGE
    from masq.cli import flags, sendmail
    return sendmail.run(flags.parse(args, name))


HELP = """\
usage: masq [sendmail flags] [recipient ...]     (as sendmail)
       masq COMMAND [-C FILE] [args]

commands:
  daemon                 run in the foreground (for procd)
  queue [--dump | --format masqmail]
                         list the queue (as mailq); --dump prints every log record;
                         --format masqmail prints masqmail's mailq lines (as mailq -v)
  flush [ROUTE]          deliver queued mail now (through ROUTE only)
  rm ID...               remove messages from the queue
  online ROUTE up|down|auto
                         override a route's online detector
  status [--json]        show routes, queue and counters
  passwd USER            hash a password for a `config user` section
  setup PRESET [--board NAME] [--force] [options]
                         write a configuration: local, smarthost, dialup, mobile,
                         lan-relay (`masq setup --help`, `--boards`)
  import-masqmail [CONF] [-o FILE] [--force]
                         convert masqmail.conf and its route files (default
                         /etc/masqmail/masqmail.conf) into masq's configuration
  check-config           validate the configuration and print the effective settings
  version                print the version

sendmail flags: -t -i -oi -f ADDR -F NAME -bm -bp -bs -bd -bD -bi -bV -q[INTERVAL]
                -qo ROUTE -Mrm ID... -C FILE -odq -odb -oem -oep -v
"""
