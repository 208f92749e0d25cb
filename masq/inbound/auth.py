"""SMTP AUTH for incoming mail: checking credentials, slowing and limiting failures.

Owns the decision on an AuthRequest from the engine: the user must be a `config user`
section, the password must match its stored hash (constant-time; an unknown user costs the
same as a known one, so replies do not tell which names exist), and an authorization
identity other than the user itself is refused. Each failure is answered after a delay, and
a client address (an IPv6 client by its /64) with too many recent failures is refused
outright (`450 4.7.1`) until they age out.
"""

from masq.base import net
from masq.proto.reply import Reply

FAILURE_DELAY = 1.0
WINDOW = 600.0
MAX_FAILURES = 10
FAILED = Reply(535, "5.7.8", "Wrong user name or password")
LIMITED = Reply(450, "4.7.1", "Too many failed logins; try again later")
_DUMMY = []          # a hash to check unknown users against, made on first use


class Limiter:
    """Recent authentication failures per client address."""

    def __init__(self, window=WINDOW, limit=MAX_FAILURES):
        self.window = window
        self.limit = limit
        self.failures = {}

    def blocked(self, ip, now):
        """Return True while ip has too many recent failures."""
        recent = [t for t in self.failures.get(ip, ()) if now - t < self.window]
        if recent:
            self.failures[ip] = recent
        else:
            self.failures.pop(ip, None)
        return len(recent) >= self.limit

    def failed(self, ip, now):
        """Record a failure for ip."""
        self.failures.setdefault(ip, []).append(now)
        if len(self.failures) > 4096:          # bounded: forget the oldest client
            self.failures.pop(next(iter(self.failures)))


def check(users, event):
    """Return the user name if the credentials of event are good, else None."""
    try:
        user = event.username.decode("utf-8")
    except UnicodeDecodeError:
        user = None
    from masq.policy import passwords      # hashlib: only when someone authenticates
    if not _DUMMY:
        _DUMMY.append(passwords.hash_password("not a password", salt=b"masq-dummy-s"))
    section = users.get(user) if user else None
    stored = section.password if section is not None and section.password else _DUMMY[0]
    good = passwords.verify(stored, event.password)
    if section is None or not good:
        return None
    if event.authzid and event.authzid != event.username:
        return None
    return user


def authenticate(listener, session, event):
    """Answer an AuthRequest for session, after a delay if it fails."""
    now = listener.loop.now
    ip, key = session.peer.ip, net.client_key(session.peer.ip)
    if listener.limiter.blocked(key, now):
        session.respond(LIMITED)
        return
    user = check(listener.settings.users, event)
    if user is not None:
        session.peer.auth_user = user
        listener.log.info("%s authenticated as %s", ip, user)
        session.respond(None)
        return
    listener.limiter.failed(key, now)
    listener.log.warning("authentication failed for %s", ip)
    listener.loop.call_later(listener.auth_delay, lambda: session.respond(FAILED))
