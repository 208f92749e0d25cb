"""The local delivery agent: aliases, then each user's maildir, mbox or MDA, pipes and files.

Owns, for each recipient of a Job: the forwarding-loop check (our own `Delivered-To:`
already in the header), alias expansion, the choice of method per final target (a user's
mailbox spec, `|command`, `/file`, a remote address handed to `settings.forward`), who
each delivery runs as (`Identity`), the `Return-Path:` and `Delivered-To:` lines put in
front, and folding the targets' outcomes into one Outcome per recipient.

Does not touch the queue, retry or bounce (the scheduler does, from the Outcomes), and does
not parse the configuration (the daemon builds a LocalSettings).

Hostile input: recipient and sender (any RFC 5321 local part), the message, and the mail
spool. A local part used in a path or an argument is refused (5.1.3) if it holds `/`, NUL,
a control character, is `.`/`..` or starts with `-`. As root, a user's mailbox is written by
a forked child that has become the user; commands and `/file` targets from the aliases file
run as the file's owner, or as `command_user` (nobody) when root owns it, never as root.

Rules (docs/LOCAL.md): a recipient whose targets all succeed is ok; if any target deferred,
the recipient is deferred (the retry may deliver the others twice: at worst a duplicate,
never a loss); otherwise any permanent failure bounces the recipient, saying which target
failed and how many others got the message. A target reached twice in one job (two
recipients aliased to one user) gets one copy.
"""

import itertools
import os
import pwd

from masq.aliases import expand as expansion
from masq.aliases import file as aliases
from masq.mail import address
from masq.mail.message import HeaderReader, HeaderTooLong, delivered_to
from masq.outbound.mailbox import maildir, mbox, write
from masq.outbound.command import (Refused, environment, expand_argv, expand_path, shell_argv,
                                   run_command, run_in_child, unsafe_component)
from masq.outbound.job import Job
from masq.outbound.outcome import PERMFAIL, TEMPFAIL, Outcome
from masq.policy.local import Locality, fold

METHODS = ("maildir", "mbox", "mda")


class LocalSettings:
    """What the local agent needs; the daemon fills it in from the configuration."""

    def __init__(self, hostname, mailbox="mbox:/var/mail/%u", user_mailbox=None,
                 alias_file="/etc/aliases", local_users=(), locality=None, forward=None,
                 command_timeout=600.0, mailbox_timeout=600.0, output_cap=8192,
                 lock_timeout=mbox.LOCK_TIMEOUT, command_user="nobody", in_child=None,
                 alias_depth=expansion.DEPTH_LIMIT, alias_size=expansion.SIZE_LIMIT, log=None,
                 globalias_file=None, pipe_from=(False, False), mda_from=(False, False),
                 user_mda_from=None, spam_folder=""):
        self.hostname = hostname
        self.mailbox = mailbox                    # maildir:PATH, mbox:PATH or mda:COMMAND
        self.user_mailbox = dict(user_mailbox or {})   # user -> spec, overrides mailbox
        self.alias_file = alias_file
        self.local_users = list(local_users)      # users without a passwd entry
        self.locality = locality or Locality((hostname, "localhost"), hostname)
        self.globalias_file = globalias_file      # None: no glob aliases
        self.forward = forward                    # forward(job, [address]) -> None|Outcome
        self.command_timeout = command_timeout    # MDA and |command
        self.mailbox_timeout = mailbox_timeout    # a child writing a maildir or mbox
        self.output_cap = output_cap              # bytes of a command's output kept
        self.lock_timeout = lock_timeout          # mbox lock wait (in a child only)
        self.command_user = command_user          # runs root-owned aliases' commands
        self.in_child = in_child                  # None: fork for mailboxes when root
        self.alias_depth = alias_depth
        self.alias_size = alias_size
        self.log = log                            # a masq.base.logger.Logger, or None
        self.pipe_from = tuple(pipe_from)         # (From_ line, >From quoting): alias pipes
        self.mda_from = tuple(mda_from)           # the same for mda: mailboxes
        self.user_mda_from = dict(user_mda_from or {})  # user -> (line|None, quote|None)
        self.spam_folder = spam_folder            # maildir subfolder (.Junk) for mail a
                                                  # content filter flagged (X-Spam-Flag: YES)

    def mda_from_for(self, user):
        """Return (From_ line, >From quoting) for user's mda: mailbox."""
        line, quote = self.user_mda_from.get(user, (None, None))
        return (self.mda_from[0] if line is None else line,
                self.mda_from[1] if quote is None else quote)


