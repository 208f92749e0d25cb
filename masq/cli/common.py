"""What every `masq COMMAND` shares: taking `-C FILE` from anywhere among its arguments.

Reading the configuration is masq.config.load; opening the queue, masq.queue.opening; who
may do what, masq.policy.users.
"""

from masq.base import exits


def split_command_args(args):
    """Return (config path or None, the other args) for a command's arguments."""
    rest, path = [], None
    args = list(args)
    while args:
        arg = args.pop(0)
        if arg == "-C":
            if not args:
                raise exits.Failure("option -C needs a file", exits.USAGE)
            path = args.pop(0)
        elif arg.startswith("-C") and len(arg) > 2:
            path = arg[2:]
        else:
            rest.append(arg)
    return path, rest
