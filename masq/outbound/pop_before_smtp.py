"""SMTP-after-POP (masqmail's `pop3_login`): log into a POP3 mailbox before a route's SMTP.

Wraps a route's SMTP agent. Before it is handed jobs, the daemon's fetch component logs
into the mailbox of the route's `pop3_login` fetch section and out again (QUIT right after
the login: nothing is fetched or deleted), for providers that still authorise relaying by
a recent POP3 login from the same address. A login counts for `VALID` seconds (providers
keep the address for several minutes; masqmail logged in before every queue run), so a
busy route logs in once per run, not per message. Jobs that arrive while a login runs
wait for it.

A failed login is logged, and the jobs go ahead all the same: the smarthost's refusal is
then the recipients' outcome (deferred or bounced as it says), never a silent hold.
Without a fetch component (a queue run with no daemon) the jobs go ahead at once.
"""

VALID = 300.0


class PopBeforeSmtp:
    """A route's agent that logs into `pop3_login` before its SMTP sessions."""

    def __init__(self, host, fetch_name, agent):
        self.host, self.fetch_name, self.agent = host, fetch_name, agent
        self.logged_in = None       # loop time of the last successful login
        self.waiting = []           # (jobs, done_each) held while a login runs

    def deliver(self, job, done):
        """Deliver one job; done(outcomes)."""
        self.deliver_many([job], lambda job, outcomes: done(outcomes))

    def deliver_many(self, jobs, done_each):
        """Log in (unless a recent login still counts), then hand the jobs on."""
        fetcher = self.host.fetcher
        now = self.host.loop.time()
        if fetcher is None or (self.logged_in is not None and now - self.logged_in < VALID):
            return self.agent.deliver_many(jobs, done_each)
        self.waiting.append((jobs, done_each))
        if len(self.waiting) == 1:
            fetcher.login(self.fetch_name, self._logged_in)

    def _logged_in(self, error):
        if error is None:
            self.logged_in = self.host.loop.time()
        else:
            self.host.log.warning("pop3_login %s failed (sending all the same): %s",
                                  self.fetch_name, error)
        waiting, self.waiting = self.waiting, []
        for jobs, done_each in waiting:
            self.agent.deliver_many(jobs, done_each)
