"""The sendmail modes: what `-bm`, `-bp`, `-Mrm`, `-bV`, `-bi`, `-bd`, `-bD`, `-bs`, `-q` and `-g` do.

Owns the step from parsed Options to the module that does the work; each mode imports
only what it needs, so a plain `sendmail` pays for submission alone.
"""

import sys

from masq import __version__
from masq.base import exits
from masq.config.load import config_path, load_config


def run(opts):
    """Carry out the mode opts asks for; return the exit status."""
    return _MODES[opts.mode](opts)


def _submit(opts):
    from masq.cli import submit
    return submit.run(opts)


def _list(opts):
    from masq.cli import mailq
    return mailq.run(load_config(opts.config), sys.stdout,
                     "masqmail" if opts.verbose else "masq")


def _remove(opts):
    from masq.cli import mailq
    return mailq.remove(load_config(opts.config), opts.ids)


def _version(opts):
    sys.stdout.write("masq %s\n" % __version__)
    return exits.OK


def _aliases(opts):
    from masq.cli import commands
    return commands.newaliases(load_config(opts.config))


def _daemon(opts, detach):
    from masq.daemon import host as daemon
    return daemon.run(config_path(opts.config), detach=detach, interval=opts.interval)


def _smtp_stdio(opts):
    from masq.inbound import stdio
    return stdio.run(load_config(opts.config))


def _queue_run(opts):
    if opts.interval:
        return _daemon(opts, detach=True)
    from masq.cli import commands
    return commands.flush(load_config(opts.config), opts.route, forced=bool(opts.route))


def _fetch(opts):
    from masq.cli import commands
    return commands.fetch(load_config(opts.config), route=opts.route)


_MODES = {
    "bm": _submit, "bp": _list, "Mrm": _remove, "bV": _version, "bi": _aliases,
    "bd": lambda o: _daemon(o, True), "bD": lambda o: _daemon(o, False),
    "bs": _smtp_stdio, "q": _queue_run, "g": _fetch,
}