class Identity:
    """Who a delivery runs as: uid, gid, user name and home directory."""

    __slots__ = ("uid", "gid", "name", "home")

    def __init__(self, uid, gid, name, home="/"):
        self.uid = uid
        self.gid = gid
        self.name = name
        self.home = home

    @classmethod
    def of_user(cls, name):
        """Return the Identity of system user `name`, or None if there is none."""
        try:
            entry = pwd.getpwnam(name)
        except (KeyError, ValueError):
            return None
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir or "/")

    @classmethod
    def of_uid(cls, uid):
        """Return the Identity of uid (named after its passwd entry if it has one)."""
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return cls(uid, uid, str(uid), "/")
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir or "/")

    @classmethod
    def current(cls):
        """Return the Identity this process runs as."""
        me = cls.of_uid(os.geteuid())
        return cls(me.uid, os.getegid(), me.name, me.home)

    def groups(self):
        """Return the supplementary groups of this identity (its own gid at least)."""
        try:
            return os.getgrouplist(self.name, self.gid)
        except OSError:
            return [self.gid]

    def switch_args(self):
        """Return the Popen arguments that make a child run as this identity."""
        if self.uid == os.geteuid() and self.gid == os.getegid():
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": self.groups()}

    def __repr__(self):
        return "Identity(%d, %d, %r)" % (self.uid, self.gid, self.name)


def parse_spec(spec):
    """Split a mailbox spec into (method, rest); raise Refused (4.3.5) if it is bad."""
    method, _, rest = spec.partition(":")
    if method not in METHODS or not rest.strip():
        raise Refused(Outcome.temp("4.3.5", "bad mailbox setting %r (want maildir:PATH, "
                                   "mbox:PATH or mda:COMMAND)" % spec[:80]))
    return method, rest.strip()


def combine(results):
    """Fold [(what, Outcome)] for one recipient's targets into its one Outcome."""
    if not results:
        return Outcome.ok("the alias has no members: nothing to deliver")
    if len(results) == 1:
        return results[0][1]
    ok = [r for r in results if r[1].is_ok]
    temp = [r for r in results if r[1].kind == TEMPFAIL]
    perm = [r for r in results if r[1].kind == PERMFAIL]
    if not temp and not perm:
        return Outcome.ok("delivered to %d targets" % len(results))
    worst = temp[0] if temp else perm[0]
    rest = " (%d of %d targets delivered)" % (len(ok), len(results)) if ok else ""
    text = "%s: %s%s" % (worst[0], worst[1].text, rest)
    if temp:
        return Outcome.temp(worst[1].status, text)
    return Outcome.perm(worst[1].status, text)


def _primed(chunks):
    """Return chunks with its first one read already (so the file is open before setuid)."""
    chunks = iter(chunks)
    first = next(chunks, b"")
    return itertools.chain((first,), chunks)


def _clean(text):
    return "".join(c if c >= " " and c != "\x7f" else "?" for c in text)


class LocalAgent:
    """Delivers Jobs to local recipients: `deliver(job, done)` with done(list of Outcome)."""

    def __init__(self, loop, settings):
        self.loop = loop
        self.settings = settings
        self.alias_file = aliases.AliasFile(settings.alias_file)
        self.globalias_file = aliases.AliasFile(settings.globalias_file, aliases.parse_globs) \
            if settings.globalias_file else None

    def deliver(self, job, done):
        """Deliver job to each of its recipients; call done(outcomes) from the loop."""
        _Run(self, job, done).start()

    def in_child(self):
        """Return True if mailbox writes happen in a forked child."""
        if self.settings.in_child is not None:
            return self.settings.in_child
        return os.geteuid() == 0

    def find_user(self, name):
        """Return the Identity mail for user `name` is delivered as, or None if unknown
        (names compare as caseless_matching says)."""
        caseless = self.settings.locality.caseless
        for candidate in dict.fromkeys((name, name.lower()) if caseless else (name,)):
            found = Identity.of_user(candidate)
            if found is not None:
                return found
        for user in self.settings.local_users:
            if fold(user, caseless) == fold(name, caseless):
                me = Identity.current()
                return Identity(me.uid, me.gid, user, me.home)
        return None

    def alias_identity(self, table):
        """Return who runs commands and writes files named in the aliases file."""
        if os.geteuid() != 0:
            return Identity.current()
        if table is not None and table.owner not in (None, 0):
            return Identity.of_uid(table.owner)
        return (Identity.of_user(self.settings.command_user) or
                Identity(65534, 65534, "nobody", "/"))

    def log(self, level, text, *args):
        """Log a line if the settings name a logger."""
        if self.settings.log is not None:
            self.settings.log.log(level, text, *args)


