"""What every command needs: the configuration file, and the queue opened for a purpose.

Config errors become exit 78 with `PATH:LINE: message`; spool errors keep their status
(78 for a spool that cannot be trusted, 75 for a temporary problem).
"""

import os
import pwd

from masq.base import exits

DEFAULT_CONFIGS = ("/etc/config/masq", "/etc/masq.conf")


def config_path(explicit=None):
    """Return the configuration file to read: -C, $MASQ_CONFIG, or the first default."""
    if explicit:
        return explicit
    if os.environ.get("MASQ_CONFIG"):
        return os.environ["MASQ_CONFIG"]
    for path in DEFAULT_CONFIGS:
        if os.path.exists(path):
            return path
    return None


def load_config(explicit=None, host=False):
    """Return the loaded Config; Failure(78) naming file and line if it is bad.

    Every command checks the form of every value (masq.config.schema); with host=True (the daemon,
    check-config) also what the host must provide (masq.daemon.preflight)."""
    from masq.config import schema as config
    path = config_path(explicit)
    try:
        cfg = config.loads("", path="(defaults)") if path is None else config.load(path)
        if host:
            from masq.daemon import preflight
            preflight.check(cfg)
        return cfg
    except config.ConfigError as exc:
        raise exits.Failure(str(exc), exits.CONFIG) from None


def open_queue(cfg, mode, report=None, clock=None):
    """Return the spool Queue opened for mode ('append', 'read' or 'runner'); `clock`
    (the loop's) dates new message ids."""
    from masq.queue.spool import Queue, SpoolError
    main = cfg.main
    try:
        return Queue(main.spool_dir, volatile_ok=main.volatile_spool, report=report,
                     segment_size=main.queue_segment_size, clock=clock).open(mode)
    except SpoolError as exc:
        raise exits.Failure(str(exc), exc.status) from None


def user_name(uid=None):
    """Return the login name of uid (default: the real uid), or the number as text."""
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def privileged(cfg, uid=None):
    """Return True if uid is root or one of the configuration's trusted users."""
    uid = os.getuid() if uid is None else uid
    return uid == 0 or user_name(uid) in cfg.main.trusted_users


def split_command_args(args):
    """Return (config path or None, the other args) for a command's arguments."""
    rest, path = [], None
    args = list(args)
    while args:
        arg = args.pop(0)
        if arg == "-C":
            if not args:
                raise exits.Failure("option -C needs a file", exits.USAGE)
            path = args.pop(0)
        elif arg.startswith("-C") and len(arg) > 2:
            path = arg[2:]
        else:
            rest.append(arg)
    return path, rest
