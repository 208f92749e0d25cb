"""The root-owned local delivery process of a daemon that runs as `option user`.

Privilege separation: a daemon started as root with `option user` forks this helper before
it drops its privileges. The daemon (network listeners, queue, scheduler) then runs as the
unprivileged user and holds no capability; the helper stays root, listens to nothing but
its end of a socket pair, and only runs the local delivery agent, whose children become
each recipient (or the aliases file's owner) as they do in a root daemon.

Protocol (one SOCK_SEQPACKET datagram each way per job): the daemon sends a JSON request
{n, id, sender, recipients, size, received} and, as SCM_RIGHTS, a memfd holding the
message text; the helper answers {n, outcomes: [[kind, status, text]], forwards:
[[Delivered-To line, [address]]]}. Forwards (aliases to remote addresses) are queued by
the daemon, which owns the queue; a failure to queue one defers that recipient.

The helper trusts the daemon only with what any mail sender controls (envelope and text):
mailbox specs, aliases and users come from its own reading of the configuration file,
read again when the file changes. It exits when the daemon closes its end, after the
deliveries under way. If it dies, the daemon defers local mail (4.3.0) and says so.
"""

import json
import os
import signal
import socket

from masq.outbound.job import Job
from masq.outbound.outcome import Outcome

MAX_DATAGRAM = 1 << 20          # one request or reply
CHUNK = 65536


def start(load, config_path):
    """Fork the helper (as root, before dropping privileges); return (socket, pid).

    load() returns the current configuration (masq.config.Config); the helper calls it
    again whenever config_path changes."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid:
        theirs.close()
        return ours, pid
    status = 0
    try:
        ours.close()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _Helper(theirs, load, config_path).run()
    except BaseException:           # never return into the daemon's code as a second daemon
        status = 70
    os._exit(status)


def _stamp(path):
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _text(fd):
    """Return a function that yields the memfd's bytes from the start, in chunks."""
    def open_body():
        offset = 0
        while True:
            chunk = os.pread(fd, CHUNK, offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk
    return open_body


class _Helper:
    """The helper's loop: requests in, local deliveries, answers out."""

    def __init__(self, sock, load, config_path):
        from masq.base.loop import Loop
        self.sock = sock
        self.load = load
        self.config_path = config_path
        self.loop = Loop()
        self.stamp = self.agent = None
        self.running = {}           # n -> memfd
        self.forwards = {}          # message id -> [[line, addresses]]
        self.closing = False

    def run(self):
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock, self.read)
        self.loop.run()

    def current_agent(self):
        """Return the local agent for the configuration as the file is now."""
        stamp = _stamp(self.config_path)
        if self.agent is None or stamp != self.stamp:
            from masq.base.logger import Logger
            from masq.outbound.agents import local_settings
            from masq.outbound.local import LocalAgent
            try:
                cfg = self.load()
            except Exception:
                if self.agent is not None:
                    return self.agent       # the daemon keeps its old configuration too
                raise
            log = Logger(cfg.main.log, cfg.main.log_level)
            self.agent = LocalAgent(self.loop, local_settings(cfg, self.record, log))
            self.stamp = stamp
        return self.agent

    def record(self, job, addresses):
        """settings.forward: note the copy for the daemon to queue."""
        line = next(iter(job.open_body()), b"").decode("utf-8", "surrogateescape")
        self.forwards.setdefault(job.message_id, []).append([line, list(addresses)])
        return None

    def read(self):
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_DATAGRAM, 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        if not data:
            for fd in fds:
                os.close(fd)
            self.loop.remove_reader(self.sock)
            self.closing = True
            self.maybe_exit()
            return
        if not fds:
            return                  # not a request: ignore
        fd = fds[0]
        for extra in fds[1:]:
            os.close(extra)
        try:
            req = json.loads(data)
            n = int(req["n"])
            job = Job(str(req["id"]), str(req["sender"]), [str(r) for r in req["recipients"]],
                      _text(fd), size=int(req.get("size", 0)),
                      received=float(req.get("received", 0.0)))
        except (ValueError, KeyError, TypeError):
            os.close(fd)
            return
        self.running[n] = fd
        try:
            agent = self.current_agent()
        except Exception as exc:
            outcome = Outcome.temp("4.3.0", "local delivery: configuration: %s" % exc)
            self.answer(n, job, [outcome] * len(job.recipients))
            return
        agent.deliver(job, lambda outcomes: self.answer(n, job, outcomes))

    def answer(self, n, job, outcomes):
        os.close(self.running.pop(n))
        reply = {"n": n, "outcomes": [[o.kind, o.status, o.text] for o in outcomes],
                 "forwards": self.forwards.pop(job.message_id, [])}
        try:
            self.sock.setblocking(True)
            self.sock.send(json.dumps(reply).encode("utf-8", "surrogateescape"))
            self.sock.setblocking(False)
        except OSError:
            self.closing = True
        self.maybe_exit()

    def maybe_exit(self):
        if self.closing and not self.running:
            self.loop.stop()


