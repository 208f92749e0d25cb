"""What a delivery outcome does to the queue: records, retry times, bounces, warnings.

Owns the retry policy (the first retry after `retry_interval`, doubling up to `retry_max`;
a recipient still failing `queue_lifetime` after arrival bounces at its next attempt),
delay warnings (one, after `delay_warning`), and who gets a DSN: the envelope sender, never
the null sender; a bounce that fails goes to postmaster once, and a failed bounce to
postmaster is only logged. An attempt that does not count (the link went away while it
ran) changes no counter and sets no retry time: the recipient waits for the route to come
back online.

Every change is a queue record (RESULT, WARNED, or a new message for a DSN); the caller
syncs them with the next group fdatasync.
"""

from masq import maillog
from masq.outbound import bounce
from masq.outbound.outcome import Outcome
from masq.queue.envelope import BOUNCED, DEFERRED, DELIVERED, Envelope, Recipient

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
    """Append RESULT records for a job's outcomes and queue DSNs; return the DSNs' ids."""
    env = msg.envelope
    failed, delayed = [], []
    for index, outcome in zip(indices, outcomes):
        rcpt = new_state(host, env, index, outcome, route_name, now,
                         counts and outcome.counts)
        host.queue.record_result(msg.id, index, rcpt)
        maillog.result(host, msg, rcpt, outcome, route_name, now)
        host.counters[{DELIVERED: "delivered", BOUNCED: "bounced"}.get(
            rcpt.state, "deferred")] += 1
        if rcpt.state == BOUNCED:
            failed.append((rcpt, outcome if outcome.kind == "permfail"
                           else Outcome.perm(outcome.status, rcpt.last_error)))
        elif rcpt.state == DEFERRED:
            delayed.append((rcpt, outcome))
    queued = [_bounce(host, msg, failed, now)] if failed else []
    if delayed and _warning_due(host, env, now):
        queued.append(_warn(host, msg, delayed, now))
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


def _warning_due(host, env, now):
    return (env.sender and env.warned is None
            and now - env.received >= host.cfg.main.delay_warning)


def _warn(host, msg, delayed, now):
    delayed = [(r, o) for r, o in delayed if _wants(r, "DELAY")]
    if not delayed:
        return None
    until = msg.envelope.received + host.cfg.main.queue_lifetime
    dsn = _queue_dsn(host, msg, delayed, "delayed", msg.envelope.sender, "warning", now, until)
    host.queue.mark_warned(msg.id, now)
    return dsn


def _queue_dsn(host, msg, rows, action, target, origin, now, until=None):
    writer = host.queue.writer()
    dsn_id = writer.id
    for chunk in bounce.build(host.cfg.main.hostname, msg.id, msg.envelope, rows,
                              host.queue.body(msg.id), action, until, now):
        writer.write(chunk)
    writer.commit(Envelope("", [target], received=now, protocol="local", origin=origin))
    maillog.dsn_queued(host.log, msg.id, action, dsn_id, target)
    return dsn_id
