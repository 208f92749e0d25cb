"""Run masq as on a router with python3-light only: the modules OpenWrt ships separately
(and unicodedata, which the idna codec needs) cannot be imported. Used by test_light.py:
    python3 tests/light.py [masq arguments]"""

import sys

BLOCKED = ("email", "logging", "asyncio", "http", "urllib", "xml", "sqlite3",
           "multiprocessing", "unittest", "unicodedata", "encodings.idna", "ctypes", "uuid",
           "concurrent", "lzma", "bz2", "dbm", "decimal", "curses", "readline")


class Blocker:
    """A meta path finder that refuses the blocked modules."""

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError("%s is not available on python3-light" % name)
        return None


for name in list(sys.modules):
    if any(name == b or name.startswith(b + ".") for b in BLOCKED):
        del sys.modules[name]
sys.meta_path.insert(0, Blocker())
sys.argv = ["masq"] + sys.argv[1:]

from masq.cli import main  # noqa: E402

sys.exit(main())
