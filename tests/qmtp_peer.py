"""A minimal QMTP client and server, written for the tests from qmail's QMTP specification
(RFCQMTP: packages of three netstrings; one K/Z/D response netstring per recipient), so
masq's QMTP meets an implementation that shares no code with it."""

import socket
import threading


def ns(data):
    return b"%d:%s," % (len(data), data)


def read_ns(sock, buffer):
    """Return (interpretation, rest of buffer) of the next netstring read from sock."""
    while b":" not in buffer:
        more = sock.recv(65536)
        if not more:
            raise EOFError("closed before a netstring")
        buffer += more
    length, _, buffer = buffer.partition(b":")
    size = int(length)
    while len(buffer) < size + 1:
        more = sock.recv(65536)
        if not more:
            raise EOFError("closed inside a netstring")
        buffer += more
    assert buffer[size:size + 1] == b","
    return buffer[:size], buffer[size + 1:]


def package(text, sender, recipients, crlf=False):
    """Return a package: text given with LF line ends, sent in encoding #2 (or #1)."""
    encoded = b"\r" + text.replace(b"\n", b"\r\n") if crlf else b"\n" + text
    return ns(encoded) + ns(sender) + ns(b"".join(ns(r) for r in recipients))


def send(port, packages):
    """Send packages [(text, sender, recipients[, crlf])] on one connection, all at once;
    return the responses, one list per package."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"".join(package(*p) for p in packages))
        buffer, answers = b"", []
        for p in packages:
            got = []
            for _ in p[2]:
                value, buffer = read_ns(sock, buffer)
                got.append(value)
            answers.append(got)
        return answers


class Server:
    """A QMTP server on 127.0.0.1:port that stores every package and answers each
    recipient by its local part: z-* gets Z, d-* gets D, everything else K."""

    def __init__(self, port):
        self.port, self.packages, self.connections = port, [], 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)

    def __enter__(self):
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        buffer = b""
        with conn:
            try:
                while True:
                    if not buffer:
                        more = conn.recv(65536)
                        if not more:
                            return
                        buffer += more
                    text, buffer = read_ns(conn, buffer)
                    sender, buffer = read_ns(conn, buffer)
                    rcpts, buffer = read_ns(conn, buffer)
                    names, rest = [], rcpts
                    while rest:
                        size, _, rest = rest.partition(b":")
                        names.append(rest[:int(size)])
                        rest = rest[int(size) + 1:]
                    body = text[1:] if text[:1] == b"\n" else text[1:].replace(b"\r\n", b"\n")
                    self.packages.append((body, sender, names))
                    conn.sendall(b"".join(
                        ns(b"Z try later #4.2.0" if r.startswith(b"z-") else
                           b"D no such user #5.1.1" if r.startswith(b"d-") else b"Kok")
                        for r in names))
            except (EOFError, OSError):
                return
