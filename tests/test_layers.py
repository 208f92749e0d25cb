"""The tree follows the mail flow (STYLE.md rule 1): lower layers never import upper ones,
and masq/ imports nothing OpenWrt ships in separate packages."""

import ast
import os

from helpers import ROOT

FORBIDDEN = {"email", "logging", "asyncio", "http", "urllib", "xml", "sqlite3",
             "multiprocessing", "unittest", "unicodedata", "uuid", "ctypes", "smtplib",
             "mailbox", "concurrent", "threading"}
# module prefix -> the masq modules it may import
ALLOWED = {
    "masq/base/clock.py": (),
    "masq/base/loop.py": ("masq.base.clock",),
    "masq/base/compat.py": (),
    "masq/proto/": ("masq.proto",),
    "masq/queue/": ("masq.queue", "masq.base.clock", "masq.base.compat", "masq.base.exits"),
    "masq/mail/address.py": (),
    "masq/mail/message.py": (),
    "masq/route.py": ("masq.mail.address",),
}


def imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield "masq.proto" if "/proto/" in path else "masq"
            elif node.module:
                for alias in node.names:
                    yield node.module + "." + alias.name


def modules():
    for folder, _, files in os.walk(os.path.join(ROOT, "masq")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, ROOT), path


def test_lower_layers_do_not_import_upper_ones():
    bad = []
    for rel, path in modules():
        for prefix, allowed in ALLOWED.items():
            if rel == prefix or (prefix.endswith("/") and rel.startswith(prefix)):
                for name in imports(path):
                    if name.startswith("masq") and not any(
                            name == a or name.startswith(a + ".") for a in allowed):
                        bad.append("%s imports %s" % (rel, name))
    assert bad == []


def test_no_separately_packaged_modules_in_masq():
    bad = ["%s imports %s" % (rel, name) for rel, path in modules()
           for name in imports(path) if name.split(".")[0] in FORBIDDEN]
    assert bad == []
