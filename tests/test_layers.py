"""The tree follows the mail flow in layers (docs/ARCHITECTURE.md): a module imports only
from its own row of the layer table or from rows below it, anywhere in the file (inside
functions too); every module has a row; no two modules import each other, however far
round; and masq/ imports nothing OpenWrt ships in separate packages."""

import ast
import os

from helpers import ROOT

FORBIDDEN = {"email", "logging", "asyncio", "http", "urllib", "xml", "sqlite3",
             "multiprocessing", "unittest", "unicodedata", "uuid", "ctypes", "smtplib",
             "mailbox", "concurrent", "threading"}

# The layer table, bottom first: a module may import its own row and the rows listed before it.
# A row is a package (a folder, with a /) or a top-level module.
LAYERS = (
    "masq/__init__.py",     # the version
    "masq/proto/",          # sans-IO engines: bytes in, events out
    "masq/mail/",           # addresses and message text
    "masq/base/",           # loop, clock, sockets, logger, exits, JSON, files, control socket
    "masq/config/",         # UCI grammar, schema, presets, which file to load
    "masq/queue/",          # the log-structured queue behind one facade
    "masq/policy/",         # accept or refuse; who may do what
    "masq/route.py",        # route choice and rewrites (pure)
    "masq/aliases/",        # the aliases file and its expansion
    "masq/dns/",            # stub resolver, MX
    "masq/online/",         # online detectors
    "masq/outbound/",       # scheduler, agents, results, bounces, mailboxes, delivery log
    "masq/inbound/",        # SMTP listeners and sessions, stdio SMTP, AUTH, POP3 fetching
    "masq/status/",         # the status document and its views
    "masq/daemon/",         # the daemon, its components, control commands, one-shot runner
    "masq/cli/",            # the command line
    "masq/__main__.py",     # python3 -m masq
)
# Narrower still: module prefix -> the only masq modules it may import.
ALLOWED = {
    "masq/base/clock.py": (),
    "masq/base/loop.py": ("masq.base.clock",),
    "masq/base/compat.py": (),
    "masq/base/tables.py": (),
    "masq/proto/": ("masq.proto",),
    "masq/queue/": ("masq.queue", "masq.base.clock", "masq.base.compat", "masq.base.exits",
                    "masq.base.tables"),
    "masq/mail/address.py": (),
    "masq/mail/message.py": (),
    "masq/route.py": ("masq.mail.address", "masq.mail.addrmap", "masq.mail.glob"),
    "masq/mail/addrmap.py": ("masq.mail.address", "masq.mail.glob"),
    "masq/mail/glob.py": (),
}


def row_of(rel):
    """Return the index in LAYERS of the module at rel (masq/x/y.py), or None."""
    for index, row in enumerate(LAYERS):
        if rel == row or (row.endswith("/") and rel.startswith(row)):
            return index
    return None


def narrow_ok(rel, name):
    """Return False if an ALLOWED rule for rel leaves out the module name."""
    for prefix, allowed in ALLOWED.items():
        if rel == prefix or (prefix.endswith("/") and rel.startswith(prefix)):
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                return False
    return True


def module_files(root):
    """Return {dotted module name: path relative to root} for every module under masq/."""
    found = {}
    for folder, _, files in os.walk(os.path.join(root, "masq")):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), root)
                dotted = rel[:-3].replace(os.sep, ".")
                found[dotted[:-len(".__init__")] if name == "__init__.py" else dotted] = rel
    return found


def imported_modules(root, rel, known):
    """Yield (line, module name) for every masq module rel imports, at any depth."""
    package = rel[:-3].replace(os.sep, ".").rpartition(".")[0]
    if rel.endswith("__init__.py"):
        package = rel[:-len("/__init__.py")].replace(os.sep, ".")
    with open(os.path.join(root, rel)) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):            # every node: function bodies and branches too
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            names = [base + "." + alias.name for alias in node.names]
        for name in names:
            if name == "masq" or name.startswith("masq."):
                while name not in known and "." in name:
                    name = name.rpartition(".")[0]
                yield node.lineno, name


def layer_violations(root):
    """Return the upward imports and the modules without a row, as lines of text."""
    known = module_files(root)
    bad = ["%s has no row in the layer table" % rel for rel in sorted(known.values())
           if row_of(rel) is None]
    for rel in sorted(known.values()):
        mine = row_of(rel)
        if mine is None:
            continue
        for line, name in imported_modules(root, rel, known):
            theirs = row_of(known.get(name, "?"))
            if theirs is None or theirs > mine or not narrow_ok(rel, name):
                bad.append("%s:%d imports %s (%s)" % (rel, line, name, LAYERS[theirs]
                                                       if theirs is not None else "?"))
    return bad


def import_cycles(root):
    """Return the groups of modules that import each other (directly or round a loop)."""
    known = module_files(root)
    graph = {name: {n for _, n in imported_modules(root, rel, known) if n != name}
             for name, rel in known.items()}
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(node):                        # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_lower_layers_do_not_import_upper_ones():
    assert layer_violations(ROOT) == []


def test_no_modules_import_each_other():
    assert import_cycles(ROOT) == []


def test_an_upward_import_inside_a_function_is_caught(tmp_path):
    for rel, text in {
            "masq/__init__.py": "",
            "masq/queue/__init__.py": "",
            "masq/queue/spool.py": "def open_queue():\n    from masq.cli import common\n",
            "masq/cli/__init__.py": "",
            "masq/cli/common.py": "from masq.queue import spool\n",
            "masq/proto/__init__.py": "",
            "masq/proto/smtp.py": "from ..base import loop\n",
            "masq/base/__init__.py": "",
            "masq/base/loop.py": "",
            "masq/newthing.py": ""}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert layer_violations(str(tmp_path)) == [
        "masq/newthing.py has no row in the layer table",
        "masq/proto/smtp.py:1 imports masq.base.loop (masq/base/)",
        "masq/queue/spool.py:2 imports masq.cli.common (masq/cli/)"]
    assert import_cycles(str(tmp_path)) == [["masq.cli.common", "masq.queue.spool"]]


def test_no_separately_packaged_modules_in_masq():
    bad = []
    for folder, _, files in os.walk(os.path.join(ROOT, "masq")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                tree = ast.parse(open(path).read())
                for node in ast.walk(tree):
                    found = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                        [node.module] if isinstance(node, ast.ImportFrom) and node.module \
                        and not node.level else []
                    bad += ["%s imports %s" % (os.path.relpath(path, ROOT), n) for n in found
                            if n.split(".")[0] in FORBIDDEN]
    assert bad == []
