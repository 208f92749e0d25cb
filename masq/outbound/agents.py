"""The delivery agents of a host, built from the configuration: local, SMTP per route, pipe.

Owns which agent serves which route (a route with `pipe` is a pipe route, one whose
smarthost is `qmtp:HOST` or `qmqp:HOST` a QMTP or QMQP route; otherwise SMTP to its smarthost or to the MX hosts), the one DNS resolver they share, the local agent's
settings (mailboxes, aliases, local users and domains), and the rewritten outgoing copy
for routes that rewrite addresses. Rebuilt on reload.

Every agent but SMTP is wrapped in `binary.TextOnly`: it takes a BINARYMIME text only
converted to line-based text (SMTP sends it as it is where the next hop takes it).

Each agent is built, and its modules imported, when it is first needed: a daemon that has
delivered nothing yet has not loaded the SMTP client, the mailbox writers or `subprocess`
(about 2 MB of its idle RSS).
"""

from masq.outbound import binary, rewrite
from masq.policy.local import Locality

# The agents' modules, imported on first use (the daemon imports them before it becomes
# `option user`, who may not be able to read the library).
MODULES = ("masq.outbound.local", "masq.outbound.pipe", "masq.outbound.smtp",
           "masq.outbound.qmtp", "masq.dns.resolver", "masq.dns.mx")
# The content filter stage's, imported only when `filter` is configured (docs/FILTERS.md).
FILTER_MODULES = ("masq.outbound.filters", "masq.outbound.filter_pipe",
                  "masq.outbound.filter_smtp", "masq.outbound.filter_verdict",
                  "masq.outbound.mailbox.write", "subprocess")


class Agents:
    """Agents for one configuration."""

    def __init__(self, host, forward=None):
        self.host = host
        self.loop = host.loop
        self.cfg = host.cfg
        self.resolver = None
        self.by_route = {}
        self.forward = forward
        self.locality = Locality.from_config(self.cfg.main)
        self._local = None

    @property
    def local(self):
        """Return the local delivery agent (built on first use)."""
        if self._local is None:
            helper = self.host.local_helper
            if helper is not None:          # the daemon runs as `option user`
                agent = helper.agent(self.forward)
            else:
                from masq.outbound.local import LocalAgent
                agent = LocalAgent(self.loop, local_settings(self.cfg, self.forward,
                                                             self.host.log))
            self._local = binary.TextOnly(self.loop, agent)
        return self._local

    def for_route(self, route):
        """Return the agent that delivers through route."""
        agent = self.by_route.get(route.name)
        if agent is None:
            if route.pipe:
                from masq.outbound.pipe import PipeAgent
                agent = binary.TextOnly(self.loop, PipeAgent(self.loop, route))
            elif (route.smarthost or "").startswith(("qmtp:", "qmqp:")):
                from masq.outbound.qmtp import QMTPAgent
                agent = binary.TextOnly(self.loop, QMTPAgent(self.loop, route,
                                                             self._resolver()))
            else:
                from masq.outbound.smtp import SMTPSettings, SMTPAgent
                settings = SMTPSettings.from_route(route, self.cfg.main.hostname)
                agent = SMTPAgent(self.loop, settings, self._resolver())
                if route.pop3_login:
                    from masq.outbound.pop_before_smtp import PopBeforeSmtp
                    agent = PopBeforeSmtp(self.host, route.pop3_login, agent)
            self.by_route[route.name] = agent
        return agent

    def _resolver(self):
        if self.resolver is None:
            from masq.dns.mx import MailResolver
            from masq.dns.resolver import parse_server
            main = self.cfg.main
            servers = [parse_server(main.dns_server)] if main.dns_server else None
            self.resolver = MailResolver(self.loop, servers, own_names=[main.hostname],
                                     hosts_file=main.hosts_file)
        return self.resolver

    def is_local(self, addr):
        """Return True if the address text addr is delivered here (policy.local)."""
        return self.locality.is_local(addr)

    def rewrite(self, route, msg):
        """Return (sender, open_body) of msg's outgoing copy for route (only addresses in a
        local domain are rewritten, as masqmail)."""
        queue = self.host.queue
        return rewrite.outgoing(route, msg.envelope.sender, lambda: queue.body(msg.id),
                                self.locality.in_local_domain_of)

    def close(self):
        """Release the resolver's sockets."""
        if self.resolver is not None:
            self.resolver.close()


def local_settings(cfg, forward, log):
    """Return the local agent's LocalSettings for configuration cfg."""
    from masq.outbound.local import LocalSettings
    main = cfg.main
    return LocalSettings(
        main.hostname, mailbox=main.mailbox,
        user_mailbox={name: u.mailbox for name, u in cfg.users.items() if u.mailbox},
        alias_file=main.alias_file, local_users=main.local_users,
        locality=Locality.from_config(main), forward=forward, log=log,
        globalias_file=main.globalias_file,
        pipe_from=(main.pipe_fromline, main.pipe_fromhack),
        mda_from=(main.mda_fromline, main.mda_fromhack),
        user_mda_from={name: (u.mda_fromline, u.mda_fromhack) for name, u in cfg.users.items()},
        spam_folder=main.spam_folder)
