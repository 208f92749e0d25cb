"""The control socket: how `masq flush`, `masq online`, `masq status`, `sendmail` and
`mailq` talk to a running daemon.

A Unix stream socket `control.sock` in the spool. One request per connection: one line of
JSON (`{"cmd": "status", ...}`), answered by one line of JSON (`{"ok": true, ...}` or
`{"ok": false, "error": "..."}`), then the daemon closes. Requests are bounded (64 KiB);
the peer's uid (SO_PEERCRED) is passed to the handler, which decides who may do what.

The server side lives in the loop and never blocks; the client side (the CLI) blocks with
a timeout, which is fine for a short-lived command. `notify` sends a request and leaves
without waiting for the answer (sendmail's poke about a message already on disk): the
daemon handles requests in the order their connections were made, so a later request from
anyone sees what the poke announced.
"""

import os

from masq.base import compat

SOCKET_NAME = "control.sock"
MAX_REQUEST = 64 * 1024


def socket_path(spool_dir):
    """Return the path of the control socket in spool_dir."""
    return os.path.join(spool_dir, SOCKET_NAME)


def _connect(spool_dir, timeout):
    """Return a socket connected to the daemon, or None if none runs."""
    import _socket   # the C module: `socket` would cost sendmail a few ms of imports
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path(spool_dir))
    except OSError:
        sock.close()
        return None
    return sock


def _line(cmd, args):
    args["cmd"] = cmd
    return compat.dumps(args).encode() + b"\n"


def notify(spool_dir, cmd, timeout=5.0, **args):
    """Send one request without waiting for its answer; return False if no daemon runs."""
    sock = _connect(spool_dir, timeout)
    if sock is None:
        return False
    try:
        sock.sendall(_line(cmd, args))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def request(spool_dir, cmd, timeout=30.0, **args):
    """Send one request to the daemon; return its reply dict, or None if none runs."""
    sock = _connect(spool_dir, timeout)
    if sock is None:
        return None
    try:
        sock.sendall(_line(cmd, args))
        data = b""
        while not data.endswith(b"\n"):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    except OSError:
        return None
    finally:
        sock.close()
    if data == b'{"ok":true}\n':       # the usual answer, read without importing json
        return {"ok": True}
    try:
        reply = compat.loads(data.decode("utf-8"))
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


class Server:
    """Accepts control connections in the loop and answers them through handler."""

    def __init__(self, loop, spool_dir, handler, report=None):
        self.loop = loop
        self.path = socket_path(spool_dir)
        self.handler = handler      # handler(request dict, uid, answer) ; answer(dict)
        self.report = report or (lambda text: None)
        self.sock = None

    def start(self):
        """Bind the socket (replacing a stale one) and start accepting."""
        import socket
        if os.path.lexists(self.path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
                probe.close()
                raise OSError("a daemon already answers on %s" % self.path)
            except ConnectionRefusedError:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            finally:
                probe.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock, self._accept)

    def stop(self):
        """Stop accepting and remove the socket file."""
        if self.sock is not None:
            self.loop.remove_reader(self.sock)
            self.sock.close()
            self.sock = None
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def _accept(self):
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:   # EMFILE and friends: never let the accept loop die
            self.report("control: accept failed: %s" % exc)
            return
        conn.setblocking(False)
        Connection(self, conn).start()


class Connection:
    """One control request being read, handled and answered."""

    def __init__(self, server, conn):
        self.server = server
        self.conn = conn
        self.data = b""
        self.out = b""
        self.timer = None

    def start(self):
        """Start reading the request, with a deadline."""
        loop = self.server.loop
        loop.add_reader(self.conn, self._read)
        self.timer = loop.call_later(30.0, self.close)

    def _read(self):
        try:
            part = self.conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            part = b""
        self.data += part
        if not part or len(self.data) > MAX_REQUEST:
            self.close()
        elif b"\n" in self.data:
            self.server.loop.remove_reader(self.conn)
            self._handle(self.data.split(b"\n", 1)[0])

    def _handle(self, line):
        try:
            req = compat.loads(line.decode("utf-8"))
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self.answer({"ok": False, "error": "bad request: %s" % exc})
            return
        self.server.handler(req, peer_uid(self.conn), self.answer)

    def answer(self, reply):
        """Send the reply and close (may be called from a later loop turn)."""
        if self.conn is None:
            return
        self.out = compat.dumps(reply).encode() + b"\n"
        self.server.loop.add_writer(self.conn, self._write)

    def _write(self):
        try:
            sent = self.conn.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            self.close()

    def close(self):
        """Drop the connection."""
        if self.conn is None:
            return
        loop = self.server.loop
        loop.remove_reader(self.conn)
        loop.remove_writer(self.conn)
        if self.timer:
            self.timer.cancel()
        self.conn.close()
        self.conn = None


def peer_uid(conn):
    """Return the uid of the process at the other end of a Unix socket (-1 if unknown)."""
    import socket
    import struct
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    except OSError:
        return -1
