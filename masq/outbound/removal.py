"""Remove queued messages at a user's request, in a running daemon: queue, log, scheduler.

Used by `masq rm` (through the control socket) and the status page's delete button; who
may remove what is decided by the caller (masq.policy.users.may_remove). Each removed
message gets one delivery-log line; the answer comes once the removal is durable, and the
host's components hear about it (a MessagesRemoved event).
"""

from masq.base.host import MessagesRemoved
from masq.outbound import maillog


def remove_messages(host, ids, who, may_remove, answer):
    """Remove the queued messages ids that may_remove(msg) allows; answer once durable.

    The answer is {"ok", "removed": [ids], "errors": [texts]}; `who` goes into the log record.
    Used by `masq rm` (control socket) and the status page."""
    removed, errors = host.queue.remove_each(ids, may_remove, who)
    for msgid in removed:
        maillog.removed(host.log, msgid, "by %s" % who)
    if removed:
        host.queue.want_sync(lambda error: answer({"ok": error is None, "removed": removed,
                                             "errors": errors + _sync_error(error)}))
        host.publish(MessagesRemoved(tuple(removed)))
    else:
        answer({"ok": not errors, "removed": removed, "errors": errors})


def _sync_error(error):
    return [] if error is None else [str(error)]
