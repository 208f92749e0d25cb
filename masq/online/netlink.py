"""Interface detector `iface:NAME`: Linux rtnetlink, one socket shared by every iface route.

Owns the rtnetlink wire format (struct: nlmsghdr, ifinfomsg, ifaddrmsg, rtmsg, rtattr),
a table of links, addresses and default routes kept current from RTM_NEW/DELLINK,
RTM_NEW/DELADDR (and RTM_NEW/DELROUTE with `online_require_route`), and the verdict:
NAME, or one of OpenWrt's NAME_4 / NAME_6, is operationally up (operstate "up", or
"unknown" with IFF_UP and IFF_RUNNING as ppp and tun report), has an address of global
scope (not tentative; IPv6 link-local does not count) and, with the option, a default
route through it in the main table. The socket is non-blocking and read by the loop.

Start-up: bind first (no event is missed), read /sys/class/net/NAME/{ifindex,flags,
operstate}, then dump addresses (and routes); verdicts come once the dumps are done. On
ENOBUFS (events lost) everything is read again. Linux does not announce the IPv4 routes
it drops when a link goes down or loses an address: routes are dumped again then.

Hostile input: none expected (the kernel), but every length is checked; a malformed
message ends the parse of its datagram. Fails: no AF_NETLINK means offline, with an error.
"""

import errno
import socket
import struct

from masq.base import reads

NETLINK_ROUTE = 0
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE = 0x40, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300

IFLA_IFNAME, IFLA_OPERSTATE = 3, 16
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 4, 5, 6, 15
IFF_UP, IFF_RUNNING = 0x1, 0x40
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40
RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, RTN_UNICAST = 0, 254, 1
OPERSTATES = ("unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up")
SYSFS = "/sys/class/net"

_HEADER = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")


# the wire format

def messages(data):
    """Return (type, seq, port, payload) for each netlink message in a datagram."""
    found, pos = [], 0
    while pos + _HEADER.size <= len(data):
        length, kind, _, seq, port = _HEADER.unpack_from(data, pos)
        if length < _HEADER.size or pos + length > len(data):
            break
        found.append((kind, seq, port, data[pos + _HEADER.size:pos + length]))
        pos += (length + 3) & ~3
    return found


def attributes(data, pos):
    """Return {type: value bytes} of the rtattrs in data from pos on."""
    found = {}
    while pos + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, pos)
        if length < _RTATTR.size or pos + length > len(data):
            break
        found[kind & 0x3fff] = data[pos + _RTATTR.size:pos + length]
        pos += (length + 3) & ~3
    return found


def _u32(value, default=None):
    return struct.unpack("=I", value[:4])[0] if value and len(value) >= 4 else default


def parse_link(payload):
    """Return (index, flags, name or None, operstate or None) of an ifinfomsg, or None."""
    if len(payload) < _IFINFO.size:
        return None
    _, _, index, flags, _ = _IFINFO.unpack_from(payload)
    attrs = attributes(payload, _IFINFO.size)
    name = attrs.get(IFLA_IFNAME)
    name = name.split(b"\0", 1)[0].decode("utf-8", "replace") if name else None
    state = attrs.get(IFLA_OPERSTATE)
    operstate = OPERSTATES[state[0]] if state and state[0] < len(OPERSTATES) else None
    return index, flags, name, operstate


def parse_address(payload):
    """Return (index, key, counts) of an ifaddrmsg, or None; key names the address."""
    if len(payload) < _IFADDR.size:
        return None
    family, prefixlen, flags, scope, index = _IFADDR.unpack_from(payload)
    attrs = attributes(payload, _IFADDR.size)
    address = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if address is None:
        return None
    flags = _u32(attrs.get(IFA_FLAGS), flags)
    counts = scope == RT_SCOPE_UNIVERSE and not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)
    return index, (family, prefixlen, address), counts


def parse_route(payload):
    """Return (index, key) of a default unicast route in the main table, else None."""
    if len(payload) < _RTMSG.size:
        return None
    family, dst_len, _, _, table, _, _, kind, _ = _RTMSG.unpack_from(payload)
    attrs = attributes(payload, _RTMSG.size)
    table = _u32(attrs.get(RTA_TABLE), table)
    index = _u32(attrs.get(RTA_OIF))
    if dst_len != 0 or kind != RTN_UNICAST or table != RT_TABLE_MAIN or index is None:
        return None
    key = (family, index, _u32(attrs.get(RTA_PRIORITY), 0), attrs.get(RTA_GATEWAY))
    return index, key


def read_sysfs(name, root=SYSFS):
    """Return (index, flags, operstate) of interface name from sysfs, or None."""
    try:
        with open("%s/%s/ifindex" % (root, name)) as f:
            index = int(f.read().strip())
        with open("%s/%s/flags" % (root, name)) as f:
            flags = int(f.read().strip(), 16)
        with open("%s/%s/operstate" % (root, name)) as f:
            operstate = f.read().strip()
    except (OSError, ValueError):
        return None
    return index, flags, operstate


