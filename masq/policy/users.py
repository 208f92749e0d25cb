"""Who a local user is, and who may change the queue and the routes.

Root, the daemon's own user and the configuration's trusted users may remove any message,
set routes up or down and force mail through a route that is offline; any user may remove
the messages they submitted and flush routes that are online. The control socket, the
status page and the commands without a daemon ask the same questions here.

The `host` these take is the daemon (its `cfg` and its `online` state).
"""

import os
import pwd


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


def trusted(host, uid):
    """Return True if uid may change the queue and the routes: root, the daemon, trusted."""
    return uid is not None and (uid == os.getuid() or privileged(host.cfg, uid))


def may_remove(host, uid):
    """Return the predicate msg -> True if uid may remove that queued message."""
    user = None if uid is None else user_name(uid)
    return lambda msg: trusted(host, uid) or (user is not None
                                              and msg.envelope.origin == user)


def may_force(host, uid, route):
    """Return None if uid may force mail through route (a name), else the refusal text.

    Forcing a route that is online changes nothing, so anyone may; one that is offline
    (its detector says so, or root set it down) needs the authority `masq online` needs."""
    if host.online.get(route).online or trusted(host, uid):
        return None
    return ("permission denied: route %s is offline and only root or a trusted user may "
            "force it (`masq online %s up`)" % (route, route))
