"""The fetch component: when to collect mail from each `config fetch` mailbox, and its status.

Owns, per source: its settings as the runs need them (port, size limit, recipient, the UID
state file), one run at a time, and what the status shows (last run, messages taken,
last error). Runs start when the source's route comes online (after the route's flush
has started: the delivery component hears the transition first), on `masq fetch [NAME]`
/ `-g` / `-go ROUTE` (the control request `fetch`), and every `fetch_interval` for the
sources whose route is online. A source whose route is `always` runs on the last two.

At start (after recovery, before the first delivery) the state file learns the UIDs of
fetched mail the queue holds (a crash between a COMMIT's fdatasync and the state file's
append leaves exactly that), so a crash never fetches a message twice. The protocol runs are `fetch_pop3.Pop3Run` and
`fetch_imap.ImapRun`; SMTP-after-POP uses a POP3 run that only logs in (`login`).
"""

import os

from masq.base.host import Component, MessagesQueued, RouteChanged
from masq.outbound import maillog
from masq.inbound.fetch_state import UidState
from masq.queue.log import LogError

PORTS = {("pop3", False): 110, ("pop3", True): 995, ("imap", False): 143,
         ("imap", True): 993}


class Source:
    """One fetch section and the state of its runs."""

    def __init__(self, fetcher, settings):
        self.fetcher, self.host = fetcher, fetcher.host
        self.log = self.host.log
        self.name = settings.name
        self.apply(settings)
        self.running = None         # [callbacks waiting for the run's end]
        self.last_run = self.last_error = None
        self.taken = self.taken_total = 0
        self.left = []              # messages left on the server for their size

    def apply(self, settings):
        """Take (new) settings."""
        from masq.outbound.smtp import split_host_port
        self.settings = settings
        main = self.host.cfg.main
        implicit = settings.tls == "tls"
        self.host_name, self.port = split_host_port(
            settings.server, PORTS[(settings.protocol, implicit)])
        self.max_size = settings.max_size or main.max_message_size
        self.recipient = _recipient(settings, main.hostname)
        # the mailbox, not the way to it: a new port or TLS mode fetches nothing again
        key = "%s %s %s %s" % (settings.protocol, self.host_name.lower(), settings.user,
                               settings.folder if settings.protocol == "imap" else "")
        self.state = UidState(os.path.join(main.spool_dir, "fetch"), self.name, key)
        self.state.load()

    def online(self):
        """Return True if the source's route is online (or it is `always`)."""
        route = self.settings.route
        if route == "always":
            return True
        try:
            return self.host.online.get(route).online
        except KeyError:
            return False

    def run(self, done=None, login_only=False):
        """Start a run (or join the one going on: its login serves SMTP-after-POP too);
        done(source, error or None) when it ends."""
        if self.running is not None:
            if done is not None:
                self.running.append(done)
            return
        self.running = [done] if done is not None else []
        self.left = []
        self.fetcher.resolve(self.host_name, lambda ip, error: self._resolved(
            ip, error, login_only))

    def reconcile(self):
        """Record the UIDs of fetched mail the queue holds that the state file lacks.

        Called at start, before anything can deliver (and so forget) a message that a
        crash left queued but not yet in the state file."""
        prefix = self.name + " "
        for msg in self.host.queue.live():
            try:
                fetched = msg.envelope.fetched     # read back from the queue's log
            except LogError as exc:
                self.log.error("fetch %s: %s", self.name, exc)
                continue
            if fetched and fetched.startswith(prefix) and \
                    fetched[len(prefix):] not in self.state.taken:
                try:
                    self.state.add(fetched[len(prefix):])
                except OSError as exc:
                    self.log.error("fetch %s: state file %s: %s", self.name,
                                   self.state.path, exc)

    def _resolved(self, ip, error, login_only):
        if error is not None:
            error = "%s: %s" % (self.host_name, error)
            return self._logged_in(0, error) if login_only else self._finished(0, error)
        if self.settings.protocol == "imap":
            from masq.inbound.fetch_imap import ImapRun as Run
        else:
            from masq.inbound.fetch_pop3 import Pop3Run as Run
        kwargs = {"login_only": True} if login_only else {}
        done = self._logged_in if login_only else self._finished
        Run(self.host, self, ip, done, **kwargs).start()

    def _logged_in(self, taken, error):
        """A login-only run (SMTP-after-POP) ended: the status of fetching is unchanged."""
        if error is None:
            self.log.info("pop3_login %s: logged in and out", self.name)
        else:
            self.last_error = error
        self._wake(error)

    def _finished(self, taken, error):
        self.last_run = self.host.loop.time()
        self.taken = taken
        self.taken_total += taken
        self.last_error = error
        self.state.close()
        if error is not None:
            self.log.warning("fetch %s: %s", self.name, error)
        else:
            self.log.info("fetch %s: %d message(s) taken", self.name, taken)
        self._wake(error)

    def _wake(self, error):
        waiting, self.running = self.running, None
        for done in waiting:
            done(self, error)

    def accepted(self, intake):
        """Note a fetched message that is now durably queued, and tell the daemon."""
        host = self.host
        host.counters["accepted"] += 1
        maillog.received(host.log, intake.id, intake.sender, intake.size, 1,
                         client="%s[%s]" % intake.peer)
        host.publish(MessagesQueued((intake.id,)))

    def report_left(self, left):
        """Note messages left on the server because they exceed max_size."""
        self.left = left
        self.log.warning("fetch %s: left on the server, larger than max_size %d: %s",
                         self.name, self.max_size, ", ".join(left[:20]))

    def to_json(self):
        """Return the source's part of the status document."""
        return {"name": self.name, "protocol": self.settings.protocol,
                "server": self.settings.server, "route": self.settings.route,
                "running": self.running is not None, "last_run": self.last_run,
                "taken": self.taken, "taken_total": self.taken_total,
                "left": len(self.left), "last_error": self.last_error}


