"""`mailq` / `-bp` / `masq queue` and `mailrm` / `-Mrm` / `masq rm`.

Asks the daemon when one runs (it holds the queue and knows what is in flight); reads or
changes the spool directly otherwise. The listing shows, per message: id, size, age and
sender, then each recipient with its state, attempts, last error, and what it waits for
(its route, and why it is not leaving: offline, retry at HH:MM, no route takes it).
`masq queue --format masqmail` and `mailq -v` print masqmail's lines instead.
"""

from masq.base import control, exits
from masq.base.clock import Clock
from masq.policy.users import privileged, user_name
from masq.queue import spool
from masq.outbound import waits_for
from masq.queue.opening import open_queue
from masq.status import model
from masq.status.text import format_message


def listing(cfg):
    """Yield the queue part of the status document, message by message (from the daemon,
    or the spool: one envelope read back at a time, so 50,000 waiting cost no more)."""
    reply = control.request(cfg.main.spool_dir, "status", timeout=10)
    if reply and reply.get("ok"):
        yield from reply["status"]["queue"]
        return
    queue = open_queue(cfg, "read")
    try:
        now = Clock().time()        # mailq without a daemon: no loop, the real clock
        waits = waits_for.for_config(cfg, None, now)       # no daemon: online unknown
        for msg in queue.listed():
            yield model.message_json(msg, now, waits)
    finally:
        queue.close()


def run(cfg, out, style="masq"):
    """Print the queue listing to out (style "masqmail": masqmail's lines); return the
    exit status."""
    count = 0
    for msg in listing(cfg):
        out.write(format_message(msg) if style == "masq" else masqmail_lines(msg))
        count += 1
    if style == "masqmail":
        if not count:
            out.write("mail queue is empty.\n")
        return exits.OK
    if not count:
        out.write("mail queue is empty\n")
    else:
        out.write("%d message%s in the queue\n" % (count, "" if count == 1 else "s"))
    return exits.OK


_MASQMAIL_MARK = {"delivered": "=>", "bounced": "!="}


def masqmail_lines(msg):
    """Return one message as masqmail's mailq printed it: `ID <= <sender> size=N age=A
    [host=IP] [ident=USER]`, then `==` (pending), `=>` (delivered) or `!=` (failed) and
    each recipient, so that scripts written for masqmail keep working."""
    head = "%s <= <%s> size=%d age=%s" % (msg["id"], msg["sender"], msg["size"],
                                          _masqmail_age(msg["age"]))
    if msg.get("client"):
        head += " host=%s" % msg["client"]
    origin = msg.get("origin")
    if origin and not origin.startswith("fetch:"):
        head += " ident=%s" % origin
    lines = [head] + ["%s <%s>" % (_MASQMAIL_MARK.get(r["state"], "=="), r["address"])
                      for r in msg["recipients"]]
    return "\n".join(lines) + "\n\n"


def _masqmail_age(seconds):
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "%.1f%s" % (seconds / size, unit)
    return "%ds" % seconds


def remove(cfg, ids):
    """Remove the messages named by ids; return the exit status."""
    if not ids:
        raise exits.Failure("name the message ids to remove", exits.USAGE)
    reply = control.request(cfg.main.spool_dir, "rm", ids=ids)
    if reply is None:
        reply = _remove_offline(cfg, ids)
    for msgid in reply.get("removed", ()):
        print("%s: removed" % msgid)
    errors = reply.get("errors") or ([reply["error"]] if reply.get("error") else [])
    if errors:
        raise exits.Failure("; ".join(errors), exits.DATAERR)
    return exits.OK


def _log_removed(cfg, ids, who):
    from masq.outbound import maillog
    from masq.base.logger import Logger
    log = Logger(cfg.main.log, cfg.main.log_level)
    for msgid in ids:
        maillog.removed(log, msgid, "by %s" % who)
    log.close()


def _remove_offline(cfg, ids):
    queue = open_queue(cfg, "runner")
    try:
        me = user_name()
        removed, errors = queue.remove_each(
            ids, lambda msg: privileged(cfg) or msg.envelope.origin == me, me)
        if removed:
            queue.sync()
            _log_removed(cfg, removed, me)
        return {"removed": removed, "errors": errors}
    except spool.LogError as exc:
        raise exits.Failure(str(exc), exits.TEMPFAIL) from None
    finally:
        queue.close()



def release(cfg, ids):
    """Release the quarantined messages named by ids (docs/FILTERS.md); return the status."""
    if not ids:
        raise exits.Failure("name the message ids to release", exits.USAGE)
    reply = control.request(cfg.main.spool_dir, "release", ids=ids)
    if reply is None:
        reply = _release_offline(cfg, ids)
    for msgid in reply.get("released", ()):
        print("%s: released" % msgid)
    errors = reply.get("errors") or ([reply["error"]] if reply.get("error") else [])
    if errors:
        raise exits.Failure("; ".join(errors), exits.NOPERM if reply.get("denied")
                            else exits.DATAERR)
    return exits.OK


def _release_offline(cfg, ids):
    if not privileged(cfg):
        return {"error": "permission denied", "denied": True}
    from masq.outbound.release import release_each
    queue = open_queue(cfg, "runner")
    try:
        released, errors = release_each(queue, ids)
        if released:
            queue.sync()
        return {"released": released, "errors": errors}
    except spool.LogError as exc:
        raise exits.Failure(str(exc), exits.TEMPFAIL) from None
    finally:
        queue.close()