class _Run:
    """One job: its recipients one after another, each recipient's targets one by one."""

    def __init__(self, agent, job, done):
        self.agent, self.job, self.done = agent, job, done
        self.settings = agent.settings
        self.loop = agent.loop
        self.outcomes = []
        self.seen = {}              # target key -> Outcome, within this job
        self.table = self.table_error = self.globs = None
        self.delivered = set()
        self.spam = False           # X-Spam-Flag: YES (a content filter said so)
        self.rcpt = self.targets = self.results = None
        self.local = self.domain = ""

    def start(self):
        try:
            self.delivered = set(self.read_delivered_to())
        except OSError as exc:
            outcome = Outcome.temp("4.3.0", "cannot read the message: %s" % exc.strerror)
            self.outcomes = [outcome] * len(self.job.recipients)
            self.loop.call_soon(lambda: self.done(self.outcomes))
            return
        try:
            self.table = self.agent.alias_file.get()
            if self.agent.globalias_file is not None:
                self.globs = self.agent.globalias_file.get()
        except aliases.AliasError as exc:
            self.table_error = exc
        self.loop.call_soon(self.next_recipient)

    def read_delivered_to(self):
        reader = HeaderReader()
        chunks = self.job.open_body()
        try:
            for chunk in chunks:
                reader.feed(chunk)
                if reader.done:
                    break
        except HeaderTooLong:
            pass                    # no loop check past the cap; the hop count still works
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
        self.spam = any(value.strip().upper().startswith("YES")
                        for value in reader.headers.get_all("X-Spam-Flag"))
        return delivered_to(reader.headers)

    def next_recipient(self):
        if len(self.outcomes) == len(self.job.recipients):
            self.done(self.outcomes)
            return
        self.rcpt = self.job.recipients[len(self.outcomes)]
        plan = self.plan(self.rcpt)
        if isinstance(plan, Outcome):
            self.finish_recipient(plan)
            return
        self.targets, self.results = list(plan), []
        self.next_target()

    def plan(self, rcpt):
        """Return the alias targets of rcpt, or the Outcome that ends it at once."""
        try:
            local, self.domain = address.split(rcpt)
        except address.AddressError as exc:
            return Outcome.perm("5.1.3", "bad recipient address: %s" % exc.text)
        self.local = local
        if rcpt.lower() in self.delivered:
            return Outcome.perm("5.4.6", "mail forwarding loop for %s (Delivered-To: already "
                                "in the header)" % _clean(rcpt))
        if self.table_error is not None:
            return Outcome.temp("4.3.0", "aliases unusable: %s" % _clean(str(self.table_error)))
        found = expansion.expand(self.table, local, self.settings.locality,
                                 self.settings.alias_depth, self.settings.alias_size,
                                 domain=self.domain, globs=self.globs)
        if found.failed:
            kind = TEMPFAIL if found.temporary else PERMFAIL
            return Outcome(kind, found.status, "%s: %s" % (_clean(local), found.text))
        remote = [t.value for t in found.targets if t.kind == aliases.REMOTE]
        targets = [t for t in found.targets if t.kind != aliases.REMOTE]
        return targets + ([aliases.Target(aliases.REMOTE, remote)] if remote else [])

    def finish_recipient(self, outcome):
        self.agent.log("info", "local: %s: %s %s %s", _clean(self.rcpt), outcome.kind,
                       outcome.status, outcome.text)
        self.outcomes.append(outcome)
        self.loop.call_soon(self.next_recipient)

    def next_target(self):
        if not self.targets:
            self.finish_recipient(combine(self.results))
            return
        target = self.targets.pop(0)
        key = (target.kind, str(target.value).lower())
        what = self.describe(target)
        if key in self.seen:
            self.target_done(what, None, self.seen[key])
            return
        try:
            self.start_target(target, lambda outcome: self.target_done(what, key, outcome))
        except Refused as refused:
            self.target_done(what, key, refused.outcome)

    def target_done(self, what, key, outcome):
        if key is not None:
            self.seen[key] = outcome
        self.results.append((what, outcome))
        self.loop.call_soon(self.next_target)

    def describe(self, target):
        if target.kind == aliases.REMOTE:
            return "forward to %d address%s" % (len(target.value),
                                               "" if len(target.value) == 1 else "es")
        shown = target.value if len(target.value) <= 60 else target.value[:57] + "..."
        return _clean({aliases.LOCAL: "user %s", aliases.PIPE: "command |%s",
                       aliases.FILE: "file %s"}[target.kind] % shown)

    # one target

    def start_target(self, target, done):
        kind = target.kind
        if kind == aliases.LOCAL:
            self.to_user(target.value, done)
        elif kind == aliases.PIPE:
            identity = self.agent.alias_identity(self.globs if target.glob else self.table)
            argv = (shell_argv(target.value) or
                    expand_argv(target.value, self.values(self.local)))
            self.command(argv, identity, done, self.settings.pipe_from)
        elif kind == aliases.FILE:
            identity = self.agent.alias_identity(self.globs if target.glob else self.table)
            self.write_mailbox("mbox", target.value, identity, None, done)
        else:
            self.forward(target.value, done)

    def values(self, user):
        return {"u": user, "d": self.domain, "s": self.job.sender, "r": self.rcpt}

    def to_user(self, name, done):
        why = unsafe_component(name)
        if why:
            raise Refused(Outcome.perm("5.1.3", "unsafe local part %r (%s)"
                                       % (_clean(name)[:80], why)))
        identity = self.agent.find_user(name)
        if identity is None:
            raise Refused(Outcome.perm("5.1.1", "user %s unknown" % _clean(name)[:80]))
        spec = (self.settings.user_mailbox.get(identity.name) or
                self.settings.user_mailbox.get(name) or self.settings.mailbox)
        method, rest = parse_spec(spec)
        values = self.values(identity.name)
        if method == "mda":
            self.command(expand_argv(rest, values), identity, done,
                         self.settings.mda_from_for(identity.name))
        else:
            path = expand_path(rest, values)
            if method == "maildir" and self.spam and self.settings.spam_folder:
                path = os.path.join(path, self.settings.spam_folder)
            self.write_mailbox(method, path, identity, identity, done)

    def prefix(self):
        sender = _clean(self.job.sender)
        return ("Return-Path: <%s>\r\nDelivered-To: %s\r\n" % (sender, _clean(self.rcpt))
                ).encode("utf-8", "surrogateescape")

    def command(self, argv, identity, done, from_=(False, False)):
        """Run argv with the message on stdin (LF line ends); from_ is (put an mbox From_
        line first, quote body lines `From ` as `>From `), masqmail's fromline/fromhack."""
        env = environment(self.job.sender, self.rcpt, identity,
                          message_id=self.job.message_id, qualify_domain=self.settings.hostname)
        body = write.to_lf(itertools.chain((self.prefix(),), self.job.open_body()))
        if any(from_):
            body = mbox.with_from_line(body, self.job.sender, self.loop.clock.time(), *from_)
        run_command(self.loop, argv, env, body, self.settings.command_timeout,
                    self.settings.output_cap, done, identity=identity)

    def write_mailbox(self, method, path, identity, owner, done):
        """Write a maildir or mbox; `owner` is the user the mbox must belong to (or None)."""
        prefix, job, settings = self.prefix(), self.job, self.settings
        owner_uid = owner.uid if owner is not None else None

        clock = self.loop.clock

        def work(chunks, lock_timeout):
            if method == "maildir":
                return maildir.deliver_maildir(path, chunks, prefix, clock.time(),
                                               settings.hostname)
            return mbox.deliver_mbox(path, job.sender, chunks, prefix, clock.time(),
                                     owner_uid=owner_uid, lock_timeout=lock_timeout,
                                     clock=clock)

        if not self.agent.in_child():
            try:
                outcome = work(job.open_body(), 0.0)    # one try: never block the loop waiting
            except Exception as exc:        # the text failed part-way (the write is undone)
                outcome = Outcome.temp("4.3.0", "%s %s: cannot read the message: %s"
                                       % (method, path, exc))
            self.loop.call_soon(lambda: done(outcome))
            return

        def prepare():
            if owner is not None and os.geteuid() == 0:
                make = maildir.prepare_maildir if method == "maildir" else mbox.prepare_mbox
                make(path, owner.uid, owner.gid)
            return _primed(job.open_body())

        run_in_child(self.loop, identity, prepare,
                                 lambda chunks: work(chunks, settings.lock_timeout), done,
                                 settings.mailbox_timeout + settings.lock_timeout,
                                 what="%s %s" % (method, path))

    def forward(self, addresses, done):
        """Hand remote targets to settings.forward with a copy that says Delivered-To."""
        forward = self.settings.forward
        if forward is None:
            outcome = Outcome.temp("4.3.5", "aliases forward to remote addresses, but nothing "
                                   "is set up to forward them")
        else:
            try:
                outcome = forward(self.forwarded_copy(), list(addresses))
            except OSError as exc:
                outcome = Outcome.temp("4.3.0", "cannot forward: %s" % exc)
            if not isinstance(outcome, Outcome):
                outcome = Outcome.ok("forwarded to %s" % _clean(", ".join(addresses))[:200])
        self.loop.call_soon(lambda: done(outcome))

    def forwarded_copy(self):
        """Return a Job like ours whose body starts with `Delivered-To: rcpt` (loop check)."""
        job, line = self.job, ("Delivered-To: %s\r\n" % _clean(self.rcpt)).encode(
            "utf-8", "surrogateescape")
        return Job(job.message_id, job.sender, job.recipients,
                   lambda: itertools.chain((line,), job.open_body()), size=job.size + len(line),
                   route=job.route, envid=job.envid, ret=job.ret, smtputf8=job.smtputf8,
                   body8bit=job.body8bit, received=job.received)
