"""The host interface: what a component may use from the program running it, and owes it.

A host is the program around the components: the daemon (`daemon/host.py`), the one-shot
queue run (`daemon/runner.py`), the stdio SMTP session (`inbound/stdio.py`) and the tests'
fake (`tests/fakes.py`). Each is a `Host`. A component (an SMTP listener, the delivery,
the online detectors, the status file and page) is built from its host, `Component(host)`,
and only reads what this class lists; it never sets an attribute of its host. It hears of
what happens elsewhere through typed events: `host.subscribe(MessagesQueued, callback)`
in start(), `host.unsubscribe(...)` in stop(); `host.publish(event)` calls every callback
subscribed to the event's type, in the order they subscribed, at once.

Owns the event types and their dispatch; builds nothing (each host opens its own queue,
loop and logger) and imports nothing of masq, so every layer may import it.
"""

from collections import namedtuple

# The events. A new kind of event is a new type here, with the component that publishes it
# and the ones that subscribe named in its comment.

# Messages were committed to the queue (by an SMTP session, or by `sendmail` and poked at
# the daemon): the delivery looks at them, the polled detectors look again.
MessagesQueued = namedtuple("MessagesQueued", "ids")

# Messages were removed (`masq rm`, the status page).
MessagesRemoved = namedtuple("MessagesRemoved", "ids")

# A flush was asked for (`masq flush [ROUTE]`, the status page): route is a name or None
# for every route. The polled detectors look again before the scheduler runs.
FlushAsked = namedtuple("FlushAsked", "route")

# A route went online or offline (its detector, or `masq online`): route is its
# online.state.RouteState. The scheduler flushes a route that came online.
RouteChanged = namedtuple("RouteChanged", "route")


class Host:
    """What a component may use. Attributes, read-only to components:

    loop      the loop (masq.base.loop.Loop); ask its clock: `loop.time()`, `loop.now`
    cfg       the configuration now in force (masq.config.schema.Config); it is replaced,
              not changed, on reload: read `host.cfg` again rather than keep it
    queue     the queue facade (masq.queue.spool.Queue)
    log       the logger (masq.base.logger.Logger)
    online    the routes' online state (masq.online.state.OnlineState), or None where no
              route is used (`-bs`); replaced on reload like cfg
    counters  the counters of the status document: a component adds to the ones it owns
              ('accepted', 'delivered', 'bounced')
    scheduler the delivery's scheduler (flush(), waiting_routes()), or None where no
              delivery runs
    fetcher   the fetch component (fetch(), login()), or None where nothing fetches
    """

    scheduler = None
    fetcher = None

    def __init__(self, cfg, loop, log, queue=None, online=None, counters=None):
        self.cfg = cfg
        self.loop = loop
        self.log = log
        self.queue = queue
        self.online = online
        self.counters = counters if counters is not None else {}
        self._subscribers = {}     # event type -> [callback]

    def subscribe(self, kind, callback):
        """Call callback(event) for every event of type kind published from now on."""
        self._subscribers.setdefault(kind, []).append(callback)

    def unsubscribe(self, kind, callback):
        """Stop calling callback for events of type kind (nothing if it was not subscribed)."""
        callbacks = self._subscribers.get(kind, [])
        if callback in callbacks:
            callbacks.remove(callback)

    def publish(self, event):
        """Call the callbacks subscribed to the type of event, in subscription order."""
        for callback in list(self._subscribers.get(type(event), ())):
            callback(event)

    def status(self, limit=None):
        """Return the status document (the daemon only: its status file and page use it)."""
        raise NotImplementedError


class Component:
    """What a component owes its host: built as cls(host, ...), then these three."""

    def start(self):
        """Begin work: register with the loop, subscribe to events."""

    def stop(self):
        """End work: cancel timers, close sockets, unsubscribe."""

    def reload(self, cfg):
        """Adopt cfg, the new configuration (`host.cfg` is already cfg)."""
