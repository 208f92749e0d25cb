"""What a delivery outcome does to the queue: records, retry times, bounces, warnings.

Owns the retry policy (the first retry after `retry_interval`, doubling up to `retry_max`;
a recipient still failing `queue_lifetime` after arrival bounces at its next attempt),
delay warnings (after a failed attempt, one for each `warn_intervals` mark the message's age
has passed since the last warning, as masqmail), and who gets a DSN: the envelope sender, never
the null sender; a bounce that fails goes to postmaster once, and a failed bounce to
postmaster is only logged. An attempt that does not count (the link went away while it
ran) changes no counter and sets no retry time: the recipient waits for the route to come
back online.

Every change is a queue record (a new message for a DSN first, then the job's RESULT and
WARNED records in one write); the caller syncs them with the next group fdatasync. Times
come from the caller (the loop's clock): nothing here reads a clock.
How it fails: a write that fails raises LogError (masq.queue.spool) before any RESULT is
written, so the caller may record the same outcomes again later; the worst case is a DSN
queued twice.
"""

from masq.outbound import maillog
from masq.outbound.outcome import Outcome
from masq.queue.envelope import BOUNCED, DEFERRED, DELIVERED, Envelope, Recipient
from masq.queue.spool import LogError

POSTMASTER_ORIGIN = "double-bounce"


def backoff(attempts, first, ceiling):
    """Return the delay before attempt number attempts + 1."""
    return min(ceiling, first * (2 ** max(0, attempts - 1)))


def new_state(host, env, index, outcome, route_name, now, counts=True):
    """Return the Recipient that recipient index becomes after outcome."""
    old = env.recipients[index]
    main = host.cfg.main
    rcpt = Recipient(old.address, old.orcpt, old.notify, old.state, old.attempts,
                     old.next_attempt, outcome.text, route_name, now)
    if outcome.is_ok:
        rcpt.state, rcpt.attempts, rcpt.next_attempt = DELIVERED, old.attempts + 1, None
        rcpt.last_error = None
    elif outcome.kind == "permfail":
        rcpt.state, rcpt.attempts, rcpt.next_attempt = BOUNCED, old.attempts + 1, None
    elif not counts:
        rcpt.next_attempt = None
    elif now - env.received >= main.queue_lifetime:
        rcpt.state, rcpt.attempts, rcpt.next_attempt = BOUNCED, old.attempts + 1, None
        rcpt.last_error = "gave up after %d attempts: %s" % (old.attempts + 1, outcome.text)
    else:
        rcpt.state, rcpt.attempts = DEFERRED, old.attempts + 1
        rcpt.next_attempt = now + backoff(rcpt.attempts, main.retry_interval, main.retry_max)
    return rcpt


def record(host, msg, indices, outcomes, route_name, now, counts):
    """Queue the DSNs a job's outcomes call for, then append its RESULT (and WARNED)
    records in one write; return the DSNs' ids."""
    env = msg.envelope
    failed, delayed, rows = [], [], []
    for index, outcome in zip(indices, outcomes):
        rcpt = new_state(host, env, index, outcome, route_name, now,
                         counts and outcome.counts)
        rows.append((index, rcpt))
        if rcpt.state == BOUNCED:
            failed.append((rcpt, outcome if outcome.kind == "permfail"
                           else Outcome.perm(outcome.status, rcpt.last_error)))
        elif rcpt.state == DEFERRED:
            delayed.append((rcpt, outcome))
    queued = [_bounce(host, msg, failed, now)] if failed else []
    warned = None
    if delayed and warning_due(host.cfg.main, env, now):
        queued.append(_warn(host, msg, delayed, now))
        warned = now
    host.queue.record_results(msg.id, rows, warned)
    for (_, rcpt), outcome in zip(rows, outcomes):
        maillog.result(host, msg, rcpt, outcome, route_name, now)
        host.counters[{DELIVERED: "delivered", BOUNCED: "bounced"}.get(
            rcpt.state, "deferred")] += 1
    return [dsn for dsn in queued if dsn]


def _wants(rcpt, what):
    notify = (rcpt.notify or "").upper()
    return not notify or what in notify.split(",")


def _bounce(host, msg, failed, now):
    failed = [(r, o) for r, o in failed if _wants(r, "FAILURE")]
    if not failed:
        return None
    env = msg.envelope
    if env.sender:
        target, origin = env.sender, "bounce"
    elif env.origin != POSTMASTER_ORIGIN:
        target, origin = "postmaster@%s" % host.cfg.main.hostname, POSTMASTER_ORIGIN
    else:
        host.log.error("%s: double bounce to postmaster failed; giving up", msg.id)
        return None
    return _queue_dsn(host, msg, failed, "failed", target, origin, now)


def warning_due(main, env, now):
    """Return True if a delay warning falls due for env at now: its age has passed a
    `warn_intervals` mark that no earlier warning covered (never to the null sender)."""
    age = now - env.received
    passed = [mark for mark in main.warn_intervals if mark <= age]
    if not env.sender or not passed:
        return False
    return env.warned is None or env.warned < env.received + max(passed)


def _warn(host, msg, delayed, now):
    delayed = [(r, o) for r, o in delayed if _wants(r, "DELAY")]
    if not delayed:
        return None
    until = msg.envelope.received + host.cfg.main.queue_lifetime
    return _queue_dsn(host, msg, delayed, "delayed", msg.envelope.sender, "warning", now, until)


def _queue_dsn(host, msg, rows, action, target, origin, now, until=None):
    writer = host.queue.writer(own=True)
    dsn_id = writer.id
    try:
        from masq.outbound import bounce, dsn_text     # at the first bounce
        template = dsn_text.for_action(host.cfg.main, action, host.log)
        for chunk in bounce.build(host.cfg.main.hostname, msg.id, msg.envelope, rows,
                                  host.queue.body(msg.id), action, until, now, template):
            writer.write(chunk)
        writer.commit(Envelope("", [target], received=now, protocol="local", origin=origin))
    except LogError:
        writer.abort()
        raise
    maillog.dsn_queued(host.log, msg.id, action, dsn_id, target)
    return dsn_id
