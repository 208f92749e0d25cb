"""The daemon: one loop that owns the queue, the control socket and every service.

Owns start-up (configuration, queue recovery as the single queue runner, pid file, control
socket), signals (SIGHUP re-reads the configuration and keeps the old one if the new one is
bad; SIGTERM and SIGINT stop cleanly), the group commit and one bounded compaction step
at the end of every loop turn. Services (SMTP listeners, the scheduler, the status page)
are components: objects with start(), stop() and reload(config), added by the modules that
provide them.

`-bd` detaches (sendmail's convention): the parent returns only once the child is ready,
so start-up errors still reach the caller's terminal and exit status.
"""

import os
import signal
import sys

from masq.base import exits, files
from masq.base.control import Pickup, Server
from masq.base.host import Host
from masq.base.logger import Logger
from masq.base.loop import Loop
from masq.config.load import load_config
from masq.daemon import preflight
from masq.online.state import OnlineState
from masq.queue.opening import open_queue
from masq.queue.spool import LogError
from masq.status import model

# Modules masq imports only when first needed (json for the first control request, re for
# a HELO check): so that `sendmail` starts fast, and an idle daemon does not hold them. With
# `option user` the daemon imports them before it acts as or becomes that user, who may not
# be able to read the Python library (and the delivery agents' and the SMTP sessions'
# modules too, which are otherwise loaded by the first delivery and the first client).
LAZY = ("json", "re")


