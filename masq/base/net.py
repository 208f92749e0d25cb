"""Binds a protocol engine to a socket in the loop: plain, or TLS through ssl.MemoryBIO.

Owns one non-blocking socket: reading (handing bytes to `on_data`), a bounded write buffer
flushed when the socket is writable, and TLS without blocking (`ssl.SSLObject` over two
memory BIOs, so the handshake and every record are driven by the loop). `ssl` is imported
only when TLS is used. Closing is idempotent and always reported once through `on_close`.

Does not parse anything: the engine above decides what bytes mean. Hostnames never reach
`ssl` as str (python3-light has no idna codec, and `ssl` encodes a str hostname with it):
server_hostname is passed as ASCII bytes.
"""

import os
import socket

from masq.base import reads

READ_SIZE = reads.READ_SIZE
HIGH_WATER = 1 << 20


class Stream:
    """A socket driven by the loop; callbacks: on_data(bytes), on_close(reason), and
    on_drain() (one shot: set it again to hear again) once the socket took everything
    queued after it was full."""

    def __init__(self, loop, sock, on_data, on_close):
        self.loop = loop
        self.sock = sock
        self.on_data = on_data
        self.on_close = on_close
        self.on_drain = None
        self.out = bytearray()
        self.tls = None            # ssl.SSLObject
        self.incoming = self.outgoing = None
        self.handshake_done = None  # callback(error) while a handshake runs
        self.reading = False
        self.closed = False
        self.close_after_flush = False
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:        # replies and pipelined commands are small: no Nagle delays
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    @property
    def fileno(self):
        """Return the socket's file descriptor."""
        return self.sock.fileno()

    def peer(self):
        """Return (ip, port) of the other end, or ('', 0) if unknown."""
        try:
            address = self.sock.getpeername()
        except OSError:
            return "", 0
        if isinstance(address, tuple):
            return address[0], address[1]
        return "", 0

    def resume_reading(self):
        """Start (or restart) handing incoming bytes to on_data."""
        if not self.reading and not self.closed:
            self.reading = True
            self.loop.add_reader(self.sock, self._readable)

    def pause_reading(self):
        """Stop reading until resume_reading() (back-pressure)."""
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.sock)

    def unsent(self):
        """Return how many queued octets the peer has not taken yet."""
        return len(self.out)

    def handshaking(self):
        """Return True while a TLS handshake runs."""
        return self.handshake_done is not None

    # writing

    def write(self, data):
        """Queue bytes for the peer (encrypted if TLS is on); with nothing queued before
        them, what the socket takes now is sent from data itself, never copied."""
        if self.closed or not data:
            return
        if self.tls is not None:
            import ssl
            try:
                self.tls.write(data)
            except ssl.SSLError as exc:
                self.close("TLS write failed: %s" % exc)
                return
            data = self.outgoing.read()
        if not self.out:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.close("send failed: %s" % exc.strerror)
                return
            data = memoryview(data)[sent:]
        self.out += data
        self._flush()

    def when_writable(self, callback):
        """Call callback (one shot, as on_drain) once the socket can take more, at the next
        poll at the earliest: a writer with more to send yields to the loop this way."""
        self.on_drain = callback
        self.loop.add_writer(self.sock, self._writable)

    def close_when_flushed(self):
        """Close once everything queued has been sent."""
        self.close_after_flush = True
        if not self.out:
            self.close("closed by us")

    def _flush(self):
        while self.out and not self.closed:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.close("send failed: %s" % exc.strerror)
                return
            del self.out[:sent]
        if self.closed:
            return
        if self.out:
            self.loop.add_writer(self.sock, self._writable)
        else:
            self.loop.remove_writer(self.sock)
            if self.close_after_flush:
                self.close("closed by us")

    def _writable(self):
        self._flush()
        if not self.out and not self.closed and self.on_drain is not None:
            callback, self.on_drain = self.on_drain, None
            callback()

    # reading

    def _readable(self):
        try:
            data = reads.for_loop(self.loop).recv(self.sock)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close("receive failed: %s" % exc.strerror)
            return
        if self.tls is not None:
            self._tls_in(data)
            return
        if not data:
            self.on_data(b"")
            self.close("closed by peer")
            return
        self.on_data(data)

    # TLS

    def start_tls(self, context, server_side, on_done, server_hostname=None):
        """Begin a TLS handshake; on_done(None or error text) when it ends."""
        import ssl
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        name = server_hostname.encode("ascii") if isinstance(server_hostname, str) \
            else server_hostname
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                    server_hostname=name)
        self.handshake_done = on_done
        self.resume_reading()
        self._handshake()

    def _handshake(self):
        import ssl
        try:
            self.tls.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            self._send_tls_output()
            return
        except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
            self._send_tls_output()
            done, self.handshake_done = self.handshake_done, None
            done(str(exc) or type(exc).__name__)
            return
        self._send_tls_output()
        done, self.handshake_done = self.handshake_done, None
        done(None)

    def _send_tls_output(self):
        data = self.outgoing.read()
        if data:
            self.out += data
            self._flush()

    def _tls_in(self, data):
        import ssl
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        if self.handshake_done is not None:
            self._handshake()
            if self.handshake_done is not None or self.closed or not self.tls:
                return
        chunks, buffer = [], reads.for_loop(self.loop)
        while True:
            try:
                chunk = buffer.read_tls(self.tls)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            except ssl.SSLError as exc:
                self.close("TLS error: %s" % exc)
                return
            if not chunk:
                if chunks:
                    self.on_data(b"".join(chunks))
                self.on_data(b"")
                self.close("closed by peer")
                return
            chunks.append(chunk)
        self._send_tls_output()
        if chunks:
            self.on_data(b"".join(chunks))

    def tls_info(self):
        """Return (protocol version, cipher name) of the TLS session, or None."""
        if self.tls is None or self.handshake_done is not None:
            return None
        cipher = self.tls.cipher()
        return (self.tls.version(), cipher[0] if cipher else "")

    def peer_certificate(self):
        """Return the certificate the peer presented in the TLS handshake (DER), or None."""
        if self.tls is None or self.handshake_done is not None:
            return None
        return self.tls.getpeercert(binary_form=True)

    # closing

    def close(self, reason="closed"):
        """Close the socket now and report it once."""
        if self.closed:
            return
        self.closed = True
        self.reading = False
        self.loop.remove_reader(self.sock)
        self.loop.remove_writer(self.sock)
        try:
            self.sock.close()
        except OSError:
            pass
        self.on_close(reason)


