"""Fuzz rtnetlink messages (masq/online/netlink.py) as the interface detector reads them.

Input: datagrams of netlink messages from the rtnetlink grammar (NEWLINK/DELLINK,
NEWADDR/DELADDR, NEWROUTE/DELROUTE, DONE and ERROR, as dump replies to our port and
sequence or as events) whose headers and rtattrs carry right, short, overlong and zero
lengths, mixed with random bytes; fed to a Netlink whose socket is one end of a socket
pair (the dumps it asks for again go there).
Properties: feeding never raises; the table stays consistent (addresses and routes keyed
by interface index, links with an int flag word), `usable` answers a bool for any name,
and the table never holds more entries than the messages fed so far.
"""

import socket
import struct

from hypothesis import given, strategies as st

from fuzzing import fuzz_settings, mutated
from masq.online import netlink

PORT = 4242


def attr(kind, value, extra=0):
    return struct.pack("=HH", len(value) + 4 + extra, kind) + value + bytes(-len(value) % 4)


_attrs = st.lists(st.one_of(
    st.tuples(st.sampled_from([netlink.IFLA_IFNAME, netlink.IFA_ADDRESS, netlink.IFA_LOCAL,
                               netlink.RTA_OIF, netlink.RTA_TABLE, netlink.RTA_PRIORITY,
                               netlink.IFA_FLAGS, netlink.IFLA_OPERSTATE,
                               netlink.RTA_GATEWAY, 0x8003]),
              st.sampled_from([b"ppp0\0", b"eth0", b"\x07\0\0\0", b"\xfe\0\0\0", b"\x06",
                               b"\x0a\0\0\x01", b"", b"\xff" * 16]),
              st.sampled_from([0, 0, 0, 1, -2, 100])).map(lambda t: attr(*t)),
    st.binary(max_size=12)), max_size=5).map(b"".join)


@st.composite
def message(draw):
    kind = draw(st.sampled_from([netlink.RTM_NEWLINK, netlink.RTM_DELLINK,
                                 netlink.RTM_NEWADDR, netlink.RTM_DELADDR,
                                 netlink.RTM_NEWROUTE, netlink.RTM_DELROUTE,
                                 netlink.NLMSG_DONE, netlink.NLMSG_ERROR, 99]))
    fixed = {netlink.RTM_NEWLINK: 16, netlink.RTM_DELLINK: 16, netlink.RTM_NEWADDR: 8,
             netlink.RTM_DELADDR: 8, netlink.RTM_NEWROUTE: 12,
             netlink.RTM_DELROUTE: 12}.get(kind, 4)
    head = draw(st.binary(min_size=fixed, max_size=fixed))
    if kind in (netlink.RTM_NEWLINK, netlink.RTM_DELLINK, netlink.RTM_NEWADDR,
                netlink.RTM_DELADDR) and draw(st.booleans()):
        index = draw(st.integers(0, 8))
        head = (head[:4] + struct.pack("=i", index) + head[8:] if fixed == 16
                else head[:4] + struct.pack("=I", index))
    body = head + draw(_attrs)
    seq = draw(st.sampled_from([0, 1, 2, 3, 77]))
    port = draw(st.sampled_from([0, PORT, 1]))
    length = 16 + len(body) + draw(st.sampled_from([0, 0, 0, 3, -1, 1000]))
    return struct.pack("=IHHII", max(0, length) & 0xFFFFFFFF, kind, 0, seq, port) + body


_datagram = st.one_of(st.lists(message(), max_size=6).map(b"".join),
                      mutated(st.lists(message(), max_size=4).map(b"".join)),
                      st.binary(max_size=100))


@fuzz_settings()
@given(st.lists(_datagram, max_size=6), st.booleans())
def test_any_datagram_keeps_the_table_consistent(datagrams, with_routes):
    ours, theirs = socket.socketpair()
    try:
        watcher = netlink.Netlink(None, with_routes=with_routes)
        watcher.sock, watcher.port = ours, PORT
        watcher.resync()
        fed = 0
        for data in datagrams:
            watcher.feed(data)
            fed += len(netlink.messages(data))
            table = watcher.table
            assert sum(len(keys) for keys in table.addresses.values()) <= fed
            assert len(table.links) + len(table.routes) <= fed
        table = watcher.table
        assert all(isinstance(i, int) and isinstance(link[1], int)
                   for i, link in table.links.items())
        assert all(isinstance(i, int) for i in table.addresses)
        for name in ("ppp0", "eth0", "wan", ""):
            assert isinstance(table.usable(name, need_route=with_routes), bool)
    finally:
        ours.close()
        theirs.close()
