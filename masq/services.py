"""The daemon's components, in start order: who listens, who delivers, who reports.

Each component is built from the daemon (its loop, queue, configuration, logger) and has
start(), stop() and reload(config). Adding a service means adding one line here.
"""


def make(daemon):
    """Return the components the daemon runs for its configuration."""
    from masq.inbound.listener import Listener
    from masq.online.detectors import Detectors
    from masq.outbound.delivery import Delivery
    from masq.status.file import StatusFile
    from masq.status.web import StatusWeb
    components = [StatusFile(daemon), Delivery(daemon), StatusWeb(daemon)]
    components.append(Detectors(daemon))           # after Delivery: it flushes on online
    shared = {}
    for url in daemon.cfg.main.listen:
        if url.startswith("qmtp://"):
            daemon.log.warning("listen %s: QMTP is not supported yet; skipped", url)
            continue
        components.append(Listener(daemon, url, shared))
    return components
