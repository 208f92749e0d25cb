#!/usr/bin/env python3
"""Write luci-app-masq's translation template po/templates/masq.pot from its sources.

Collects every string the LuCI app shows through `_('...')` in its JavaScript views and
the menu titles of root/usr/share/luci/menu.d, as LuCI's own scanner does, one entry per
string with the places it comes from, sorted by text. Translators copy the template to
po/LANG/masq.po; luci.mk turns those into luci-i18n-masq-LANG packages.

Usage: tools/luci_pot.py [--check]   (--check: exit 1 if the file is not up to date)
"""

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "openwrt", "luci-app-masq")
POT = os.path.join(APP, "po", "templates", "masq.pot")
CALL = re.compile(r"""_\(\s*'((?:[^'\\]|\\.)*)'\s*[,)]""")


def _unescape(text):
    return re.sub(r"\\(.)", r"\1", text)


def strings():
    """Return {msgid: [reference]} of the app's translatable strings."""
    found = {}
    for folder, dirs, names in os.walk(APP):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, APP)
            if name.endswith(".js"):
                with open(path, encoding="utf-8") as f:
                    for number, line in enumerate(f, 1):
                        for match in CALL.finditer(line):
                            found.setdefault(_unescape(match.group(1)), []).append(
                                "%s:%d" % (rel, number))
            elif name.endswith(".json") and "/menu.d/" in path.replace(os.sep, "/"):
                with open(path, encoding="utf-8") as f:
                    for entry in json.load(f).values():
                        if entry.get("title"):
                            found.setdefault(entry["title"], []).append(rel)
    return found


def _quote(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render():
    """Return the text of the template."""
    out = ['msgid ""', 'msgstr "Content-Type: text/plain; charset=UTF-8"', ""]
    for msgid, refs in sorted(strings().items()):
        out += ["#: %s" % ref for ref in refs]
        out += ["msgid %s" % _quote(msgid), 'msgstr ""', ""]
    return "\n".join(out)


def main(argv):
    text = render()
    if argv[1:] == ["--check"]:
        with open(POT, encoding="utf-8") as f:
            return 0 if f.read() == text else 1
    os.makedirs(os.path.dirname(POT), exist_ok=True)
    with open(POT, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