def client_key(ip):
    """Return what per-client limits count a peer address under: an IPv4 address itself,
    an IPv6 address's /64 (one host gets a whole /64 to pick addresses from)."""
    if ":" not in ip:
        return ip
    try:
        packed = socket.inet_pton(socket.AF_INET6, ip.partition("%")[0])
    except (OSError, ValueError):
        return ip
    if packed[:12] == b"\0" * 10 + b"\xff\xff":       # IPv4-mapped: the IPv4 address
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + b"\0" * 8) + "/64"


def listen(host, port, backlog=128):
    """Return a non-blocking listening socket on host (an IP literal) and port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Connector:
    """Connect to an IP literal without blocking: on_done(sock, None) or (None, error text).

    One attempt, bounded by `timeout` seconds; `cancel()` abandons it silently."""

    def __init__(self, loop, ip, port, on_done, timeout):
        import errno
        self.loop, self.on_done, self.sock, self.timer = loop, on_done, None, None
        try:
            self.sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET,
                                      socket.SOCK_STREAM)
            self.sock.setblocking(False)
            code = self.sock.connect_ex((ip, port))
        except OSError as exc:
            code = exc.errno or errno.EINVAL
        if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            loop.add_writer(self.sock, self._writable)
            self.timer = loop.call_later(timeout, lambda: self._finish("connection timed out"))
        else:
            loop.call_soon(lambda: self._finish(os.strerror(code)))

    def _writable(self):
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self._finish(os.strerror(code) if code else None)

    def _finish(self, error):
        if self.on_done is None:
            return
        done, self.on_done = self.on_done, None
        sock = self._release(close=error is not None)
        done(None if error else sock, error)

    def _release(self, close):
        sock, self.sock = self.sock, None
        if self.timer is not None:
            self.timer.cancel()
        if sock is not None:
            self.loop.remove_writer(sock)
            if close:
                sock.close()
        return sock

    def cancel(self):
        """Abandon the attempt: close the socket, never call on_done."""
        if self.on_done is not None:
            self.on_done = None
            self._release(close=True)
