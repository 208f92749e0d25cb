"""Synchronous online probes, for queue runs without a daemon (`runq`, `sendmail`).

The daemon's detectors watch for changes; a one-shot run only needs to know the state now:
`always` is online; `file:PATH` is online while PATH exists and its first line, if any,
names the route (masqmail's online file); `pipe:COMMAND` is online when the command exits 0
and prints the route's name (masqmail's online_query); `iface:NAME` is online when the
interface (or its `NAME_4`/`NAME_6` sub-interfaces) is up. Anything else is offline here.
"""

import shlex
import subprocess


def probe(name, detector):
    """Return True if the route called name is online according to detector."""
    kind, _, arg = detector.partition(":")
    handler = _PROBES.get(kind)
    return bool(handler and handler(name, arg))


def _always(name, arg):
    return True


def _file(name, path):
    try:
        with open(path, "rb") as f:
            first = f.readline(1024).strip()
    except FileNotFoundError:
        return False
    except OSError:
        return False
    return not first or first.decode("utf-8", "replace") == name


def _pipe(name, command):
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return False
    words = done.stdout.decode("utf-8", "replace").split()
    return done.returncode == 0 and name in words


def _iface(name, iface):
    for candidate in (iface, iface + "_4", iface + "_6"):
        try:
            with open("/sys/class/net/%s/operstate" % candidate) as f:
                state = f.read().strip()
        except OSError:
            continue
        if state in ("up", "unknown"):
            return True
    return False


_PROBES = {"always": _always, "file": _file, "pipe": _pipe, "iface": _iface}
