"""Expand a local part through the aliases into its final delivery targets.

Owns recursive expansion and its limits: names through aliases, `:include:` files, and
local addresses (policy.local.Locality says which), down to final targets (`Target`:
LOCAL, REMOTE, PIPE, FILE); and `check`, which expands every alias of a file for
newaliases / -bi (`check_globs` for the glob aliases file). Parsing and reading the files
is `masq.aliases.file`.

Each local address is looked up, as masqmail does, first in the glob aliases (its whole
`local@domain`, an unqualified name taking the hostname; the first matching line wins),
then by its local part in the aliases, then among the names that always resolve. Local
parts compare as `caseless_matching` says (the Locality's `caseless`).

Does not deliver, check that a user exists, run commands or read `.forward` files.

Hostile input: a recipient's local part comes from a peer, and an include file may be
edited by a list owner. Include files may hold addresses only: a `|command`, a `/file` or a
nested `:include:` in an include file fails the expansion (5.7.1), the way Postfix refuses
commands in includes by default. Texts name an include file's path and line, never its
content.

Fails: `expand()` never raises: its `Expansion` carries the targets or a status and a text:
a loop (`a: b`, `b: a`, and `a: a`; write `\\a` to keep a copy) is 5.4.6, nesting deeper
than the depth limit is 5.4.6, more distinct addresses than the size limit is 5.3.5, an
unreadable include file is 4.3.0. Duplicates are collapsed, and each alias is expanded
once, so an alias bomb costs time linear in the file, not in its expansion.
"""

from masq.aliases.file import (ADDRESS, FILE, FINAL, INCLUDE, LOCAL, NAME, PIPE, REMOTE,
                               AliasError, Item, Target, parse, parse_globs, read_file,
                               read_include)
from masq.mail import address
from masq.policy.local import Locality, fold

ALWAYS = ("postmaster", "mailer-daemon")   # resolvable even when not aliased: to root
DEPTH_LIMIT = 20
SIZE_LIMIT = 1000


class Expansion:
    """What a local part expands to: `targets`, or a failure `status` and `text`."""

    __slots__ = ("targets", "status", "text")

    def __init__(self, targets=(), status=None, text=None):
        self.targets = list(targets)
        self.status = status
        self.text = text

    @property
    def failed(self):
        """Return True if the expansion failed (then targets is empty)."""
        return self.status is not None

    @property
    def temporary(self):
        """Return True for a failure worth retrying (4.x.x)."""
        return bool(self.status) and self.status.startswith("4")

    def __repr__(self):
        if self.failed:
            return "Expansion(%s %s)" % (self.status, self.text)
        return "Expansion(%r)" % (self.targets,)


class _Fail(Exception):
    def __init__(self, status, text):
        super().__init__(text)
        self.status = status
        self.text = text


def _chain(names, last):
    text = " -> ".join(list(names) + [last])
    return text if len(text) <= 200 else text[:97] + " ... " + text[-97:]


