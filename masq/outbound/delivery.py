"""The daemon's delivery component: agents plus scheduler, wired to the daemon's events.

Owns the lifetime of the scheduler in the daemon: started after recovery (so queued mail is
looked at once), told about new mail, route transitions and flushes, rebuilt agents on
reload. Remote targets that aliases expand to are queued as a new message (`forward`).
"""

from masq.base.host import Component, MessagesQueued, RouteChanged
from masq.outbound.agents import Agents
from masq.outbound.outcome import Outcome
from masq.outbound.scheduler import Scheduler
from masq.queue import spool
from masq.queue.envelope import Envelope


class Delivery(Component):
    """Delivers the host's queue (flushing it every interval seconds, if given)."""

    def __init__(self, host, interval=None):
        self.host = host
        self.interval = interval
        self.agents = None
        self.scheduler = None
        self.timer = None

    def start(self, look=True):
        """Build agents and scheduler; look at the whole queue at once unless look is False."""
        self.agents = Agents(self.host, forward=self.forward)
        self.scheduler = Scheduler(self.host, self.agents)
        self._stage()
        self.host.subscribe(MessagesQueued, self.scheduler.queued)
        self.host.subscribe(RouteChanged, self.scheduler.route_changed)
        if look:
            self.scheduler.kick()
        self._arm_interval()

    def _stage(self):
        """Build the content filter stage once `filter` is configured (never imported
        otherwise)."""
        if self.host.cfg.main.filter and self.scheduler.stage is None:
            from masq.outbound.filters import Stage
            self.scheduler.stage = Stage(self.host, self.scheduler.kick)

    def _interval(self):
        return self.interval or self.host.cfg.main.queue_interval

    def _arm_interval(self):
        """`-q30m` / `queue_interval`: flush every interval, as masqmail's daemon does."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self._interval():
            self.timer = self.host.loop.call_later(self._interval(), self._periodic)

    def _periodic(self):
        self.timer = None
        self.scheduler.flush()
        self._arm_interval()

    def stop(self):
        """Stop the timers and close the resolver."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.scheduler is not None:
            self.host.unsubscribe(MessagesQueued, self.scheduler.queued)
            self.host.unsubscribe(RouteChanged, self.scheduler.route_changed)
            self.scheduler.stop()
        if self.agents is not None:
            self.agents.close()

    def reload(self, cfg):
        """Use the new configuration's routes and mailboxes."""
        self.agents.close()
        self.agents = Agents(self.host, forward=self.forward)
        self.scheduler.agents = self.agents
        self._stage()
        self.scheduler.kick()
        self._arm_interval()

    def forward(self, job, addresses):
        """Queue the job's message anew for remote addresses an alias named."""
        writer = self.host.queue.writer(own=True)
        try:
            for chunk in job.open_body():
                writer.write(chunk)
            writer.commit(Envelope(job.sender, list(addresses), received=job.received,
                                   protocol="local", origin="alias",
                                   crlf=job.crlf and not job.binary))
        except spool.LogError as exc:
            writer.abort()
            return Outcome.temp("4.3.0", "cannot queue forwarded copy: %s" % exc)
        self.host.queue.want_sync(lambda error: self.scheduler.kick([writer.id]))
        return Outcome.ok("forwarded to %s" % ", ".join(addresses)[:200])
