"""Which configuration file to read, and reading it for a command or the daemon.

The file is `-C FILE`, else `$MASQ_CONFIG`, else the first of /etc/config/masq and
/etc/masq.conf that exists; with none, the built-in defaults. A bad file is one error,
`PATH:LINE: message`, raised as exits.Failure with status 78 (EX_CONFIG). Running on
the defaults is said once, on stderr (which defaults, and that `masq setup` writes a file).
"""

import os

from masq.base import exits

DEFAULT_CONFIGS = ("/etc/config/masq", "/etc/masq.conf")
_told = []          # the no-configuration notice goes out once per process


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


def load_config(explicit=None, check=None):
    """Return the loaded Config; Failure(78) naming file and line if it is bad.

    Every command checks the form of every value (masq.config.schema); `check(cfg)` (the
    daemon and check-config pass masq.daemon.preflight.check: what the host must provide)
    may raise ConfigError too."""
    from masq.config import schema
    path = config_path(explicit)
    try:
        cfg = schema.loads("", path="(defaults)") if path is None else schema.load(path)
        if path is None:
            _tell_defaults(cfg)
        if check is not None:
            check(cfg)
        return cfg
    except schema.ConfigError as exc:
        raise exits.Failure(str(exc), exits.CONFIG) from None


def _tell_defaults(cfg):
    """Say once, on stderr, that no configuration file was found and what applies."""
    if _told:
        return
    _told.append(True)
    import sys
    main = cfg.main
    try:
        sys.stderr.write(
            "masq: no configuration file (-C, $MASQ_CONFIG, %s): built-in defaults apply: "
            "spool %s, local domains %s, mailboxes %s, no routes (mail for other domains "
            "stays queued); `masq setup` writes one\n"
            % (", ".join(DEFAULT_CONFIGS), main.spool_dir, ", ".join(main.local_domain),
               main.mailbox))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass                        # stderr closed: the defaults still apply
