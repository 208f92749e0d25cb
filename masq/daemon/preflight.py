"""Preflight: what a configuration needs of this host, checked before the daemon runs.

masq.config.schema checks each value's form, and every command runs that. This checks what only
the host can answer, so that what `masq check-config` passes, the daemon runs: the `user`
account exists, `tls_cert` and `tls_key` load as a pair, `tls_client_ca` loads, each
route's `tls_ca` can be read, the bounce and warning templates (`errmsg_file`,
`warnmsg_file`) load, and the spool is not on RAM unless `volatile_spool` says so. Run by check-config, by
the daemon at start and on SIGHUP (a failing reload keeps the old configuration). Not by
`sendmail`: it needs none of these (a missing certificate must not stop mail being
queued), and an unprivileged user could not read the key anyway.

Raises ConfigError naming the file, the line that set the option, and what is wrong.
"""

import os

from masq.config.schema import ConfigError


def check(cfg):
    """Raise ConfigError for the first thing this host cannot give the configuration."""
    main = cfg.main
    if main.user:
        import pwd
        try:
            pwd.getpwnam(main.user)
        except KeyError:
            raise cfg.error(main, "user", "option user: no such user %r on this host"
                            % main.user) from None
    if main.tls_cert:
        _check_pair(cfg, main)
    if main.tls_client_ca:
        _check_client_ca(cfg, main)
    for route in cfg.routes:
        if route.tls_ca and not os.access(route.tls_ca, os.R_OK):
            raise cfg.error(route, "tls_ca", "option tls_ca in route '%s': cannot read %s"
                            % (route.name, route.tls_ca))
    from masq.outbound import dsn_text      # a template's error names its own file and line
    dsn_text.check(cfg)
    _check_spool(cfg, main)


def _check_pair(cfg, main):
    import ssl                              # lazily: only for a certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(main.tls_cert, main.tls_key)
    except OSError as exc:
        raise cfg.error(main, "tls_cert", "option tls_cert/tls_key: cannot read %s: %s"
                        % (exc.filename or main.tls_cert, exc.strerror or exc)) from None
    except ssl.SSLError as exc:
        raise cfg.error(main, "tls_cert", "option tls_cert/tls_key: %s and %s do not load "
                        "as a certificate and its key (%s)"
                        % (main.tls_cert, main.tls_key, exc.reason or exc)) from None


def _check_client_ca(cfg, main):
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(main.tls_client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise cfg.error(main, "tls_client_ca", "option tls_client_ca: cannot load %s: %s"
                        % (main.tls_client_ca, getattr(exc, "strerror", None)
                           or getattr(exc, "reason", None) or exc)) from None


def _check_spool(cfg, main):
    from masq.queue.spool import VOLATILE_FS, mount_type
    if main.volatile_spool:
        return
    fstype = mount_type(main.spool_dir)
    if fstype in VOLATILE_FS:
        raise cfg.error(main, "spool_dir", "spool_dir %s is on %s (RAM): queued mail would "
                        "die with the power; set option volatile_spool '1' to allow it"
                        % (main.spool_dir, fstype))


__all__ = ["check", "ConfigError"]