# the table

class Table:
    """Links, addresses and default routes as far as the kernel has told us."""

    def __init__(self):
        self.links = {}         # index -> [name, flags, operstate]
        self.addresses = {}     # index -> set of address keys that count
        self.routes = {}        # route key -> index

    def set_link(self, index, flags, name, operstate):
        """Record what is known of link index (None: unchanged)."""
        link = self.links.setdefault(index, [name, flags, operstate or "unknown"])
        if name is not None:
            for other, known in list(self.links.items()):
                if other != index and known[0] == name:
                    del self.links[other]
            link[0] = name
        link[1] = flags
        if operstate is not None:
            link[2] = operstate

    def drop_link(self, index):
        """Forget link index and everything on it."""
        self.links.pop(index, None)
        self.addresses.pop(index, None)
        self.routes = {k: i for k, i in self.routes.items() if i != index}

    def index_of(self, name):
        """Return the index of the link called name, or None."""
        for index, link in self.links.items():
            if link[0] == name:
                return index
        return None

    def usable(self, name, need_route=False):
        """Return True if interface name is up, addressed (and routed, if asked)."""
        index = self.index_of(name)
        if index is None:
            return False
        _, flags, operstate = self.links[index]
        running = flags & (IFF_UP | IFF_RUNNING) == IFF_UP | IFF_RUNNING
        if not (operstate == "up" or (operstate == "unknown" and running)):
            return False
        if not self.addresses.get(index):
            return False
        return not need_route or index in self.routes.values()


# the shared socket

class Netlink:
    """One rtnetlink socket kept current in the loop; watchers get changed() calls."""

    def __init__(self, loop, with_routes=False, sysfs=SYSFS):
        self.loop = loop
        self.with_routes = with_routes
        self.sysfs = sysfs
        self.sock = None
        self.port = None            # our port id: dump replies carry it, events do not
        self.table = Table()
        self.watchers = []
        self.names = set()
        self.seq = 0
        self.dumps = []             # dump kinds still to ask for
        self.dumping = None         # (kind, seq, staging) of the dump in flight
        self.ready = False

    def open(self, groups=None):
        """Open and bind the socket, start the dumps; return self (OSError if impossible)."""
        if groups is None:
            groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
            if self.with_routes:
                groups |= RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        self.sock.bind((0, groups))
        self.port = self.sock.getsockname()[0]
        self.sock.setblocking(False)
        if self.loop is not None:
            self.loop.add_reader(self.sock, self._readable)
        self.resync()
        return self

    def close(self):
        """Close the socket."""
        if self.sock is not None:
            if self.loop is not None:
                self.loop.remove_reader(self.sock)
            self.sock.close()
            self.sock = None
        self.watchers = []

    def watch(self, watcher):
        """Call watcher.changed() whenever the table changes (and now, if it is known)."""
        self.watchers.append(watcher)
        for name in watcher.names:
            if name not in self.names:
                self.names.add(name)
                self._read_sysfs(name)
        if self.ready:
            watcher.changed()

    def unwatch(self, watcher):
        """Stop calling watcher."""
        if watcher in self.watchers:
            self.watchers.remove(watcher)

    def resync(self):
        """Read sysfs and dump addresses (and routes) again."""
        for name in self.names:
            self._read_sysfs(name)
        self.dumps = [RTM_GETADDR] + ([RTM_GETROUTE] if self.with_routes else [])
        self.dumping = None
        self._next_dump()

    def _read_sysfs(self, name):
        found = read_sysfs(name, self.sysfs)
        if found is None:
            index = self.table.index_of(name)
            if index is not None:
                self.table.drop_link(index)
            return
        index, flags, operstate = found
        self.table.set_link(index, flags, name, operstate)

    def _next_dump(self):
        if not self.dumps:
            self.dumping = None
            self.ready = True
            return
        kind = self.dumps.pop(0)
        self.seq += 1
        body = bytes(_IFADDR.size if kind == RTM_GETADDR else _RTMSG.size)
        flags = NLM_F_REQUEST | NLM_F_DUMP
        self.dumping = (kind, self.seq, {})
        try:
            self.sock.send(_HEADER.pack(_HEADER.size + len(body), kind, flags, self.seq, 0)
                           + body)
        except OSError:
            self.dumping = None
            self.ready = True

    def _want_routes_again(self):
        if self.with_routes and RTM_GETROUTE not in self.dumps:
            self.dumps.append(RTM_GETROUTE)
            if self.dumping is None:
                self._next_dump()

    # reading

    def _readable(self):
        changed = False
        while self.sock is not None:
            try:
                data = reads.for_loop(self.loop).recv(self.sock)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    break
                self.resync()           # the kernel dropped events: read everything again
                changed = True
                continue
            self.feed(data)
            changed = True
        if changed and self.ready:
            for watcher in list(self.watchers):
                watcher.changed()

    def feed(self, data):
        """Apply one datagram from the kernel to the table."""
        for kind, seq, port, payload in messages(data):
            reply = seq if port == self.port else None      # None: an event
            if kind in (NLMSG_DONE, NLMSG_ERROR):
                if self.dumping is not None and reply == self.dumping[1]:
                    self._dump_done()
            elif kind in (RTM_NEWLINK, RTM_DELLINK):
                self._link(kind, payload)
            elif kind in (RTM_NEWADDR, RTM_DELADDR):
                self._address(kind, payload, reply)
            elif kind in (RTM_NEWROUTE, RTM_DELROUTE):
                self._route(kind, payload, reply)

    def _dump_done(self):
        kind, _, staging = self.dumping
        if kind == RTM_GETADDR:
            self.table.addresses = staging
        else:
            self.table.routes = staging
        self._next_dump()

    def _staging(self, kind, reply):
        """Return the tables an address or route message applies to."""
        dumping = self.dumping is not None and self.dumping[0] == kind
        if reply is not None:                   # part of a dump we asked for
            return [self.dumping[2]] if dumping and reply == self.dumping[1] else []
        tables = [self.table.addresses if kind == RTM_GETADDR else self.table.routes]
        if dumping:
            tables.append(self.dumping[2])      # an event during the dump: apply to both
        return tables

    def _link(self, kind, payload):
        parsed = parse_link(payload)
        if parsed is None:
            return
        index, flags, name, operstate = parsed
        known = self.table.links.get(index)
        if kind == RTM_DELLINK:
            self.table.drop_link(index)
            return
        self.table.set_link(index, flags, name, operstate)
        if known is not None and known[1] & IFF_UP and not flags & IFF_UP:
            self._want_routes_again()

    def _address(self, kind, payload, reply):
        parsed = parse_address(payload)
        if parsed is None:
            return
        index, key, counts = parsed
        for table in self._staging(RTM_GETADDR, reply):
            keys = table.setdefault(index, set())
            if kind == RTM_NEWADDR and counts:
                keys.add(key)
            else:
                keys.discard(key)
        if kind == RTM_DELADDR and reply is None:
            self._want_routes_again()

    def _route(self, kind, payload, reply):
        parsed = parse_route(payload)
        if parsed is None:
            return
        index, key = parsed
        for table in self._staging(RTM_GETROUTE, reply):
            if kind == RTM_NEWROUTE:
                table[key] = index
            else:
                table.pop(key, None)


