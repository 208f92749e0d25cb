"""`masq setup PRESET`: write a working configuration for a common case.

Owns the presets (local, smarthost, dialup, mobile, lan-relay), their options, and board
profiles (board/*.conf: `key = value` lines, see board/README.md): finding, parsing and
listing them. A preset becomes UCI sections, the text is checked with masq.config.schema.loads
exactly as the daemon will read it, and only then written atomically with
masq.config.uci.write_file (mode 0600 for a new file: routes hold passwords).

Does not touch an existing file without --force (exit 73), does not start, stop or
reload the daemon, and resolves no names: hosts and addresses are checked for form only.

Hostile input: the command line is the administrator's and may be mistyped; every
problem is one line and exit 64 (usage) or 78 (a board profile that cannot be read).
"""

import argparse
import os
import re
import sys

from masq import __version__
from masq.base import exits
from masq.config import uci

PRESETS = ("local", "smarthost", "dialup", "mobile", "lan-relay")
# Which options each preset takes, besides the common ones (COMMON).
COMMON = ("hostname", "spool", "local_domain", "mailbox")
PRESET_OPTIONS = {
    "local": (),
    "smarthost": ("host", "user", "password", "tls", "route", "online", "board"),
    "dialup": ("host", "user", "password", "tls", "route", "online", "board"),
    "mobile": ("host", "user", "password", "tls", "route", "online", "board"),
    "lan-relay": ("host", "user", "password", "tls", "route", "online", "board", "lan",
                  "listen"),
}
DEFAULT_ROUTE = {"smarthost": "smarthost", "lan-relay": "smarthost", "dialup": "dialup",
                 "mobile": "mobile"}
TLS_PORTS = {"starttls": "587", "tls": "465"}   # submission ports when --host has none
IMPLICIT_TLS_PORT = "465"                       # smtps: TLS from the first byte
PRESET_HELP = """\
presets (each writes config masq 'main'; all but local add one route):
  local       mail for this machine only (local domains, mailboxes); no route.
              Takes --local-domain, --mailbox.
  smarthost   everything else through a provider's server while always online.
              Needs --host HOST[:PORT]; --user/--password for AUTH; --tls
              (default starttls on 587; port 465 means --tls tls).
  dialup      a route online while the PPP link is up (iface:ppp0, --online or a
              --board profile): through --host if given, else to the MX hosts.
  mobile      a route online while the 3G/LTE modem's link is up: needs --board
              NAME (masq setup --boards) or --online DETECTOR; --host as dialup.
  lan-relay   a smarthost route, and hosts of the LAN may relay through masq.
              Needs --host, --lan NETWORK and --listen ADDRESS[:PORT].
"""
LOOPBACK_NETS = ["127.0.0.0/8", "::1/128"]
BOARD_KEYS = ("description", "online", "route", "modem_port", "usb_id", "at_interface",
              "data_interface", "net_interface", "driver", "net_device",
              "control_device", "openwrt_board", "openwrt_proto", "openwrt_interface")
BOARD_REQUIRED = ("description", "online")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:\s]+)(?::([0-9]{1,5}))?")


def run(path, rest):
    """Run `masq setup` with its arguments (-C already taken out); return the status."""
    args = _parser().parse_args(rest)
    if args.boards:
        return _list_boards()
    if args.preset is None:
        raise exits.Failure("setup: name a preset: %s (or --boards)" % ", ".join(PRESETS),
                            exits.USAGE)
    _check_options(args)
    target = target_path(path)
    sections = build(args)
    text = render(sections, args.preset)
    _validate(text, target)
    write(target, text, args.force)
    print("wrote %s (preset %s); `masq check-config` shows the effective settings"
          % (target, args.preset))
    return exits.OK


class _Parser(argparse.ArgumentParser):
    """argparse that fails with one line and exit 64 instead of printing usage."""

    def error(self, message):
        raise exits.Failure("setup: %s" % message, exits.USAGE)


