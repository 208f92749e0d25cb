"""Sendmail's command line: the flags masq takes as `sendmail`, `mailq`, `runq`, ...

Owns the parsing of sendmail-style flags (glued or separate arguments: `-fADDR` and
`-f ADDR`, `-q30m`, `-qo ROUTE`, `-go ROUTE`, `-Mrm ID...`) into an Options value, and the mapping from
the name masq was called by to a mode. Unknown flags and two different modes are usage
errors (exit 64) named in one line. Obsolete flags other MTAs ignore (`-m`, `-oX`, `-B X`)
are ignored here too, as masqmail and Postfix do.
"""

from masq.base import exits

NAME_MODES = {
    "sendmail": "bm", "rmail": "bm", "masq": "bm", "mailq": "bp", "runq": "q",
    "mailrm": "Mrm", "newaliases": "bi", "smtpd": "bs", "in.smtpd": "bs",
}
MODES = ("bm", "bp", "bs", "bd", "bD", "bi", "bV")
IGNORED_WITH_ARG = ("B", "N", "R", "V", "h", "L", "O")


class Options:
    """What a sendmail command line asks for."""

    def __init__(self, mode=None):
        self.mode = mode
        self.recipients = []
        self.extract = False          # -t
        self.dot_ends = True          # cleared by -i / -oi
        self.sender = None            # -f / -r
        self.fullname = None          # -F
        self.config = None            # -C
        self.queue_only = False       # -odq
        self.background = False       # -odb
        self.errors = "print"         # -oep (print) / -oem (mail)
        self.verbose = False          # -v
        self.interval = None          # -qINTERVAL
        self.route = None             # -qo ROUTE, -go ROUTE
        self.ids = []                 # -Mrm ID...
        self.uucp = False             # called as rmail: the sender is on the From line


def usage(text):
    """Return the Failure for a usage error."""
    return exits.Failure(text, exits.USAGE)


def parse(argv, name="sendmail"):
    """Return the Options that argv (without the program name) asks for."""
    opts = Options(NAME_MODES.get(name) if name in ("mailq", "runq", "newaliases",
                                                    "smtpd", "in.smtpd") else None)
    if name == "mailrm":
        opts.mode, opts.ids = "Mrm", []
    if name == "rmail":
        opts.dot_ends, opts.uucp = False, True
    args = list(argv)
    while args:
        arg = args.pop(0)
        if opts.mode == "Mrm" and not arg.startswith("-"):
            opts.ids.append(arg)
        elif arg == "--":
            opts.recipients.extend(args)
            break
        elif arg.startswith("-") and len(arg) > 1:
            _flag(opts, arg, args)
        else:
            opts.recipients.append(arg)
    if opts.mode is None:
        opts.mode = "bm"
    return opts


def _set_mode(opts, mode):
    daemon = ("bd", "bD")
    if opts.mode == "q" and mode in daemon:     # -q30m -bd: a daemon that runs the queue
        opts.mode = mode
        return
    if mode == "q" and opts.mode in daemon:
        return
    if opts.mode not in (None, mode):
        raise usage("conflicting modes: -%s and -%s" % (opts.mode, mode))
    opts.mode = mode


def _value(flag, rest, args):
    if rest:
        return rest
    if not args:
        raise usage("option -%s needs an argument" % flag)
    return args.pop(0)


def _flag(opts, arg, args):
    letter, rest = arg[1], arg[2:]
    handler = _HANDLERS.get(letter)
    if handler is None:
        raise usage("unknown option %s" % arg)
    handler(opts, rest, args, arg)


def _b(opts, rest, args, arg):
    if "b" + rest not in MODES:
        raise usage("unknown option %s" % arg)
    _set_mode(opts, "b" + rest)


def _o(opts, rest, args, arg):
    if rest == "i":
        opts.dot_ends = False
    elif rest == "dq":
        opts.queue_only = True
    elif rest == "db":
        opts.background = True
    elif rest in ("em", "ep", "ee", "eq", "ew"):
        opts.errors = "mail" if rest in ("em", "ee") else "print"
    # any other -oX is ignored, as masqmail and Postfix do


def _q(opts, rest, args, arg):
    _set_mode(opts, "q")
    if rest.startswith("o"):
        opts.route = _value("qo", rest[1:], args)
    elif rest:
        from masq.config.kinds import INTERVAL
        try:
            opts.interval = INTERVAL.convert(rest)
        except ValueError:
            raise usage("bad queue interval %r (use e.g. 30m, 1h)" % rest) from None


def _g(opts, rest, args, arg):
    """-g: fetch mail from every source whose route is online; -go ROUTE: from ROUTE's."""
    _set_mode(opts, "g")
    if rest.startswith("o"):
        opts.route = _value("go", rest[1:], args)
    elif rest:
        raise usage("unknown option %s" % arg)


def _m(opts, rest, args, arg):
    if rest != "rm":
        raise usage("unknown option %s" % arg)
    _set_mode(opts, "Mrm")
    opts.ids.extend(a for a in args if a != "--")
    del args[:]


def _simple(attr, value):
    def handler(opts, rest, args, arg):
        if rest:
            raise usage("unknown option %s" % arg)
        setattr(opts, attr, value)
    return handler


def _valued(attr):
    def handler(opts, rest, args, arg):
        setattr(opts, attr, _value(arg[1], rest, args))
    return handler


def _ignored_with_arg(opts, rest, args, arg):
    _value(arg[1], rest, args)


_HANDLERS = {
    "b": _b, "o": _o, "q": _q, "g": _g, "M": _m,
    "t": _simple("extract", True), "i": _simple("dot_ends", False),
    "v": _simple("verbose", True), "m": lambda *a: None,
    "f": _valued("sender"), "r": _valued("sender"), "F": _valued("fullname"),
    "C": _valued("config"),
}
_HANDLERS.update((letter, _ignored_with_arg) for letter in IGNORED_WITH_ARG)