def _recipient(settings, hostname):
    target = settings.deliver_to or settings.user.partition("@")[0]
    return target if "@" in target else "%s@%s" % (target, hostname)


class Fetcher(Component):
    """The daemon's fetch component (the daemon offers it to others as host.fetcher)."""

    def __init__(self, host):
        self.host = host
        self.sources = {}
        self.timer = None
        self.resolver = None

    def start(self):
        """Build the sources, listen for routes coming online, arm the interval."""
        self._build(self.host.cfg)
        for source in self.sources.values():
            source.reconcile()
        self.host.subscribe(RouteChanged, self.route_changed)
        self._arm()

    def stop(self):
        """Stop the interval timer and the resolver."""
        self.host.unsubscribe(RouteChanged, self.route_changed)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.resolver is not None:
            self.resolver.close()
            self.resolver = None

    def reload(self, cfg):
        """Take the new configuration's fetch sections (keeping the status of old ones)."""
        self._build(cfg)
        if self.resolver is not None:
            self.resolver.close()
            self.resolver = None
        self._arm()

    def _build(self, cfg):
        sources = {}
        for settings in cfg.fetches:
            source = self.sources.get(settings.name)
            if source is None:
                source = Source(self, settings)
            else:
                source.apply(settings)
            sources[settings.name] = source
        self.sources = sources

    def route_changed(self, event):
        """A route changed state (a RouteChanged event): fetch for its sources once it is
        online."""
        route = event.route
        if route.online:
            for source in self.sources.values():
                if source.settings.route == route.name:
                    self.host.loop.call_soon(source.run)

    def fetch(self, names=None, route=None, done=None):
        """Run the named sources (or those of route, or every online one); done(sources)."""
        if names:
            chosen = [self.sources[n] for n in names]
        elif route is not None:
            chosen = [s for s in self.sources.values() if s.settings.route == route]
        else:
            chosen = [s for s in self.sources.values() if s.online()]
        pending = set(s.name for s in chosen)
        if not chosen and done is not None:
            return done([])

        def one_done(source, error):
            pending.discard(source.name)
            if not pending and done is not None:
                done(chosen)
        for source in chosen:
            source.run(one_done)

    def login(self, name, done):
        """SMTP-after-POP: log into source name's mailbox and out; done(error or None)."""
        self.sources[name].run(lambda source, error: done(error), login_only=True)

    def resolve(self, name, callback):
        """Find name's first address; callback(ip, None) or (None, error text)."""
        if self.resolver is None:
            from masq.dns.resolver import Resolver, parse_server
            main = self.host.cfg.main
            servers = [parse_server(main.dns_server)] if main.dns_server else None
            self.resolver = Resolver(self.host.loop, servers, own_names=[main.hostname],
                                     hosts_file=main.hosts_file)

        def resolved(result):
            if result.error is not None:
                return callback(None, result.error.text)
            if not result.addresses:
                return callback(None, "no address")
            callback(result.addresses[0], None)
        self.resolver.resolve_host(name, resolved)

    def _arm(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        interval = self.host.cfg.main.fetch_interval
        if interval and self.sources:
            self.timer = self.host.loop.call_later(interval, self._periodic)

    def _periodic(self):
        self.timer = None
        self.fetch()
        self._arm()

    def to_json(self):
        """Return the `fetch` part of the status document."""
        return [source.to_json() for source in self.sources.values()]
