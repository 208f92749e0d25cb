"""Synchronous online probes, for queue runs without a daemon (`runq`, `sendmail`).

The daemon's detectors watch for changes; a one-shot run only needs to know the state now,
judged by the same rules (the detector modules own them): `always` is online; `file:PATH`
and `pipe:COMMAND` as masq.online.polled; `iface:NAME` as masq.online.netlink (up,
addressed, NAME_4/NAME_6 included); `ubus:IFACE` as masq.online.ubus; `modem:DEVICE` as
masq.online.modem. A route section, when given, supplies `online_name` (the name `file:`
and `pipe:` look for), `online_require_route` and `modem_min_signal`. Anything else is offline here. A probe never raises.
"""

import subprocess

PIPE_TIME_LIMIT = 30


def probe(name, detector, route=None):
    """Return True if the route called name is online according to detector."""
    kind, _, arg = detector.partition(":")
    handler = _PROBES.get(kind)
    return bool(handler and handler(name, arg, route))


def _option(route, option, default):
    value = getattr(route, option, None) if route is not None else None
    return default if value is None else value


def _always(name, arg, route):
    return True


def _file(name, path, route):
    from masq.online import polled
    return polled.file_says(_option(route, "online_name", None) or name, path)


def _pipe(name, command, route):
    from masq.online import polled
    try:
        done = subprocess.run(polled.command_argv(command), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                              timeout=PIPE_TIME_LIMIT)
    except (OSError, ValueError, subprocess.SubprocessError):
        return False
    name = _option(route, "online_name", None) or name
    return polled.pipe_says(name, done.returncode, done.stdout[:polled.OUTPUT_CAP])


def _iface(name, iface, route):
    from masq.online import netlink
    return netlink.probe(iface, bool(_option(route, "online_require_route", False)))


def _ubus(name, iface, route):
    from masq.online import ubus
    return ubus.probe(iface, bool(_option(route, "online_require_route", False)))


def _modem(name, arg, route):
    from masq.online import modem
    return modem.probe(arg, _option(route, "modem_min_signal", None))


_PROBES = {"always": _always, "file": _file, "pipe": _pipe, "iface": _iface, "ubus": _ubus,
           "modem": _modem}
