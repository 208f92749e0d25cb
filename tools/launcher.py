#!/usr/bin/env python3
"""Print the installed `masq` launcher for an interpreter and a library folder.

The launcher runs Python isolated and without site-packages (`-IS`): `sendmail` must start
fast, and masq needs nothing from site-packages (pyserial is found lazily by the modem
detector), and leaves through `masq.cli.run`, which ends the process without the
interpreter's teardown. Usage: tools/launcher.py PYTHON LIBDIR > /usr/bin/masq
"""

import sys

TEMPLATE = """#!%(python)s -IS
import sys
sys.path.insert(0, %(libdir)r)
from masq.cli import run
run()
"""


def main(argv):
    """Write the launcher text for argv[1] (python) and argv[2] (library dir)."""
    if len(argv) != 3:
        sys.stderr.write("usage: launcher.py PYTHON LIBDIR\n")
        return 64
    sys.stdout.write(TEMPLATE % {"python": argv[1], "libdir": argv[2]})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
