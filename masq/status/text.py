"""`masq status`: the status document from the daemon (or the spool), and as text.

Without a daemon the document is built from the configuration and the spool: routes show
what their detector would start from (only `always` is known online) and counters are zero.
"""

import time

from masq.base.clock import Clock
from masq.daemon import control
from masq.cli import common
from masq.online.state import OnlineState
from masq.status import model


def status_document(cfg):
    """Return the status document, from the daemon if one runs."""
    reply = control.request(cfg.main.spool_dir, "status", timeout=10)
    if reply and reply.get("ok"):
        return reply["status"]
    queue = common.open_queue(cfg, "read")
    try:
        now = Clock().time()        # `masq status` without a daemon: no loop, the real clock
        routes = OnlineState(cfg.routes, now).to_json()
        return model.document(cfg.main.hostname, None, routes, queue.listed(),
                              model.new_counters(), (), now=now)
    finally:
        queue.close()


def render(doc):
    """Return the status document as text for a terminal."""
    uptime = doc["uptime"]
    lines = ["masq %s on %s: %s" % (doc.get("masq", ""), doc["hostname"],
                                    "up %ds" % uptime if uptime is not None
                                    else "no daemon running")]
    lines.append("routes:")
    for route in doc["routes"] or [{"name": "(none configured)", "detector": "",
                                    "online": False, "last_error": None}]:
        state = "online" if route["online"] else "offline"
        extra = "  last error: %s" % route["last_error"] if route.get("last_error") else ""
        lines.append("  %-16s %-8s %s%s" % (route["name"], state, route["detector"], extra))
    counters = doc["counters"]
    lines.append("counters: " + ", ".join("%s %d" % (k, counters[k]) for k in model.COUNTERS))
    deliveries = doc.get("deliveries") or []
    if deliveries:
        lines.append("last deliveries:")
    for event in deliveries[-10:]:
        lines.append("  %s %s <%s> %s via %s: %s" % (
            time.strftime("%H:%M:%S", time.localtime(event["time"])), event["id"],
            event["to"], event["status"], event["relay"], event["text"]))
    lines.append("queue: %d message(s)" % len(doc["queue"]))
    from masq.cli.mailq import format_message
    for msg in doc["queue"]:
        lines.append(format_message(msg).rstrip("\n"))
    return "\n".join(lines) + "\n"
