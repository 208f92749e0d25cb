"""Run masq as on a router with python3-light only: the modules OpenWrt ships in other
packages cannot be imported. Used by test_light.py:
    python3 tests/light.py [--release 24.10|25.12|master] [--no-openssl] [masq arguments]

The lists are openwrt/packages' own, per release branch (openwrt-24.10, openwrt-25.12,
master): `lang/python/python3/files/python3-package-*.mk` names the files each subpackage
takes out of python3-light, and python3-light's filespec in `lang/python/python3/Makefile`
drops idlelib, tkinter, turtledemo, webbrowser and _osx_support altogether. A file path
becomes the module it holds (`lib-dynload/_codecs_cn.$(SO)` -> `_codecs_cn`,
`pydoc_data` -> `pydoc_data`). python3-openssl (`_ssl`, `_hashlib`) is masq's dependency,
so it is present unless --no-openssl. What a blocked module takes with it fails as it
would there: the CJK codecs' encodings.* wrappers, the idna codec (unicodedata), ssl.
"""

import sys

# subpackage -> modules it takes out of python3-light, per release
_COMMON = {
    "python3-asyncio": ("asyncio",),
    "python3-codecs": ("_codecs_cn", "_codecs_hk", "_codecs_iso2022", "_codecs_jp",
                       "_codecs_kr", "_codecs_tw", "unicodedata"),
    "python3-ctypes": ("ctypes", "_ctypes"),
    "python3-dbm": ("dbm", "_dbm", "_gdbm"),
    "python3-decimal": ("decimal", "_decimal"),
    "python3-logging": ("logging",),
    "python3-lzma": ("lzma", "_lzma"),
    "python3-multiprocessing": ("multiprocessing", "_multiprocessing"),
    "python3-ncurses": ("curses", "_curses", "_curses_panel"),
    "python3-pydoc": ("doctest", "pydoc", "pydoc_data"),
    "python3-readline": ("readline",),
    "python3-sqlite3": ("sqlite3", "_sqlite3"),
    "python3-unittest": ("unittest",),
    "python3-uuid": ("uuid", "_uuid"),
    "python3-venv": ("ensurepip", "venv"),
    "python3-xml": ("xml", "xmlrpc", "_elementtree", "pyexpat"),
}
PACKAGES = {
    "24.10": dict(_COMMON, **{
        "python3-cgi": ("cgi", "cgitb"),
        "python3-distutils": ("distutils",),
        "python3-email": ("email",),
        "python3-lib2to3": ("lib2to3",),
        "python3-urllib": ("urllib",)}),
    "25.12": dict(_COMMON, **{
        "python3-email": ("email",),
        "python3-urllib": ("urllib",)}),
    "master": dict(_COMMON, **{
        "python3-urllib": ("email", "urllib")}),
}
NOT_SHIPPED = ("idlelib", "tkinter", "_tkinter", "turtledemo", "webbrowser", "_osx_support")
OPENSSL = ("_ssl", "_hashlib")
RELEASES = tuple(PACKAGES)


def blocked(release="24.10", openssl=True):
    """Return the module names python3-light of that release cannot import."""
    names = set(NOT_SHIPPED)
    for modules in PACKAGES[release].values():
        names.update(modules)
    if not openssl:
        names.update(OPENSSL)
    return frozenset(names)


class Blocker:
    """A meta path finder that refuses the blocked modules."""

    def __init__(self, names):
        self.names = names

    def refuses(self, name):
        return any(name == b or name.startswith(b + ".") for b in self.names)

    def find_spec(self, name, path=None, target=None):
        if self.refuses(name):
            raise ImportError("%s is not available on python3-light" % name)
        return None


def install(names):
    """Block names in this interpreter (and forget any already imported)."""
    blocker = Blocker(names)
    for name in list(sys.modules):
        if blocker.refuses(name):
            del sys.modules[name]
    sys.meta_path.insert(0, blocker)
    return blocker


def main(argv):
    release, openssl = "24.10", True
    while argv and argv[0] in ("--release", "--no-openssl"):
        if argv[0] == "--no-openssl":
            openssl, argv = False, argv[1:]
        else:
            release, argv = argv[1], argv[2:]
    install(blocked(release, openssl))
    sys.argv = ["masq"] + argv
    from masq.cli import main as masq_main
    return masq_main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
