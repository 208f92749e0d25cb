"""A delivery job: one message, some of its recipients, one way out.

The scheduler builds Jobs and hands them to delivery agents; an agent answers with one
Outcome per recipient, in order, through the `done` callback it was given:

    agent.deliver(job, done)        # done(list of Outcome, same order as job.recipients)

Agents never touch the queue: they read the message text with `job.open_body()` (an
iterator of bytes chunks in wire form: CRLF line ends, no dot-stuffing) and report. A
`binary` job's text is a BINARYMIME one (RFC 3030): its body is as received (bare CR and
LF, NUL, long lines); only the SMTP agent sees it so (`masq.outbound.binary` converts it
for every other agent).
"""


class Job:
    """What an agent needs to deliver one message to some recipients."""

    __slots__ = ("message_id", "sender", "recipients", "notify", "orcpt", "size",
                 "open_body", "route", "envid", "ret", "smtputf8", "body8bit", "received",
                 "binary", "size_exact", "crlf")

    def __init__(self, message_id, sender, recipients, open_body, size=0, route=None,
                 notify=None, orcpt=None, envid=None, ret=None, smtputf8=False,
                 body8bit=False, received=0.0, binary=False, size_exact=True, crlf=False):
        self.message_id = message_id
        self.sender = sender                # "" for the null sender
        self.recipients = list(recipients)  # addresses as text
        self.notify = notify or [None] * len(self.recipients)
        self.orcpt = orcpt or [None] * len(self.recipients)
        self.open_body = open_body          # () -> iterator of bytes
        self.size = size
        self.route = route                  # the route's config Section, or None (local)
        self.envid = envid
        self.ret = ret
        self.smtputf8 = smtputf8
        self.body8bit = body8bit
        self.received = received
        self.binary = binary
        self.size_exact = size_exact        # False: size is the queued text's, not this one's
        self.crlf = crlf                    # True: the text is known to have CRLF line ends
                                            # only (else old mail may hold bare CR or LF)
