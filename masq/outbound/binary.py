"""BINARYMIME texts for agents that carry only line-based text: convert them, or bounce.

Owns `TextOnly`, the wrapper the agents table puts around every agent but SMTP (local
mailboxes and programs, pipe routes, QMTP and QMQP): their formats have LF line ends
(mbox, maildir, a program's stdin, QMTP) and mbox escapes `From ` lines, so a body with
bare CR or LF, NUL or very long lines cannot go into them as it is. A `binary` job's
text is scanned first (`masq.mail.downgrade`, a slice per loop turn), then handed on with
its binary parts converted to base64 (8-bit text stays 8-bit: these formats are 8-bit
clean), as an ordinary 8-bit job; a text that cannot be converted (binary content outside
MIME, in a signed part, in a header) fails 5.6.3 for its recipients: what RFC 3030 asks
of a client facing a server without BINARYMIME (Postfix, which offers CHUNKING without
BINARYMIME, never gets a binary text to deliver locally).
Does not: touch other jobs (handed on as they are), or read the queue.
"""

from masq.outbound.job import Job
from masq.outbound.outcome import Outcome

STEPS = 8       # scan slices (of downgrade's 2000 lines each) per loop turn


class TextOnly:
    """An agent that hands every job to `agent`, a BINARYMIME one converted first; it has
    `deliver_many` (the scheduler's batches) when `agent` has."""

    def __init__(self, loop, agent):
        self.loop, self.agent = loop, agent
        if hasattr(agent, "deliver_many"):
            self.deliver_many = self._deliver_many

    def deliver(self, job, done):
        """Deliver job through the wrapped agent: done(list of Outcome)."""
        if not job.binary:
            return self.agent.deliver(job, done)
        self._text(job, lambda ready: self.agent.deliver(ready, done),
                   lambda outcome: self._fail(job, done, outcome))

    def _deliver_many(self, jobs, done_each):
        """Deliver jobs through the wrapped agent's batch (the BINARYMIME ones converted
        first, one after another); done_each(job, outcomes) with the jobs given."""
        jobs, ready, given = list(jobs), [], {}

        def next_one(at=0):
            while at < len(jobs) and not jobs[at].binary:
                ready.append(jobs[at])
                at += 1
            if at == len(jobs):
                if ready:
                    self.agent.deliver_many(ready, lambda job, outcomes: done_each(
                        given.get(id(job), job), outcomes))
                return
            job = jobs[at]

            def converted_one(text):
                given[id(text)] = job
                ready.append(text)
                next_one(at + 1)

            def failed(outcome):
                self._fail(job, lambda outcomes: done_each(job, outcomes), outcome)
                next_one(at + 1)
            self._text(job, converted_one, failed)
        next_one()

    def _text(self, job, ready, failed):
        """Scan a BINARYMIME job over loop turns: ready(converted job) or failed(Outcome)."""
        from masq.mail import downgrade         # at the first BINARYMIME text
        plan = downgrade.Plan(seven_bit=False, binary=True)
        try:
            steps = downgrade.scan_steps(job.open_body(), plan)
        except Exception as exc:
            return failed(Outcome.temp("4.3.0", "cannot read the message: %s" % exc))
        self._step(job, plan, steps, ready, failed)

    def _step(self, job, plan, steps, ready, failed):
        from masq.mail import downgrade
        try:
            for _ in range(STEPS):
                next(steps)
        except StopIteration:
            return ready(converted(job, plan))
        except downgrade.Impossible as exc:
            return failed(Outcome.perm(
                "5.6.3", "a BINARYMIME message cannot be written here as text and cannot be "
                "converted: %s" % exc))
        except Exception as exc:        # the text failed part-way
            return failed(Outcome.temp("4.3.0", "cannot read the message: %s" % exc))
        self.loop.call_soon(lambda: self._step(job, plan, steps, ready, failed))

    def _fail(self, job, done, outcome):
        self.loop.call_soon(lambda: done([outcome] * len(job.recipients)))


def converted(job, plan):
    """Return a copy of job whose text has plan's binary parts in base64 (8-bit text); its
    size is then the queued one's, not exact (an agent that declares it counts it)."""
    if plan.needed:
        from masq.mail import downgrade

        def open_body():
            return downgrade.convert(job.open_body(), plan)
    else:
        open_body = job.open_body
    return Job(job.message_id, job.sender, job.recipients, open_body, size=job.size,
               route=job.route, notify=job.notify, orcpt=job.orcpt, envid=job.envid,
               ret=job.ret, smtputf8=job.smtputf8, body8bit=True, received=job.received,
               size_exact=not plan.needed)