class _Expander:
    """One expansion: the results so far, what was expanded, and the limits."""

    def __init__(self, aliases, locality, depth_limit, size_limit, read_include, globs):
        self.aliases = aliases
        self.locality = locality
        self.globs = globs
        self.depth_limit = depth_limit
        self.size_limit = size_limit
        self.read_include = read_include
        self.results = {}
        self.expanded = set()

    def name(self, name, ancestors, alias, domain=None):
        if self.globs and self.glob(name, domain, ancestors):
            return
        key = name.lower()
        if key in ancestors:
            raise _Fail("5.4.6", "mail forwarding loop: " + _chain(ancestors, key))
        items = self.aliases.get(name, self.locality.caseless) \
            if self.aliases is not None else None
        if items is None and key in ALWAYS:
            items = [Item(NAME, "root", 0)]
        if items is None:
            self.final(LOCAL, name, alias)
            return
        if key in self.expanded:
            return                                  # a duplicate: expanded already
        self.enter(key, ancestors)
        for item in items:
            self.item(item, ancestors + (key,), key, None)

    def glob(self, name, domain, ancestors):
        """Expand name@domain by the first glob alias that matches it; False if none."""
        found = self.globs.match("%s@%s" % (name, domain or self.locality.hostname),
                                 self.locality.caseless)
        if found is None:
            return False
        line, pattern, items = found
        key = "glob:" + pattern
        if key in ancestors:
            raise _Fail("5.4.6", "mail forwarding loop: " + _chain(ancestors, key))
        if key in self.expanded:
            return True
        self.enter(key, ancestors)
        for item in items:
            self.item(item, ancestors + (key,), pattern, None, True)
        return True

    def enter(self, key, ancestors):
        if len(ancestors) >= self.depth_limit:
            raise _Fail("5.4.6", "aliases nested deeper than %d levels: %s"
                        % (self.depth_limit, _chain(ancestors[:3] + ("...",), key)))
        self.expanded.add(key)
        if len(self.expanded) > self.size_limit:
            raise _Fail("5.3.5", "alias expansion too large: over %d aliases and include "
                        "files" % self.size_limit)

    def item(self, item, ancestors, alias, include, from_glob=False):
        kind, value = item.kind, item.value
        if include is not None and kind in (PIPE, FILE, INCLUDE):
            raise _Fail("5.7.1", "include file %s line %d: commands, files and includes are "
                        "not allowed in an include file" % (include, item.line))
        if kind == NAME:
            self.name(value, ancestors, alias)
        elif kind == FINAL:
            self.final(LOCAL, value, alias)
        elif kind == ADDRESS:
            self.address(value, ancestors, alias)
        elif kind == INCLUDE:
            self.include(value, ancestors, alias)
        else:
            self.final(kind, value, alias, from_glob)

    def address(self, pair, ancestors, alias):
        local, domain = pair
        text = "%s@%s" % (address.quote_local(local), domain) if domain else local
        if self.locality.is_local(text):
            self.name(local, ancestors, alias, domain)
        else:
            self.final(REMOTE, text, alias)

    def include(self, path, ancestors, alias):
        key = ":include:" + path
        if key in ancestors:
            raise _Fail("5.4.6", "mail forwarding loop: " + _chain(ancestors, key))
        if key in self.expanded:
            return
        self.enter(key, ancestors)
        try:
            items = self.read_include(path)
        except AliasError as exc:
            where = " line %d" % exc.line if exc.line else ""
            raise _Fail("4.3.0", "include file %s%s: %s" % (path, where, exc.message)) from None
        for item in items:
            self.item(item, ancestors + (key,), alias, path)

    def final(self, kind, value, alias, from_glob=False):
        if kind == LOCAL:
            key = (kind, fold(value, self.locality.caseless))
        else:
            key = (kind, value.lower() if kind == REMOTE else value)
        if key in self.results:
            return
        self.results[key] = Target(kind, value, alias, from_glob)
        if len(self.results) > self.size_limit:
            raise _Fail("5.3.5", "alias expansion too large: over %d addresses"
                        % self.size_limit)


def expand(aliases, local_part, locality=None, depth_limit=DEPTH_LIMIT,
           size_limit=SIZE_LIMIT, read_include=read_include, domain=None, globs=None):
    """Return the Expansion of local_part@domain through globs (GlobAliases, or None) and
    aliases (an Aliases, or None for none); locality: a policy.local.Locality (None: only
    unqualified addresses are local)."""
    expander = _Expander(aliases, locality or Locality(()), depth_limit, size_limit,
                         read_include, globs)
    try:
        expander.name(local_part, (), None, domain)
    except _Fail as fail:
        return Expansion(status=fail.status, text=fail.text)
    except RecursionError:
        return Expansion(status="5.4.6", text="aliases nested too deeply")
    return Expansion(expander.results.values())


def check_globs(path):
    """Return every problem in the glob aliases file at path (none if it is missing)."""
    try:
        text, _ = read_file(path, missing_ok=True)
    except AliasError as exc:
        return [exc]
    return parse_globs(text or "", path)[1]


def check(path, locality=None):
    """Return every problem in the aliases file at path (for newaliases / -bi), in order."""
    try:
        text, _ = read_file(path)
    except AliasError as exc:
        return [exc]
    aliases, errors = parse(text, path)
    problems = errors + aliases.warnings
    for name, (line, _) in aliases.entries.items():
        result = expand(aliases, aliases.spelled.get(name, name), locality)
        if result.failed:
            problems.append(AliasError(path, line, "alias %r: %s %s"
                                       % (name, result.status, result.text)))
    return sorted(problems, key=lambda problem: problem.line)
