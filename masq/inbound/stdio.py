"""`-bs`, `smtpd`, `in.smtpd`: the same SMTP session on stdin and stdout (inetd style).

Owns a transport over two file descriptors and the small host a session needs when no
daemon is around: the loop, the queue opened for appending (a daemon may run: it is poked
about each message), the settings. A client whose stdin is a socket is known by its
address; otherwise it is a local process, trusted like `sendmail`.
"""

import os
import socket

from masq.base import control, exits, reads
from masq.base.host import Host, MessagesQueued
from masq.base.logger import Logger
from masq.base.loop import Loop
from masq.inbound.listener import Listener
from masq.inbound.session import SMTPServerSession
from masq.policy import relay
from masq.queue.opening import open_queue


class StdioTransport:
    """Reads fd 0 and writes fd 1 for an SMTPServerSession."""

    def __init__(self, loop, on_done):
        self.loop = loop
        self.session = None
        self.on_done = on_done
        self.on_drain = None       # writes are synchronous: nothing ever waits to be sent
        self.reading = False
        self.closed = False

    def resume_reading(self):
        """Read stdin in the loop."""
        if not self.reading and not self.closed:
            self.reading = True
            self.loop.add_reader(0, self._readable)

    def pause_reading(self):
        """Stop reading stdin."""
        if self.reading:
            self.reading = False
            self.loop.remove_reader(0)

    def _readable(self):
        try:
            data = reads.for_loop(self.loop).read(0)
        except OSError:
            data = b""
        self.session.on_data(data)
        if not data:
            self.close("end of input")

    def write(self, data):
        """Write to stdout (a pipe or terminal: blocking is fine here)."""
        view = memoryview(data)
        while view and not self.closed:
            try:
                view = view[os.write(1, view):]
            except OSError:
                self.close("stdout closed")

    def unsent(self):
        """Return 0: every write has gone out."""
        return 0

    def handshaking(self):
        """Return False: no TLS on stdio."""
        return False

    def tls_info(self):
        """Return None: no TLS on stdio."""
        return None

    def start_tls(self, context, server_side, on_done):
        """Refuse: STARTTLS is not offered on stdio."""
        on_done("no TLS on stdio")

    def close_when_flushed(self):
        """Close now (writes are synchronous)."""
        self.close("closed")

    def close(self, reason="closed"):
        """Stop the session."""
        if self.closed:
            return
        self.closed = True
        self.pause_reading()
        self.session.on_close(reason)
        self.on_done()


class StdioHost(Host):
    """The host of a Listener for a single stdio session: no delivery, no routes."""

    def __init__(self, cfg):
        loop = Loop()
        log = Logger(cfg.main.log, cfg.main.log_level, clock=loop.clock)
        super().__init__(cfg, loop, log, counters={"accepted": 0})
        self.queue = open_queue(cfg, "append", report=log.warning, clock=loop.clock)
        self.new_ids = []
        self.subscribe(MessagesQueued, self._queued)

    def _queued(self, event):
        """Remember accepted messages for the poke at the end."""
        self.new_ids.extend(event.ids)


def _peer(settings):
    try:
        sock = socket.socket(fileno=os.dup(0))
        try:
            ip = sock.getpeername()[0]
        finally:
            sock.close()
    except (OSError, IndexError, TypeError):
        return relay.Peer("127.0.0.1", True, None, "smtp", uid=os.getuid())
    return relay.Peer(ip, relay.in_networks(ip, settings.relay_nets), None, "smtp")


def run(cfg):
    """Speak SMTP on stdin/stdout until the client quits; return the exit status."""
    host = StdioHost(cfg)
    listener = Listener(host, "smtp://127.0.0.1:0", {})
    transport = StdioTransport(host.loop, host.loop.stop)
    session = SMTPServerSession(listener, transport, _peer(listener.settings),
                      listener._engine(False))
    transport.session = session
    host.loop.at_turn_end(host.queue.sync_now)
    host.loop.running = True        # before start: a refused session stops it at once
    session.start()
    while host.loop.running:
        host.loop.run_once()
    listener.stop()                 # what it keeps (the greylist) is saved
    host.queue.sync_now()
    host.queue.close()
    if host.new_ids:
        control.poke(cfg.main.spool_dir)
    return exits.OK
