"""`masq release ID...`: let messages a content filter quarantined go on, past that filter.

Owns what a release writes: one COMMIT over the same text whose envelope drops the
quarantine and counts the filter that held the message as passed, so the message goes on
to the next filter, or to routing. Only a filter's quarantine is released: a message
quarantined for damage (docs/QUEUE.md) stays until removed. Who may release is decided by
the caller (root, the daemon's user or a trusted user: masq.policy.users.trusted). Nothing
is synced here.
"""

from masq.queue.spool import LogError


def release_each(queue, ids):
    """Release the quarantined messages ids; return (released ids, error texts)."""
    released, errors = [], []
    for msgid in ids:
        msg = queue.get(msgid)
        try:
            env = msg and msg.envelope
            if env is None:
                errors.append("%s: no such message" % msgid)
            elif not msg.quarantined or not env.held_by:
                errors.append("%s: not quarantined by a filter" % msgid)
            else:
                queue.recommit(msgid, env.copy(quarantined=None, held_by=None,
                                               filtered=env.filtered + 1))
                released.append(msgid)
        except LogError as exc:
            errors.append("%s: %s" % (msgid, exc))
    return released, errors
