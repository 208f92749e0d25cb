"""Who is local: may mail for `local@<one of our domains>` be delivered here?

A local part is known when it is an alias, a system user (pwd), one of `local_users`, or
one of the names every MTA must accept (`postmaster`, RFC 5321 section 4.5.1; `root` and
`MAILER-DAEMON`). Names are compared case-insensitively, as Postfix does for local
delivery. Pure apart from the pwd lookup; the aliases are passed in.
"""

import pwd

ALWAYS = frozenset(("postmaster", "mailer-daemon", "root"))


def is_local_user(local, local_users=(), aliases=()):
    """Return True if local names a recipient this host delivers to."""
    name = local.lower()
    if name in ALWAYS or name in aliases:
        return True
    if name in (u.lower() for u in local_users):
        return True
    if "/" in local or "\0" in local:
        return False
    try:
        pwd.getpwnam(local)
        return True
    except KeyError:
        pass
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
