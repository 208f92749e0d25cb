"""masq.base.reads: every read comes out as bytes of its own, at its own length, whatever
the next read puts into the shared buffer; one buffer per loop."""

import os
import socket

from masq.base import reads
from masq.base.loop import Loop


def test_socket_reads_are_independent_copies_of_their_own_length():
    buffer = reads.ReadBuffer(1024)
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"first")
        first = buffer.recv(right)
        left.sendall(b"x" * 2000)
        second = buffer.recv(right)
        third = buffer.recv(right, 100)
        rest = buffer.recv(right)
        left.close()
        end = buffer.recv(right)
    assert (first, len(second), len(third), len(rest), end) == (b"first", 1024, 100, 876, b"")
    assert type(first) is bytes and second == b"x" * 1024 and third == b"x" * 100


def test_pipe_reads_stop_at_the_size_asked_and_at_the_end():
    buffer = reads.ReadBuffer(8)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"0123456789abc")
        os.close(write_end)
        got = [buffer.read(read_end, 4), buffer.read(read_end), buffer.read(read_end),
               buffer.read(read_end)]
    finally:
        os.close(read_end)
    assert got == [b"0123", b"456789ab", b"c", b""]


def test_one_buffer_per_loop():
    one, other = Loop(), Loop()
    try:
        assert reads.for_loop(one) is reads.for_loop(one)
        assert reads.for_loop(one) is not reads.for_loop(other)
    finally:
        one.close()
        other.close()
