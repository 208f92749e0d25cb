"""Pipe routes: `option pipe 'COMMAND'` runs once per recipient with the message on stdin.

For UUCP, fax and SMS gateways (masqmail's pipe routes). The command is split with shlex
and its placeholders (`%s` sender, `%r` recipient, `%u` local part, `%d` domain) are
expanded inside single arguments, never through a shell; SENDER and RECIPIENT are in the
environment too. The text goes with LF line ends (a Unix program's), after an mbox
`From ` line with `pipe_fromline` and with body lines `From ` quoted as `>From ` with
`pipe_fromhack` (masqmail's route options). The command runs as the daemon's user (the
configuration that names it is the administrator's). Exit codes follow
masq.outbound.command's table (docs/LOCAL.md): 0 delivered, 75 deferred, the permanent
sysexits codes bounce, anything else defers. With
`connect_error_fail`, a deferral bounces at once (masqmail). The route's `timeout` is the
time limit.
"""

from masq.outbound import command
from masq.outbound.local import Identity
from masq.outbound.mailbox import mbox, write
from masq.outbound.outcome import Outcome

OUTPUT_CAP = 8192


class PipeAgent:
    """Delivers Jobs through one pipe route: `deliver(job, done)`."""

    def __init__(self, loop, route):
        self.loop = loop
        self.route = route

    def deliver(self, job, done):
        """Run the command for each recipient in turn; done(list of Outcome)."""
        outcomes = []
        self._next(job, outcomes, done)

    def _next(self, job, outcomes, done):
        if len(outcomes) == len(job.recipients):
            done(outcomes)
            return
        rcpt = job.recipients[len(outcomes)]
        local, _, domain = rcpt.rpartition("@")
        values = {"s": job.sender, "r": rcpt, "u": local, "d": domain}

        def finished(outcome):
            if outcome.kind == "tempfail" and self.route.connect_error_fail:
                outcome = Outcome.perm("5.3.0", outcome.text)
            outcomes.append(outcome)
            self._next(job, outcomes, done)
        try:
            argv = command.expand_argv(self.route.pipe, values)
        except command.Refused as refused:
            finished(refused.outcome)
            return
        env = command.environment(job.sender, rcpt, Identity.current(),
                                  message_id=job.message_id)
        body = write.to_lf(job.open_body())
        if self.route.pipe_fromline or self.route.pipe_fromhack:
            body = mbox.with_from_line(body, job.sender, self.loop.clock.time(),
                                       self.route.pipe_fromline, self.route.pipe_fromhack)
        command.run_command(self.loop, argv, env, body, self.route.timeout, OUTPUT_CAP,
                            finished)
