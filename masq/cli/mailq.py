"""`mailq` / `-bp` / `masq queue` and `mailrm` / `-Mrm` / `masq rm`.

Asks the daemon when one runs (it holds the queue and knows what is in flight); reads or
changes the spool directly otherwise. The listing shows, per message: id, size, age and
sender, then each recipient with its state, attempts and last error.
"""


from masq.base import exits
from masq.base.clock import Clock
from masq.daemon import control
from masq.cli import common
from masq.queue import spool
from masq.status import model


def queue_document(cfg):
    """Return the queue part of the status document (from the daemon, or the spool)."""
    reply = control.request(cfg.main.spool_dir, "status", timeout=10)
    if reply and reply.get("ok"):
        return reply["status"]["queue"]
    queue = common.open_queue(cfg, "read")
    try:
        now = Clock().time()        # mailq without a daemon: no loop, the real clock
        return [model.message_json(m, now) for m in queue.listed()]
    finally:
        queue.close()


def run(cfg, out):
    """Print the queue listing to out; return the exit status."""
    messages = queue_document(cfg)
    if not messages:
        out.write("mail queue is empty\n")
        return exits.OK
    for msg in messages:
        out.write(format_message(msg))
    out.write("%d message%s in the queue\n" % (len(messages), "" if len(messages) == 1 else "s"))
    return exits.OK


def format_message(msg):
    """Return the lines mailq prints for one message of the status document."""
    lines = ["%-14s %8s %6s  <%s>%s" % (msg["id"], _size(msg["size"]), _age(msg["age"]),
                                        msg["sender"],
                                        "  QUARANTINED: %s" % msg["quarantined"]
                                        if msg.get("quarantined") else "")]
    for rcpt in msg["recipients"]:
        line = "    %-9s <%s>" % (rcpt["state"], rcpt["address"])
        extra = []
        if rcpt.get("attempts"):
            extra.append("%d attempt%s" % (rcpt["attempts"], "" if rcpt["attempts"] == 1 else "s"))
        if rcpt.get("last_error"):
            extra.append(rcpt["last_error"])
        if extra:
            line += "  (%s)" % "; ".join(extra)
        lines.append(line)
    return "\n".join(lines) + "\n"


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
    queue = common.open_queue(cfg, "runner")
    try:
        me = common.user_name()
        removed, errors = queue.remove_each(
            ids, lambda msg: common.privileged(cfg) or msg.envelope.origin == me, me)
        if removed:
            queue.sync()
            _log_removed(cfg, removed, me)
        return {"removed": removed, "errors": errors}
    except spool.LogError as exc:
        raise exits.Failure(str(exc), exits.TEMPFAIL) from None
    finally:
        queue.close()

