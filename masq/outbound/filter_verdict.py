"""What a content filter said about a message: a Verdict, the reason found in its output,
and what each run of a filter starts from (`Filter`).

Shared by the `pipe:` and `smtp:` filters (masq.outbound.filter_pipe, filter_smtp) and the
stage that records verdicts (masq.outbound.filters).
"""

REASON = 200    # characters of a reason kept (one line)
ACTIONS = ("pass", "reject", "quarantine", "tempfail")


class Verdict:
    """kind (one of ACTIONS), a one-line reason, and for pass and quarantine the new text
    (a queue Writer of the filter's output) or None (the text stays as it is)."""

    __slots__ = ("kind", "reason", "text")

    def __init__(self, kind, reason, text=None):
        self.kind = kind
        self.reason = reason[:REASON]
        self.text = text


class Filter:
    """One run of the filter `spec` (`pipe:COMMAND` or `smtp:HOST:PORT`, its `target` after
    the colon) over queued message msgid with envelope env; done(Verdict) once it ended."""

    def __init__(self, host, msgid, env, spec, done):
        self.host = host
        self.msgid = msgid
        self.env = env
        self.spec = spec
        self.target = spec.partition(":")[2]
        self.done = done


def reason_of(head):
    """Return the X-Spam-Status: value in the header block at the start of head (bytes),
    unfolded to one line, or ''."""
    block = head.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    found, parts = False, []
    for line in block.split(b"\n"):
        if found and line[:1] in (b" ", b"\t"):
            parts.append(line.strip())
        elif found:
            break
        elif line.lower().startswith(b"x-spam-status:"):
            found = True
            parts.append(line[len(b"x-spam-status:"):].strip())
    text = b" ".join(parts).decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text)[:REASON]
