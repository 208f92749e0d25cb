"""The delivery log: one line per mail event, in Postfix's format (docs/LOG.md).

Owns the text of the events a mail administrator greps for: a message received (from SMTP
or `sendmail`), a command refused by a check in the dialogue, a recipient delivered, deferred, bounced or expired, a DSN queued, a
message removed. Lines go through the Logger (syslog, stderr or a file, per `option log`);
recipient results are also kept in the Logger's ring for the status page and `masq status`.

Does not decide anything: callers pass what happened. Hostile input: addresses and remote
replies end up in the line; the Logger escapes CR and LF, and the reply text is flattened.
Never raises out of a write (the Logger drops what it cannot write).
"""

import time

SENT, DEFERRED, BOUNCED, EXPIRED = "sent", "deferred", "bounced", "expired"
_STATE_STATUS = {"delivered": SENT, "deferred": DEFERRED, "queued": DEFERRED}


def received(log, msgid, sender, size, nrcpt, client=None, uid=None):
    """Log a message taken into the queue (client 'host[ip]', or a sendmail uid)."""
    who = "client=%s" % client if client is not None else "uid=%s" % uid
    log.info("%s: from=<%s>, size=%d, nrcpt=%d, %s", msgid, sender, size, nrcpt, who)


def result(host, msg, rcpt, outcome, route_name, now):
    """Log what one delivery attempt did to recipient rcpt (its new state) of msg."""
    status = _status(rcpt, outcome)
    relay = getattr(outcome, "relay", None) or _relay(host, route_name)
    delay = max(0.0, now - msg.envelope.received)
    text = " ".join(str(outcome.text).split())
    extra = ""
    if status == DEFERRED:
        extra = ", next=%s" % (_when(rcpt.next_attempt) if rcpt.next_attempt
                               else "when-online")
    host.log.info("%s: to=<%s>, relay=%s, delay=%s, dsn=%s, status=%s (%s) route=%s%s",
                  msg.id, rcpt.address, relay, _delay(delay), outcome.status, status, text,
                  route_name, extra)
    host.log.delivery({"time": now, "id": msg.id, "to": rcpt.address, "route": route_name,
                       "relay": relay, "delay": round(delay, 3), "dsn": outcome.status,
                       "status": status, "text": text})
    if msg.envelope.done:
        removed(host.log, msg.id)


def rejected(log, stage, client, reply, sender, rcpt=None, proto="ESMTP", helo=None):
    """Log a command refused by a check in the dialogue (no message id yet: NOQUEUE)."""
    text = " ".join(reply.to_bytes().decode("utf-8", "replace").split())
    to = " to=<%s>" % rcpt if rcpt is not None else ""
    log.info("NOQUEUE: reject: %s from %s: %s; from=<%s>%s proto=%s helo=<%s>", stage,
             client, text, sender, to, proto, helo or "")


def dsn_queued(log, msgid, action, dsn_id, target):
    """Log a bounce or delay warning queued for target as message dsn_id."""
    what = "non-delivery" if action == "failed" else "delay"
    log.info("%s: sender %s notification: %s to=<%s>", msgid, what, dsn_id, target)


def removed(log, msgid, why=None):
    """Log a message leaving the queue (delivered or bounced to the end, or removed)."""
    log.info("%s: removed%s", msgid, " (%s)" % why if why else "")


def _status(rcpt, outcome):
    if rcpt.state == "bounced":
        return BOUNCED if outcome.kind == "permfail" else EXPIRED
    return _STATE_STATUS.get(rcpt.state, DEFERRED)


def _relay(host, route_name):
    if route_name == "local":
        return "local"
    route = host.cfg.route(route_name)
    if route is not None and route.pipe:
        return "pipe"
    return "none"


def _delay(seconds):
    return "%.2f" % seconds if seconds < 100 else "%d" % seconds


def _when(timestamp):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(timestamp))
