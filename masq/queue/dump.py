"""`masq queue --dump`: every record of the log, one line each; the queue tests' oracle.

Reads the log without changing it (no tail is cut, nothing quarantined). Damaged ranges are
printed as DAMAGE lines. Payloads of non-body records are printed as the JSON they hold;
bodies as their length only.
"""

import os

from masq.queue import record
from masq.queue.log import LOG_NAME, Log

NAMES = {
    record.BODY: "BODY", record.COMMIT: "COMMIT", record.RESULT: "RESULT",
    record.WARNED: "WARNED", record.REMOVED: "REMOVED", record.ABORTED: "ABORTED",
    record.QUARANTINED: "QUARANTINED",
}


def dump_lines(spool_dir):
    """Yield one line per record or damaged range of the log in spool_dir."""
    log = Log(os.path.join(spool_dir, LOG_NAME))
    log.open(create_missing=False)
    try:
        log.lock()
        try:
            for item in log.scan(record.FILE_HEADER_SIZE):
                yield _line(item)
        finally:
            log.unlock()
    finally:
        log.close()


def _line(item):
    if isinstance(item, record.Damage):
        msgid = item.msgid.decode("ascii") if item.msgid else "-"
        return "%d-%d DAMAGE %s" % (item.offset, item.end, msgid)
    head = "%d-%d %s %s" % (item.offset, item.end, NAMES[item.type], item.msgid.decode())
    if item.type == record.BODY:
        return "%s %d" % (head, item.length)
    return "%s %s" % (head, item.payload.decode("ascii", "replace"))
