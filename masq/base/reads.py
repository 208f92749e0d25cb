"""Reads into one reused buffer, each returned as bytes of exactly the size read.

Why: `sock.recv(n)`, `os.read(fd, n)` and an SSL `read(n)` allocate n octets and, when
fewer arrive, shrink that block in place. The small block left at the start of a large
free area cuts it (a later read of n octets no longer fits), and once freed it stays
there: glibc keeps such small blocks in its per-thread cache, never merging them. A
socket that delivers a short read now and then (the end of every BDAT chunk, and many
more on a loaded machine) thus left one pinned 64 KiB hole per short read: 1.2 MB of heap
after 256 MB by BDAT, 3 MB after 1 GB under load. Reading into one buffer and copying
out what came allocates every result at its own size, so no allocator is ever handed a
large block to split: this holds for musl's malloc as for glibc's.

One `ReadBuffer` serves every reader of a loop (`for_loop`): a read is copied out before
any callback runs, so sharing it is safe in one thread. A process without a loop makes
its own.
"""

import os

READ_SIZE = 65536


class ReadBuffer:
    """A reused buffer of `size` octets; every read returns fresh bytes of its length."""

    def __init__(self, size=READ_SIZE):
        self.size = size
        self.data = bytearray(size)
        self.view = memoryview(self.data)

    def recv(self, sock, size=None):
        """Return up to `size` (default: the buffer's) octets read from a socket."""
        count = sock.recv_into(self.data, size or self.size)
        return self.take(count)

    def read(self, fd, size=None):
        """Return up to `size` octets read from a file descriptor (b"" at its end)."""
        view = self.view if size is None or size >= self.size else self.view[:size]
        return self.take(os.readv(fd, [view]))

    def read_tls(self, tls, size=None):
        """Return up to `size` octets of plaintext from an ssl.SSLObject (its exceptions
        pass through: SSLWantReadError and the like)."""
        return self.take(tls.read(size or self.size, self.data))

    def take(self, count):
        """Return the first `count` octets of the buffer as bytes of their own."""
        if count <= 0:
            return b""
        with self.view[:count] as piece:
            return piece.tobytes()


def for_loop(loop):
    """Return the loop's shared ReadBuffer, made at its first use (a stand-in for a loop
    in a test gets one too)."""
    buffer = getattr(loop, "read_buffer", None)
    if buffer is None:
        buffer = loop.read_buffer = ReadBuffer()
    return buffer