class Client:
    """The daemon's end: hands local Jobs to the helper, calls their done(outcomes)."""

    def __init__(self, loop, sock, pid, log):
        self.loop = loop
        self.sock = sock
        self.log = log
        self.pending = {}           # n -> (job, done, forward)
        self.n = 0
        self.gone = None            # why the helper cannot be reached any more
        sock.setblocking(False)
        loop.add_reader(sock, self.read)
        loop.watch_child(pid, self.exited)

    def agent(self, forward):
        """Return an agent (deliver(job, done)) that queues forwards with forward()."""
        return _Agent(self, forward)

    def deliver(self, job, done, forward):
        if self.gone:
            self.fail(job, done, self.gone)
            return
        try:
            fd = os.memfd_create("masq-local", os.MFD_CLOEXEC)
        except OSError as exc:
            self.fail(job, done, "cannot hold the text for it: %s" % exc.strerror)
            return
        try:
            for chunk in job.open_body():
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            self.n += 1
            req = {"n": self.n, "id": job.message_id, "sender": job.sender,
                   "recipients": job.recipients, "size": job.size, "received": job.received}
            socket.send_fds(self.sock, [json.dumps(req).encode("utf-8", "surrogateescape")],
                            [fd])
        except Exception as exc:    # the text failed part-way, or the socket is full
            self.fail(job, done, "cannot hand it over: %s" % exc)
            return
        finally:
            os.close(fd)
        self.pending[self.n] = (job, done, forward)

    def fail(self, job, done, why):
        outcome = Outcome.temp("4.3.0", "local delivery process: %s" % why)
        self.loop.call_soon(lambda: done([outcome] * len(job.recipients)))

    def read(self):
        try:
            data = self.sock.recv(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.lost("it closed its socket")
            return
        try:
            reply = json.loads(data)
            job, done, forward = self.pending.pop(int(reply["n"]))
            outcomes = [Outcome(kind, status, text) for kind, status, text in reply["outcomes"]]
        except (ValueError, KeyError, TypeError):
            self.log.error("local delivery process: a reply makes no sense: %r", data[:200])
            return
        for line, addresses in reply.get("forwards", []):
            outcome = self.queue_forward(job, line, addresses, forward)
            if not outcome.is_ok:     # defer whom it was for (all, if none is named)
                named = [i for i, rcpt in enumerate(job.recipients)
                         if line.rstrip("\r\n") == "Delivered-To: " + rcpt]
                for i in named or range(len(outcomes)):
                    outcomes[i] = outcome
        done(outcomes)

    def queue_forward(self, job, line, addresses, forward):
        if forward is None:
            return Outcome.temp("4.3.5", "aliases forward to remote addresses, but nothing "
                                "is set up to forward them")
        head = line.encode("utf-8", "surrogateescape")

        def open_body():
            yield head
            yield from job.open_body()

        copy = Job(job.message_id, job.sender, job.recipients, open_body,
                   size=job.size + len(head), route=job.route, envid=job.envid, ret=job.ret,
                   smtputf8=job.smtputf8, body8bit=job.body8bit, received=job.received)
        try:
            outcome = forward(copy, list(addresses))
        except OSError as exc:
            outcome = Outcome.temp("4.3.0", "cannot forward: %s" % exc)
        return outcome if isinstance(outcome, Outcome) else Outcome.ok("forwarded")

    def exited(self, status):
        self.lost("it exited (status %d)" % os.waitstatus_to_exitcode(status))

    def lost(self, why):
        if self.gone:
            return
        self.gone = "gone (%s); restart masq" % why
        self.log.error("local delivery process %s: local mail stays queued", self.gone)
        self.loop.remove_reader(self.sock)
        for job, done, _ in self.pending.values():
            self.fail(job, done, self.gone)
        self.pending.clear()

    def close(self):
        """Close our end: the helper finishes what it runs and exits."""
        if not self.gone:
            self.gone = "closed"
            self.loop.remove_reader(self.sock)
        self.sock.close()


class _Agent:
    """The local agent as the scheduler sees it, backed by the helper."""

    def __init__(self, client, forward):
        self.client = client
        self.forward = forward

    def deliver(self, job, done):
        self.client.deliver(job, done, self.forward)