class Daemon(Host):
    """The running daemon: the host of every service."""

    def __init__(self, config_path, interval=None):
        self.config_path = config_path
        self.interval = interval
        cfg = load_config(config_path, check=preflight.check)
        loop = Loop()
        super().__init__(cfg, loop, Logger(cfg.main.log, cfg.main.log_level, clock=loop.clock),
                         counters=model.new_counters())
        self.online = OnlineState(cfg.routes, loop.time(), self.publish)
        loop.on_error = self._bug
        self.started = loop.time()
        self.components = []
        self.delivery = None
        self.control = None
        self.pickup = None
        self.fetcher = None     # the fetch component (masq.inbound.fetch), if configured
        self.local_helper = None    # the root-owned local delivery process (option user)

    @property
    def scheduler(self):
        """Return the delivery's scheduler (None before start)."""
        return self.delivery.scheduler if self.delivery is not None else None

    # start and stop

    def start(self):
        """Install signal handlers, open the queue, bind the sockets.

        The handlers come first: a SIGHUP or SIGTERM during start-up (logrotate, a quick
        `stop`) waits for the loop instead of killing the daemon half started."""
        self.loop.add_signal(signal.SIGHUP, self.reload)
        self.loop.add_signal(signal.SIGTERM, self.stop)
        self.loop.add_signal(signal.SIGINT, self.stop)
        if self.cfg.main.user:      # while root may still read the whole library
            from masq.inbound.listener import SESSION_MODULES
            from masq.outbound import agents
            from masq.status.web import SERVE_MODULES
            page = SERVE_MODULES if self.cfg.main.status_listen else ()
            page += agents.FILTER_MODULES if self.cfg.main.filter else ()
            for name in LAZY + agents.MODULES + SESSION_MODULES + page:
                __import__(name)
        account = self._account()
        if account is not None:     # before anything else is open: the helper inherits it
            self._start_local_helper()
        with _acting_as(account):   # the spool is the daemon user's: root never writes it
            self.queue = open_queue(self.cfg, "runner", report=self.log.warning,
                                    clock=self.loop.clock)
            live = len(self.queue.live())
            self.log.info("masq daemon starting: %d message(s) in the queue", live)
            self.control = Server(self.loop, self.queue.dir, self._control, self.log.warning)
            self.pickup = Pickup(self.loop, self.queue.dir, self._picked_up)
            try:
                self.control.start()
                self.pickup.start()
            except OSError as exc:
                raise exits.Failure("cannot start control socket: %s" % exc,
                                    exits.UNAVAILABLE) from None
        from masq.daemon import services
        from masq.inbound.listener import ListenError
        made = services.make(self)
        self.delivery, self.fetcher = made.delivery, made.fetcher
        for component in made.components:
            try:
                component.start()
            except ListenError as exc:
                raise exits.Failure(str(exc), exits.CONFIG) from None
            self.components.append(component)
        self._write_pid()
        self._drop_privileges(account)
        self.loop.at_turn_end(self._turn_end)

    def stop(self):
        """Stop accepting work and leave the loop after this turn."""
        self.log.info("masq daemon stopping")
        for component in reversed(self.components):
            component.stop()
        self.loop.stop()

    def close(self):
        """Release everything (after the loop has stopped)."""
        if self.queue:
            self.queue.sync_now()
        if self.control:
            self.control.stop()
        if self.pickup:
            self.pickup.stop()
        if self.local_helper:
            self.local_helper.close()
        self._remove_pid()
        if self.queue:
            self.queue.close()
        self.loop.close()

    def reload(self):
        """Re-read the configuration; keep the old one if the new one is bad."""
        try:
            cfg = load_config(self.config_path, check=preflight.check)
        except exits.Failure as exc:
            self.log.error("configuration not reloaded, keeping the old one: %s", exc)
            return
        if cfg.main.spool_dir != self.cfg.main.spool_dir:
            self.log.warning("spool_dir changed: takes effect after a restart")
        self.cfg = cfg
        self.log.threshold = Logger(cfg.main.log, cfg.main.log_level).threshold
        self.log.retarget(cfg.main.log)
        old = {r.name: r for r in self.online.routes}
        self.online = OnlineState(cfg.routes, self.loop.time(), self.publish)
        for route in self.online.routes:
            if route.name in old:
                for name in ("override", "detected", "since", "last_error", "last_delivery"):
                    setattr(route, name, getattr(old[route.name], name))
        for component in self.components:
            component.reload(cfg)
        self.log.info("configuration reloaded from %s", self.config_path)

    # each turn

    def _turn_end(self):
        self.queue.sync_now()
        before = self.queue.compactions
        try:
            self.queue.compact_step()         # bounded work; never waits for idleness
            if self.queue.compactions != before:
                self.log.info("queue compacted: %d segment(s), %d bytes",
                              self.queue.segment_count(), self.queue.log_size())
        except (OSError, LogError) as exc:
            self.log.error("queue compaction step failed: %s", exc)

    def status(self, limit=None):
        """Return the status document (listing the first `limit` queued messages, if given)."""
        from masq.outbound import waits_for
        listed = self.queue.listed()
        states = self.online.by_name
        now = self.loop.time()
        waits = waits_for.for_config(
            self.cfg, lambda name: name in states and states[name].online, now)
        return model.document(self.cfg.main.hostname, self.started, self.online.to_json(),
                              listed[:limit] if limit is not None else listed, self.counters,
                              self.log.recent, now=now,
                              deliveries=self.log.deliveries, queue_total=len(listed),
                              fetch=self.fetcher.to_json() if self.fetcher else (),
                              waits=waits)

    # control requests

    def _picked_up(self):
        from masq.daemon import control_commands
        control_commands.new_mail(self)

    def _control(self, req, uid, answer):
        from masq.daemon import control_commands
        control_commands.handle(self, req, uid, answer)

    def _account(self):
        """Return the pwd entry of `option user` when root must become it, else None.

        Its spool directory is made for it if missing; an existing one must be its own
        (masq never chowns a directory the administrator named)."""
        name = self.cfg.main.user
        if not name or os.getuid() != 0:
            return None
        import pwd
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            raise exits.Failure("option user: no such user %r" % name, exits.CONFIG) from None
        spool = self.cfg.main.spool_dir
        try:
            files.make_dir_for(spool, account.pw_uid, account.pw_gid, 0o700)
            owner = os.stat(spool).st_uid
        except OSError as exc:
            raise exits.Failure("spool_dir %s: %s" % (spool, exc), exits.CONFIG) from None
        if owner != account.pw_uid:
            raise exits.Failure("spool_dir %s belongs to uid %d, not to user %s (option "
                                "user): `chown -R %s %s`" % (spool, owner, name, name, spool),
                                exits.CONFIG)
        with _acting_as(account):
            reachable = os.access(spool, os.R_OK | os.W_OK | os.X_OK, effective_ids=True)
        if not reachable:
            raise exits.Failure("spool_dir %s: user %s cannot reach it (a directory above "
                                "it keeps the user out)" % (spool, name), exits.CONFIG)
        return account

    def _start_local_helper(self):
        """Fork the process that stays root for local deliveries (masq.outbound.local_helper)
        and connect the daemon to it."""
        from masq.outbound import local_helper
        path = self.config_path

        def load():
            return load_config(path, check=preflight.check)

        from masq.config.load import config_path as which_file
        sock, pid = local_helper.start(load, which_file(path))
        self.local_helper = local_helper.Client(self.loop, sock, pid, self.log)
        self.log.info("local deliveries run in process %d, as root", pid)

    def _drop_privileges(self, account):
        """Become the configured user once every socket is bound (root only).

        The status file is written by that user afterwards: its directory is made for the
        user if missing, and otherwise left as the administrator set it up."""
        if account is None:
            return
        directory = os.path.dirname(os.path.abspath(self.cfg.main.status_file))
        try:
            files.make_dir_for(directory, account.pw_uid, account.pw_gid)
        except OSError as exc:
            self.log.warning("status file: %s", exc)
        if self.cfg.main.log.startswith("/"):     # reopened after SIGHUP (rotation)
            try:
                files.give_file(self.cfg.main.log, account.pw_uid, account.pw_gid)
            except OSError as exc:
                self.log.warning("log file: %s", exc)
        os.setgroups([])
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
        if not os.access(directory, os.W_OK | os.X_OK):
            self.log.warning("status file: user %s may not write in %s; the status file "
                             "stays unwritten", account.pw_name, directory)
        self.log.info("running as user %s", account.pw_name)

    # pid file

    def _write_pid(self):
        """Write the pid file: a new file renamed into a directory only root may write."""
        path = self.cfg.main.pid_file
        try:
            why = files.unsafe_dir(os.path.dirname(os.path.abspath(path)))
            if why:
                raise OSError("not written: %s" % why)
            files.replace(path, b"%d\n" % os.getpid())
        except OSError as exc:
            self.log.warning("pid file %s: %s", path, exc.strerror or exc)

    def _remove_pid(self):
        try:
            with open(self.cfg.main.pid_file) as pid:
                if pid.read().strip() == str(os.getpid()):
                    os.unlink(self.cfg.main.pid_file)
        except OSError:
            pass

    def _bug(self, exc):
        import traceback
        self.log.error("internal error: %s", "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)).strip())


class _acting_as:
    """Within it, act as account (effective uid and gid) if one is given; then root again."""

    def __init__(self, account):
        self.account = account

    def __enter__(self):
        if self.account is not None:
            os.setgroups([])
            os.setegid(self.account.pw_gid)
            os.seteuid(self.account.pw_uid)

    def __exit__(self, *exc):
        if self.account is not None:
            os.seteuid(0)
            os.setegid(0)


def run(config_path, detach=False, interval=None):
    """Run the daemon (in the background if detach); return the exit status."""
    if detach:
        ready = _detach()
    daemon = Daemon(config_path, interval)
    try:
        daemon.start()
        if detach:
            _ready(ready)
        daemon.loop.run()
    finally:
        daemon.close()
    return exits.OK


def _detach():
    """Fork; the parent waits for the child to say it is ready and exits with its word."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        word = os.read(read_end, 256)
        if word.startswith(b"ok"):
            os._exit(exits.OK)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) or exits.SOFTWARE)
    os.close(read_end)
    os.setsid()
    return write_end


def _ready(write_end):
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    os.close(null)
    os.write(write_end, b"ok\n")
    os.close(write_end)
    sys.stderr.flush()
