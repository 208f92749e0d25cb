"""Delivery outcomes: OK, TEMPFAIL or PERMFAIL, with an enhanced status code and a reason.

Every delivery agent (SMTP client, pipe, local mailbox, MDA) reports one Outcome per
recipient; the scheduler turns them into queue records, retries and bounces. No bare
integers: `Outcome.temp("4.4.1", "connection refused")`.

The text often quotes a peer (a server's reply of up to 100 lines of 2 KB, a pipe's
output): it is cut in the middle to `MAX_TEXT` characters, as it goes into the queue's
records, the log, the status page and bounces.
"""

from masq.base.logger import shorten

OK, TEMPFAIL, PERMFAIL = "ok", "tempfail", "permfail"
MAX_TEXT = 1000


class Outcome:
    """The result of one delivery attempt for one recipient."""

    __slots__ = ("kind", "status", "text", "counts", "relay")

    def __init__(self, kind, status, text, counts=True, relay=None):
        self.kind = kind
        self.status = status        # enhanced status code, e.g. "4.4.1"
        self.text = shorten(text, MAX_TEXT)     # one line for the log, mailq and the bounce
        self.counts = counts        # False: the attempt does not count (link went away)
        self.relay = relay          # who answered, `host[ip]:port`, for the log; or None

    @classmethod
    def ok(cls, text="delivered", status="2.0.0"):
        """Return a success."""
        return cls(OK, status, text)

    @classmethod
    def temp(cls, status, text, counts=True):
        """Return a temporary failure (retry later)."""
        return cls(TEMPFAIL, status, text, counts)

    @classmethod
    def perm(cls, status, text):
        """Return a permanent failure (bounce)."""
        return cls(PERMFAIL, status, text)

    @classmethod
    def from_reply(cls, reply, what=""):
        """Return the outcome an SMTP reply means (2xx ok, 4xx temp, 5xx perm)."""
        text = ("%s: %s" % (what, reply)) if what else str(reply)
        status = reply.enhanced or "%d.0.0" % (reply.code // 100)
        if reply.code < 400:
            return cls.ok(text, status)
        return cls(TEMPFAIL if reply.code < 500 else PERMFAIL, status, text)

    @property
    def is_ok(self):
        """Return True for a delivery."""
        return self.kind == OK

    def __repr__(self):
        return "Outcome(%s, %s, %r)" % (self.kind, self.status, self.text)
