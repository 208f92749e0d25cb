"""The control socket: how `masq flush`, `masq online`, `masq status`, `sendmail` and
`mailq` talk to a running daemon.

A Unix stream socket `control.sock` in the spool. One request per connection: one line of
JSON (`{"cmd": "status", ...}`), answered by one line of JSON (`{"ok": true, ...}` or
`{"ok": false, "error": "..."}`), then the daemon closes. Requests are bounded (64 KiB);
the peer's uid (SO_PEERCRED) is passed to the handler, which decides who may do what.

The server side lives in the loop and never blocks; the client side (the CLI) blocks with
a timeout, which is fine for a short-lived command.

New mail is announced through a FIFO beside the socket, `pickup` (Postfix's pickup
trigger): `sendmail` and `-bs` write a byte to it and leave, with no socket, no JSON and
no answer to wait for (the message is synced before). Opening it fails (ENXIO) when no
daemon holds it open, which is how they know that none runs. The daemon reads the pokes
in the loop and catches up with the queue; a poke written before a control connection is
made is read before that connection's request (the FIFO is readable in every loop turn
until read), so `masq status` after `sendmail` sees the message.
"""

import os
import stat

from masq.base import compat, reads

SOCKET_NAME = "control.sock"
PICKUP_NAME = "pickup"
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


def poke(spool_dir):
    """Tell a running daemon that new mail is in the queue; return False if none runs."""
    try:
        fd = os.open(os.path.join(spool_dir, PICKUP_NAME),
                     os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:             # ENXIO: nobody reads it; ENOENT: no daemon made it
        return False
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        os.write(fd, b"n")
    except BlockingIOError:     # full: the daemon has pokes to read already
        pass
    except OSError:
        return False
    finally:
        os.close(fd)
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
            part = reads.for_loop(self.server.loop).recv(self.conn)
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


class Pickup:
    """Reads the pokes of `sendmail` and `-bs` from the pickup FIFO and calls on_poke()."""

    def __init__(self, loop, spool_dir, on_poke):
        self.loop = loop
        self.path = os.path.join(spool_dir, PICKUP_NAME)
        self.on_poke = on_poke
        self.fd = None

    def start(self):
        """Make the FIFO (replacing anything else of that name) and start reading it."""
        try:
            if not stat.S_ISFIFO(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        if not os.path.lexists(self.path):
            os.mkfifo(self.path, 0o600)
        os.chmod(self.path, 0o622)      # any local user may submit mail, and so poke
        # read and write: writers can open it while the daemon runs, and it never reads EOF
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.loop.add_reader(self.fd, self._read)

    def stop(self):
        """Stop reading and remove the FIFO: a poke then finds no daemon."""
        if self.fd is None:
            return
        self.loop.remove_reader(self.fd)
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def _read(self):
        try:
            while os.read(self.fd, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self.on_poke()


def peer_uid(conn):
    """Return the uid of the process at the other end of a Unix socket (-1 if unknown)."""
    import socket
    import struct
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    except OSError:
        return -1
