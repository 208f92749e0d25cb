"""An `smtp:HOST:PORT` content filter, the amavis way: the message goes to the filter over SMTP,
and the filter sends it back to a masq listener marked `?filtered`.

Owns one hand-over of one queued message to the filter: masq's own SMTP agent
(masq.outbound.smtp, no TLS, `filter_timeout` for each step) sends it with its sender and
open recipients, and a first header line `X-Masq-Filter-Id: ID` naming the queued
original. The filter relays its (possibly rewritten) copy back to the `?filtered`
listener, which strips that header and commits the copy with `replaces` = ID: that one
COMMIT record removes the original (docs/QUEUE.md), so a crash leaves the original or the
copy, never both and never neither. A copy naming an original that is no longer queued
(a second copy of the same message) is accepted and dropped (masq.inbound.session).

Verdicts: the filter's 250 is `sent` (the stage then finds the original gone, replaced,
or still queued: the copy did not come back, and it is tried again later); a 5xx rejects
(the message bounces with the filter's reply); anything else is a tempfail. Does not read
or change the envelope in the queue (masq.outbound.filters does).
"""

import itertools

from masq.mail.message import FILTER_ID as HEADER
from masq.outbound.filter_verdict import Filter, Verdict
from masq.outbound.job import Job


class SMTPFilter(Filter):
    """Sends message msgid to `smtp:HOST:PORT`; done(Verdict) once the filter answered."""

    def __init__(self, host, msgid, env, spec, done):
        super().__init__(host, msgid, env, spec, done)
        self.agent = None
        self.resolver = None
        self.cancelled = False

    def start(self):
        """Connect and send (a failure is reported through done)."""
        from masq.dns.mx import MailResolver
        from masq.dns.resolver import parse_server
        from masq.outbound.smtp import SMTPAgent, SMTPSettings
        main = self.host.cfg.main
        timeouts = {"connect": main.filter_timeout, "final": main.filter_timeout}
        settings = SMTPSettings(smarthost=self.target, tls="none", helo=main.hostname,
                                timeouts=timeouts, max_sessions=1)
        servers = [parse_server(main.dns_server)] if main.dns_server else None
        self.resolver = MailResolver(self.host.loop, servers, own_names=[],
                                     hosts_file=main.hosts_file)
        self.agent = SMTPAgent(self.host.loop, settings, self.resolver)
        env, queue, msgid = self.env, self.host.queue, self.msgid
        indices = [i for i, r in enumerate(env.recipients) if not r.final]
        line = ("%s: %s\r\n" % (HEADER, msgid)).encode("ascii")
        job = Job.of(msgid, env, indices, lambda: itertools.chain((line,), queue.body(msgid)),
                     extra=len(line))
        self.agent.deliver(job, self._answered)

    def cancel(self):
        """Forget the hand-over (the connection is dropped with the agent); done is not called."""
        self.cancelled = True
        self._close()

    def _close(self):
        if self.agent is not None and hasattr(self.agent, "close"):
            self.agent.close()
        if self.resolver is not None and hasattr(self.resolver, "close"):
            self.resolver.close()
        self.agent = self.resolver = None

    def _answered(self, outcomes):
        if self.cancelled:
            return
        self.host.loop.call_soon(self._close)
        failed = [o for o in outcomes if not o.is_ok]
        if not failed:
            self.done(Verdict("sent", "accepted by filter %s" % self.spec))
        elif any(o.kind == "permfail" for o in failed):
            self.done(Verdict("reject", next(o.text for o in failed if o.kind == "permfail")))
        else:
            self.done(Verdict("tempfail", failed[0].text))
