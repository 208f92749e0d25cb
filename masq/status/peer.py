"""Who is on the other end of a loopback TCP connection: its owner's uid, from the kernel.

TCP has no SO_PEERCRED, but on loopback both ends are sockets of this host, and the
kernel's socket table (/proc/net/tcp, /proc/net/tcp6: the table netstat and identd read)
names the uid that created each one. The client's end is the row whose local address is
the client's and whose remote address is ours. The status page uses it to give a local
client on loopback the authority the control socket would give the same user.

Hostile input: none (the kernel's table). Fails closed: a non-loopback peer, a missing or
unreadable table, or no matching row answers None (unknown), never a guess.
"""

import ipaddress
import sys

TABLES = {4: "/proc/net/tcp", 6: "/proc/net/tcp6"}


def uid_of(ours, theirs):
    """Return the uid owning the client end of the connection ours <-> theirs, or None.

    ours and theirs are (ip, port, ...) as getsockname() and getpeername() give them."""
    try:
        ip = ipaddress.ip_address(theirs[0].split("%")[0])
        our_ip = ipaddress.ip_address(ours[0].split("%")[0])
    except ValueError:
        return None
    if not _loopback(ip):
        return None
    want = (_hex(ip, theirs[1]), _hex(our_ip, ours[1]))
    try:
        with open(TABLES[ip.version]) as table:
            next(table, None)                           # the heading
            for line in table:
                fields = line.split()
                if len(fields) > 7 and (fields[1], fields[2]) == want:
                    return int(fields[7])
    except (OSError, ValueError):
        return None
    return None


def _loopback(ip):
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _hex(ip, port):
    """Return an address as the kernel's table prints it: 32-bit words in host order."""
    packed = ip.packed
    words = [int.from_bytes(packed[i:i + 4], sys.byteorder) for i in range(0, len(packed), 4)]
    return "".join("%08X" % word for word in words) + ":%04X" % port
