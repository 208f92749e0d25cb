"""The status document (masq status --json, /status.json): one dict built from the queue, routes and counters.

The same function serves the daemon (`GET /status.json`, the control socket, the status
file) and `masq status` when no daemon runs (then routes come from the configuration and
the counters are empty). Fields may be added; none may change meaning.
"""


from masq import __version__

COUNTERS = ("accepted", "delivered", "deferred", "bounced")


def new_counters():
    """Return a fresh set of counters, all zero."""
    return dict.fromkeys(COUNTERS, 0)


def message_json(msg, now, waits=None):
    """Return one queued message's part of the status document.

    waits(sender, recipient) says what a recipient waits for (masq.outbound.waits_for);
    without it `waiting` is null."""
    env = msg.envelope
    return {
        "id": msg.id, "sender": env.sender, "size": env.size, "received": env.received,
        "age": max(0.0, now - env.received),
        "quarantined": {"filter": env.held_by, "reason": msg.quarantined}
        if msg.quarantined else None,
        "client": env.client, "origin": env.origin,
        "recipients": [{
            "address": r.address, "state": r.state, "route": r.route,
            "attempts": r.attempts, "next_attempt": r.next_attempt,
            "last_error": r.last_error,
            "waiting": waits(env.sender, r) if waits else None} for r in env.recipients],
    }


def document(hostname, started, routes, messages, counters, log_lines=(), *, now,
             deliveries=(), queue_total=None, fetch=(), waits=None):
    """Return the status document (deliveries: the last delivery events, oldest first;
    fetch: one entry per fetch source, see masq.inbound.fetch; waits: as message_json's).

    `queue` lists messages; `queue_total` counts the whole queue (more than `queue` lists
    when the caller passed only the first few, as the status file does)."""
    return {
        "version": "1.0", "masq": __version__, "hostname": hostname,
        "uptime": None if started is None else round(now - started, 3),
        "routes": routes, "queue": [message_json(m, now, waits) for m in messages],
        "queue_total": len(messages) if queue_total is None else queue_total,
        "counters": dict(counters), "log": list(log_lines),
        "deliveries": [dict(event) for event in deliveries],
        "fetch": [dict(source) for source in fetch],
    }
