"""A queue run without a daemon: `runq`, `masq flush`, and `sendmail`'s delivery at once.

Owns a one-shot host: the queue opened as the single queue runner (a daemon that starts
meanwhile refuses to, with exit 75: runs are short), the routes' online state from
synchronous probes, a loop, the agents and a scheduler, run until the flush is done.
Results are synced before returning.
"""


from masq.base.logger import Logger
from masq.base.loop import Loop
from masq.online import probe
from masq.online.state import OnlineState
from masq.outbound.delivery import Delivery
from masq.queue.opening import open_queue
from masq.status import model


class RunnerHost:
    """What the scheduler needs, for one run."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.loop = Loop()
        self.log = Logger(cfg.main.log, cfg.main.log_level, clock=self.loop.clock)
        self.queue = open_queue(cfg, "runner", report=self.log.warning, clock=self.loop.clock)
        self.online = OnlineState(cfg.routes, self.loop.time())
        for route in self.online.routes:
            route.detected = probe.probe(route.name, route.detector, cfg.route(route.name))
        self.counters = model.new_counters()
        self.listeners = {}
        self.scheduler = None

    def close(self):
        """Sync and release the queue and the loop."""
        self.queue.sync_now()
        self.queue.close()
        self.loop.close()


def run_once(cfg, route=None, forced=False, ids=None):
    """Run the queue once (through route only, or for messages ids only); return a summary."""
    host = RunnerHost(cfg)
    delivery = Delivery(host)
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