def _parser():
    p = _Parser(prog="masq setup", allow_abbrev=False,
                description="Write a configuration for a common case.", epilog=PRESET_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", nargs="?", choices=PRESETS)
    p.add_argument("--boards", action="store_true", help="list the board profiles")
    p.add_argument("--board", help="board profile: the route's online detector")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--hostname", help="our name (default: the system host name)")
    p.add_argument("--spool", help="spool directory (default: on flash on OpenWrt)")
    p.add_argument("--local-domain", action="append", dest="local_domain",
                   help="a domain delivered here (repeat for more)")
    p.add_argument("--mailbox", help="maildir:PATH, mbox:PATH or mda:COMMAND")
    p.add_argument("--host", help="smarthost HOST[:PORT]")
    p.add_argument("--user", help="smarthost AUTH user")
    p.add_argument("--password", help="smarthost AUTH password ('-': read from stdin)")
    p.add_argument("--tls", choices=("starttls", "tls", "opportunistic", "none"))
    p.add_argument("--route", help="route name")
    p.add_argument("--online", help="online detector, or 'modem' (the board's AT port)")
    p.add_argument("--lan", help="LAN network allowed to relay, e.g. 192.168.1.0/24")
    p.add_argument("--listen", help="LAN address to listen on, ADDR[:PORT]")
    return p


def _check_options(args):
    allowed = set(COMMON) | set(PRESET_OPTIONS[args.preset])
    for name in COMMON + ("host", "user", "password", "tls", "route", "online", "board",
                          "lan", "listen"):
        if getattr(args, name) is not None and name not in allowed:
            raise exits.Failure("setup %s: --%s is not used by this preset"
                                % (args.preset, name.replace("_", "-")), exits.USAGE)
    needed = {"smarthost": ("host",), "lan-relay": ("host", "lan", "listen")}
    missing = ["--" + name for name in needed.get(args.preset, ())
               if getattr(args, name) is None]
    if missing:
        listed = (missing[0] if len(missing) == 1 else
                  "%s and %s" % (", ".join(missing[:-1]), missing[-1]))
        raise exits.Failure("setup %s: %s %s required" % (
            args.preset, listed, "is" if len(missing) == 1 else "are"), exits.USAGE)
    if (args.user is None) != (args.password is None):
        raise exits.Failure("setup: --user and --password go together", exits.USAGE)
    if args.user is not None and args.host is None:
        raise exits.Failure("setup: --user needs --host (AUTH is for a smarthost)",
                            exits.USAGE)


def target_path(explicit=None):
    """Return the file to write: -C, $MASQ_CONFIG, /etc/config/masq on OpenWrt, or
    /etc/masq.conf."""
    if explicit:
        return explicit
    if os.environ.get("MASQ_CONFIG"):
        return os.environ["MASQ_CONFIG"]
    return "/etc/config/masq" if os.path.isdir("/etc/config") else "/etc/masq.conf"


def default_spool():
    """Return the default spool: on flash on OpenWrt (/var is RAM there)."""
    if os.path.exists("/etc/openwrt_release"):
        return "/usr/var/spool/masq"
    return "/var/spool/masq"


def build(args):
    """Return the UCI sections (RawSection list) of the preset args.preset."""
    sections = [_main_section(args)]
    if args.preset != "local":
        sections.append(_route_section(args))
    return sections


def _section(kind, name, options):
    section = uci.RawSection(kind, name, 0)
    for key, value in options:
        if value is not None and value != []:
            section.options[key] = uci.RawOption(value, 0)
    return section


def _main_section(args):
    listen = ["smtp://127.0.0.1:25"]
    relay = None
    if args.preset == "lan-relay":
        lan = _network(args.lan)
        listen.append("smtp://%s" % _listen_address(args.listen, lan))
        relay = LOOPBACK_NETS + [args.lan]
    return _section("masq", "main", [
        ("hostname", args.hostname),
        ("spool_dir", args.spool or default_spool()),
        ("listen", listen),
        ("local_domain", args.local_domain),
        ("relay_net", relay),
        ("mailbox", args.mailbox),
    ])


def _route_section(args):
    board = load_board(args.board) if args.board else {}
    name = args.route or board.get("route") or DEFAULT_ROUTE[args.preset]
    if not uci.is_name(name):
        raise exits.Failure("setup: route name %r: use letters, digits and _" % name,
                            exits.USAGE)
    options = [("online", _detector(args, board))]
    if args.host is not None:
        tls = args.tls or ("tls" if _port(args.host) == IMPLICIT_TLS_PORT else "starttls")
        if tls == "starttls" and _port(args.host) == IMPLICIT_TLS_PORT:
            raise exits.Failure("setup: --host %s with --tls starttls: port 465 speaks TLS "
                                "from the first byte (use --tls tls, or port 587 for "
                                "STARTTLS)" % args.host, exits.USAGE)
        options += [("smarthost", _smarthost(args.host, tls)), ("tls", tls)]
        if args.user is not None:
            options += [("auth_user", args.user), ("auth_pass", _password(args.password))]
    elif args.tls is not None:
        options.append(("tls", args.tls))
    return _section("route", name, options)


def _detector(args, board):
    """Return the route's `online` value: --online, else the board's, else the preset's."""
    if args.online == "modem":
        return "modem:" + _modem_device(board)
    if args.online:
        return args.online
    if board:
        return board["online"]
    if args.preset == "dialup":
        return "iface:ppp0"
    if args.preset == "mobile":
        raise exits.Failure("setup mobile: name the modem with --board NAME (see "
                            "`masq setup --boards`) or give --online DETECTOR",
                            exits.USAGE)
    return "always"


def _modem_device(board):
    """Return the board's AT port for the modem detector: usb:VID:PID:IF, which survives
    renumbering, else its modem_port path."""
    usb_id, interface = board.get("usb_id"), board.get("at_interface")
    if usb_id and interface and interface.isdigit():
        return "usb:%s:%02x" % (usb_id, int(interface))
    if board.get("modem_port"):
        return board["modem_port"]
    raise exits.Failure("setup: --online modem needs a --board with usb_id and "
                        "at_interface, or a modem_port", exits.USAGE)


def _port(text):
    """Return the port --host names, or None."""
    match = _HOST_PORT.fullmatch(text)
    return match.group(2) if match else None


def _smarthost(text, tls):
    match = _HOST_PORT.fullmatch(text)
    if not match:
        raise exits.Failure("setup: --host %r: expected HOST[:PORT]" % text, exits.USAGE)
    if match.group(2) or tls not in TLS_PORTS:
        return text
    return "%s:%s" % (text, TLS_PORTS[tls])


def _password(value):
    if value != "-":
        return value
    line = sys.stdin.readline()
    if not line:
        raise exits.Failure("setup: --password -: nothing on standard input", exits.USAGE)
    return line.rstrip("\r\n")


def _network(text):
    import ipaddress
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise exits.Failure("setup: --lan %r: expected a network such as 192.168.1.0/24"
                            % text, exits.USAGE) from None


def _listen_address(text, lan):
    """Return ADDR:PORT for the LAN listener (IPv6 in brackets); warn if not in lan."""
    import ipaddress
    host, port = text, "25"
    match = re.fullmatch(r"\[([^\]]+)\](?::([0-9]{1,5}))?|([^:]+)(?::([0-9]{1,5}))?", text)
    if match:
        host = match.group(1) or match.group(3)
        port = match.group(2) or match.group(4) or port
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise exits.Failure("setup: --listen %r: expected an IP address, optionally "
                            "with :PORT" % text, exits.USAGE) from None
    if address not in lan:
        sys.stderr.write("masq: warning: --listen %s is not in --lan %s\n" % (host, lan))
    shown = "[%s]" % address if address.version == 6 else str(address)
    return "%s:%s" % (shown, port)


def render(sections, preset):
    """Return the configuration text: a header comment and the sections in UCI format."""
    header = ("# masq configuration, written by `masq setup %s` (masq %s).\n"
              "# Every option: docs/CONFIG.md. Check it with `masq check-config`.\n"
              % (preset, __version__))
    return header + uci.dump(sections)


def _validate(text, target):
    from masq.config import schema as config
    try:
        config.loads(text, target)
    except config.ConfigError as exc:
        raise exits.Failure("setup: the options give an invalid configuration: %s" % exc,
                            exits.USAGE) from None


def write(target, text, force=False):
    """Write text to target atomically; refuse to replace a file unless force."""
    if os.path.lexists(target) and not force:
        raise exits.Failure("%s already exists; not replaced (use --force to overwrite "
                            "it)" % target, exits.CANTCREAT)
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise exits.Failure("cannot create %s: no directory %s" % (target, directory),
                            exits.CANTCREAT)
    try:
        uci.write_file(target, text)
    except OSError as exc:
        raise exits.Failure("cannot write %s: %s" % (target, exc.strerror or exc),
                            exits.CANTCREAT) from None


def board_dirs():
    """Return the folders searched for board profiles, in order."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    dirs = [os.environ.get("MASQ_BOARD_DIR"), "/usr/share/masq/board",
            os.path.join(here, "board")]
    return [d for d in dirs if d]


def find_board(name):
    """Return the path of board profile name (a name with a `/` is a path)."""
    if "/" in name:
        return name
    for folder in board_dirs():
        path = os.path.join(folder, name + ".conf")
        if os.path.isfile(path):
            return path
    raise exits.Failure("no board profile %r (`masq setup --boards` lists them)" % name,
                        exits.USAGE)


def load_board(name):
    """Return the board profile called name as a dict of key -> value."""
    path = find_board(name)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise exits.Failure("cannot read board profile %s: %s" % (path, exc),
                            exits.CONFIG) from None
    return parse_board(text, path)


def parse_board(text, path="<board>"):
    """Return the key -> value dict of a board profile's text; Failure(78) if bad."""
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not value:
            _board_error(path, number, "expected `key = value`")
        if key not in BOARD_KEYS:
            _board_error(path, number, "unknown key %r (known: %s)"
                         % (key, ", ".join(BOARD_KEYS)))
        if key in values:
            _board_error(path, number, "%s given twice" % key)
        values[key] = value
    for key in BOARD_REQUIRED:
        if key not in values:
            _board_error(path, 0, "no %s" % key)
    return values


def _board_error(path, line, message):
    where = "%s:%d" % (path, line) if line else path
    raise exits.Failure("%s: %s" % (where, message), exits.CONFIG)


def _list_boards():
    seen = set()
    for folder in board_dirs():
        try:
            names = sorted(n[:-5] for n in os.listdir(folder) if n.endswith(".conf"))
        except OSError:
            continue
        for name in names:
            if name not in seen:
                seen.add(name)
                board = load_board(os.path.join(folder, name + ".conf"))
                print("%-20s %s" % (name, board["description"]))
    return exits.OK
