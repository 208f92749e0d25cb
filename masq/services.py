"""The daemon's components, in start order: who listens, who delivers, who reports.

Each component is built from the daemon (its loop, queue, configuration, logger) and has
start(), stop() and reload(config). Adding a service means adding one line here.
"""


def make(daemon):
    """Return the components the daemon runs for its configuration."""
    from masq.status.file import StatusFile
    components = [StatusFile(daemon)]
    return components
