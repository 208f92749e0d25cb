"""A queue run without a daemon: `runq`, `masq flush`, and `sendmail`'s delivery at once.

Owns a one-shot host: the queue opened as the single queue runner (a daemon that starts
meanwhile refuses to, with exit 75: runs are short), the routes' online state from
synchronous probes, a loop, the agents and a scheduler, run until the flush is done.
Results are synced before returning.
"""


from masq.base.host import Host
from masq.base.logger import Logger
from masq.base.loop import Loop
from masq.online import probe
from masq.online.state import OnlineState
from masq.outbound.delivery import Delivery
from masq.queue.opening import open_queue
from masq.status import model


class RunnerHost(Host):
    """The host of the delivery, for one run."""

    def __init__(self, cfg):
        loop = Loop()
        log = Logger(cfg.main.log, cfg.main.log_level, clock=loop.clock)
        super().__init__(cfg, loop, log, counters=model.new_counters())
        self.queue = open_queue(cfg, "runner", report=log.warning, clock=loop.clock)
        self.online = OnlineState(cfg.routes, loop.time(), self.publish)
        for route in self.online.routes:
            route.detected = probe.probe(route.name, route.detector, cfg.route(route.name))
        self.delivery = Delivery(self)

    @property
    def scheduler(self):
        """Return the delivery's scheduler (None before it starts)."""
        return self.delivery.scheduler

    def close(self):
        """Sync and release the queue and the loop."""
        self.queue.sync_now()
        self.queue.close()
        self.loop.close()


def run_once(cfg, route=None, forced=False, ids=None):
    """Run the queue once (through route only, or for messages ids only); return a summary."""
    host = RunnerHost(cfg)
    delivery = host.delivery
    summary = {}
    try:
        delivery.start(look=False)
        host.loop.at_turn_end(host.queue.sync_now)
        done = []
        delivery.scheduler.flush(route, forced, done.append, ids=ids)
        scheduler, queue = delivery.scheduler, host.queue
        while not done or not scheduler.idle() or scheduler.kicked or queue.sync_pending():
            host.loop.run_once()
        summary = done[0]
    finally:
        delivery.stop()
        host.close()
    return summary
