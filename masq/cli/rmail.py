"""rmail: the envelope sender from the UUCP `From user DATE remote from HOST` line.

Owns reading that first line off stdin, as rmail(8) and the script masqmail ships do: the
sender is `user@HOST`, or `user` (qualified with the host name later) without a `remote
from`; `sendmail -i -f SENDER` then takes the rest. No bang-path translation (masqmail has
none): `hosta!alice` without `remote from` stays a local part. Input without a `From ` line
keeps the invoker as the sender.
"""

import os

MAX_LINE = 4096     # a From line longer than this is not one


def read_sender(fd=0):
    """Read the UUCP From line from fd; return (sender or None, the bytes read after it)."""
    data = b""
    while b"\n" not in data and len(data) < MAX_LINE:
        chunk = os.read(fd, MAX_LINE)
        if not chunk:
            break
        data += chunk
    line, sep, rest = data.partition(b"\n")
    sender = parse_from_line(line.decode("utf-8", "replace")) if sep else None
    if sender is None:
        return None, data
    return sender, rest


def parse_from_line(line):
    """Return the sender a `From user DATE [remote from HOST]` line names, or None."""
    words = line.rstrip("\r").split()
    if len(words) < 2 or words[0] != "From":
        return None
    user = words[1]
    if len(words) >= 4 and words[-3:-1] == ["remote", "from"]:
        return "%s@%s" % (user, words[-1])
    return user
