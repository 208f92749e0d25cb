"""`masq status`: the status document from the daemon (or the spool), and as text.

The text of one queued message (`format_message`) is also what `mailq` prints.

Without a daemon the document is built from the configuration and the spool: routes show
what their detector would start from (only `always` is known online) and counters are zero.
"""

import time

from masq.base import control
from masq.base.clock import Clock
from masq.online.state import OnlineState
from masq.outbound import waits_for
from masq.queue.opening import open_queue
from masq.status import model


def status_document(cfg):
    """Return the status document, from the daemon if one runs."""
    reply = control.request(cfg.main.spool_dir, "status", timeout=10)
    if reply and reply.get("ok"):
        return reply["status"]
    queue = open_queue(cfg, "read")
    try:
        now = Clock().time()        # `masq status` without a daemon: no loop, the real clock
        routes = OnlineState(cfg.routes, now).to_json()
        fetch = [{"name": f.name, "protocol": f.protocol, "server": f.server,
                  "route": f.route, "running": False, "last_run": None, "taken": 0,
                  "taken_total": 0, "left": 0, "last_error": None} for f in cfg.fetches]
        return model.document(cfg.main.hostname, None, routes, queue.listed(),
                              model.new_counters(), (), now=now, fetch=fetch,
                              waits=waits_for.for_config(cfg, None, now))
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
    if doc.get("fetch"):
        lines.append("fetch:")
    for source in doc.get("fetch") or ():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(source["last_run"])) \
            if source.get("last_run") else "never"
        extra = "  last error: %s" % source["last_error"] if source.get("last_error") else ""
        lines.append("  %-16s %-5s %s  last run %s, %d taken%s" % (
            source["name"], source["protocol"], source["server"], when, source["taken"],
            extra))
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
    for msg in doc["queue"]:
        lines.append(format_message(msg).rstrip("\n"))
    return "\n".join(lines) + "\n"


def _quarantined(held):
    if not held:
        return ""
    by = " (filter %s)" % held["filter"] if held.get("filter") else ""
    return "  QUARANTINED%s: %s" % (by, held["reason"])


def format_message(msg):
    """Return the lines mailq prints for one message of the status document."""
    lines = ["%-14s %8s %6s  <%s>%s" % (msg["id"], _size(msg["size"]), _age(msg["age"]),
                                        msg["sender"],
                                        _quarantined(msg.get("quarantined")))]
    for rcpt in msg["recipients"]:
        line = "    %-9s <%s>" % (rcpt["state"], rcpt["address"])
        extra = []
        if rcpt.get("attempts"):
            extra.append("%d attempt%s" % (rcpt["attempts"], "" if rcpt["attempts"] == 1 else "s"))
        if rcpt.get("last_error"):
            extra.append(rcpt["last_error"])
        waiting = waits_for.describe(rcpt.get("waiting"), _clock)
        if waiting:
            extra.append(waiting)
        if extra:
            line += "  (%s)" % "; ".join(extra)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _clock(when):
    return time.strftime("%H:%M", time.localtime(when))


def _size(size):
    for unit in ("", "K", "M"):
        if size < 10240 or unit == "M":
            return "%d%s" % (size, unit)
        size //= 1024
    return str(size)


def _age(seconds):
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return "%d%s" % (seconds // length, unit)
    return "%ds" % seconds
