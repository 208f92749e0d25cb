"""`python3 -m masq`: the same as the installed `masq` launcher."""

from masq.cli import run

run()
