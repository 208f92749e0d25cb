"""`masq queue --dump`: every record of the log, one line each; the queue tests' oracle.

Reads the segments, oldest first, without changing them (no tail is cut, nothing
quarantined). Each line starts with `SEGMENT:START-END`. Damaged ranges are printed as
DAMAGE lines. Payloads of non-body records are printed as the JSON they hold; bodies as
their length only.
"""

from masq.queue import record
from masq.queue.log import Journal

NAMES = {
    record.BODY: "BODY", record.COMMIT: "COMMIT", record.RESULT: "RESULT",
    record.WARNED: "WARNED", record.REMOVED: "REMOVED", record.ABORTED: "ABORTED",
    record.QUARANTINED: "QUARANTINED", record.COPY: "COPY",
}


def dump_lines(spool_dir):
    """Yield one line per record or damaged range of the log in spool_dir."""
    journal = Journal(spool_dir)
    journal.open(create_missing=False)
    try:
        journal.lock()
        try:
            for seg in journal.ordered():
                for item in seg.scan(seg.header_size):
                    yield _line(item)
        finally:
            journal.unlock()
    finally:
        journal.close()


def _line(item):
    if isinstance(item, record.Damage):
        msgid = item.msgid.decode("ascii") if item.msgid else "-"
        return "%d:%d-%d DAMAGE %s" % (item.seg, item.offset, item.end, msgid)
    head = "%d:%d-%d %s %s" % (item.seg, item.offset, item.end, NAMES[item.type],
                               item.msgid.decode())
    if item.type == record.BODY:
        return "%s %d" % (head, item.length)
    return "%s %s" % (head, item.payload.decode("ascii", "replace"))
