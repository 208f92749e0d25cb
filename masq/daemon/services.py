"""The daemon's components, in start order: who listens, who delivers, who reports.

Each component is built from the daemon, its host (masq.base.host lists what it may use),
and has start(), stop() and reload(config). Adding a service means adding one line here.
"""

from collections import namedtuple

from masq.base.host import Component

# What make returns: every component in start order, and the two the daemon offers its
# components (as host.scheduler and host.fetcher).
Services = namedtuple("Services", "components delivery fetcher")


def make(daemon):
    """Return the Services the daemon runs for its configuration."""
    from masq.inbound.listener import Listener
    from masq.online.detectors import Detectors
    from masq.outbound.delivery import Delivery
    from masq.status.file import StatusFile
    delivery = Delivery(daemon, daemon.interval)
    components = [StatusFile(daemon), delivery,
                  WhenConfigured(daemon, "status_listen", _status_web)]
    components.append(Detectors(daemon))           # after Delivery: it flushes on online
    from masq.inbound.fetch import Fetcher
    fetcher = Fetcher(daemon)
    components.append(fetcher)                     # after Delivery: flush, then fetch
    shared = {}
    for url in daemon.cfg.main.listen:
        if url.startswith(("qmtp://", "qmqp://")):
            from masq.inbound.qmtp import QMTPListener
            components.append(QMTPListener(daemon, url, shared))
        else:
            components.append(Listener(daemon, url, shared))
    return Services(components, delivery, fetcher)


def _status_web(daemon):
    from masq.status.web import StatusWeb
    return StatusWeb(daemon)


class WhenConfigured(Component):
    """A component built only once its option is set: a daemon without a status page never
    imports the page, the HTTP engine or hashlib (several MB on a router)."""

    def __init__(self, daemon, option, make):
        self.daemon = daemon
        self.option = option
        self.make = make
        self.real = None

    def start(self):
        """Start the real component if the option is set."""
        if getattr(self.daemon.cfg.main, self.option):
            self.real = self.make(self.daemon)
            self.real.start()

    def stop(self):
        """Stop the real component, if any."""
        if self.real is not None:
            self.real.stop()

    def reload(self, cfg):
        """Pass the reload on, or start the component if the option appeared."""
        if self.real is not None:
            self.real.reload(cfg)
        elif getattr(cfg.main, self.option):
            self.real = self.make(self.daemon)
            self.real.start()