def candidates(name):
    """Return the interface names that count for `iface:name` (OpenWrt's X, X_4, X_6)."""
    return (name, name + "_4", name + "_6")


class IfaceDetector:
    """`iface:NAME`: online while the interface is up and addressed (netlink events)."""

    polled = False

    def __init__(self, ctx, route, arg):
        self.ctx = ctx
        self.name = route.name
        self.names = candidates(arg)
        self.need_route = bool(route.online_require_route)
        self.netlink = None
        self.last = None

    def start(self):
        """Join the shared socket (opening it if this is the first iface route)."""
        try:
            self.netlink = self.ctx.shared("netlink", self._open)
        except (OSError, AttributeError) as exc:     # AttributeError: no AF_NETLINK here
            self.ctx.report(self.name, False, "cannot open rtnetlink: %s" % exc)
            return
        self.netlink.watch(self)

    def _open(self):
        with_routes = any(r.online.startswith("iface:") and r.online_require_route
                          for r in self.ctx.cfg.routes)
        return Netlink(self.ctx.loop, with_routes).open()

    def stop(self):
        """Leave the shared socket."""
        if self.netlink is not None:
            self.netlink.unwatch(self)
            self.netlink = None

    def changed(self):
        """Judge again after a change; report only a different verdict."""
        online = any(self.netlink.table.usable(n, self.need_route) for n in self.names)
        if online != self.last:
            self.last = online
            self.ctx.report(self.name, online)


def probe(iface, need_route=False, timeout=2.0):
    """Return True if `iface:NAME` is online now (synchronous, for runs without a daemon)."""
    netlink = Netlink(None, need_route)
    netlink.names.update(candidates(iface))
    try:
        netlink.open(groups=0)
    except (OSError, AttributeError):
        return False
    try:
        netlink.sock.settimeout(timeout)
        while not netlink.ready:
            netlink.feed(netlink.sock.recv(65536))
        return any(netlink.table.usable(n, need_route) for n in candidates(iface))
    except OSError:
        return False
    finally:
        netlink.close()
