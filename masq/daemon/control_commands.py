"""What the daemon does for each control request: status, queue, new, rm, release, online, flush, fetch.

Owns the table from command name to handler and who may run what: anyone may ask for
status, poke the daemon about new mail or ask for a flush of the routes that are online;
removing mail, releasing quarantined mail, overriding routes and forcing mail through a route that is offline need
root, the daemon's own user or a trusted user (or, for rm, the user who submitted the
message). Who may do what is masq.policy.users, which the status page asks too.
"""

from masq.base.host import FlushAsked, MessagesQueued
from masq.outbound.removal import remove_messages
from masq.policy.users import may_force, may_remove, trusted, user_name


def handle(daemon, req, uid, answer):
    """Carry out one control request and answer it."""
    cmd = req.get("cmd")
    handler = _HANDLERS.get(cmd) if isinstance(cmd, str) else None
    if handler is None:
        answer({"ok": False, "error": "unknown command %r" % (req.get("cmd"),)})
        return
    try:
        handler(daemon, req, uid, answer)
    except (KeyError, TypeError, ValueError) as exc:
        answer({"ok": False, "error": "bad request: %s" % exc})


def _status(daemon, req, uid, answer):
    answer({"ok": True, "status": daemon.status()})


def _new(daemon, req, uid, answer):
    new_mail(daemon)
    answer({"ok": True})


def new_mail(daemon):
    """Take the messages other processes committed (a poke, or the `new` request)."""
    daemon.queue.catch_up()
    ids = daemon.queue.take_foreign_commits()
    daemon.counters["accepted"] += len(ids)
    daemon.publish(MessagesQueued(tuple(ids)))


def _rm(daemon, req, uid, answer):
    remove_messages(daemon, req["ids"], user_name(uid), may_remove(daemon, uid),
                    answer)


def _release(daemon, req, uid, answer):
    if not trusted(daemon, uid):
        answer({"ok": False, "error": "permission denied", "denied": True})
        return
    from masq.outbound.release import release_each
    released, errors = release_each(daemon.queue, [str(i) for i in req["ids"]])
    for msgid in released:
        daemon.log.info("%s: released from quarantine by %s", msgid, user_name(uid))
    if not released:
        answer({"ok": not errors, "released": [], "errors": errors})
        return

    def synced(error):
        answer({"ok": error is None, "released": released,
                "errors": errors + ([str(error)] if error else [])})
        if error is None:
            daemon.publish(MessagesQueued(tuple(released)))
    daemon.queue.want_sync(synced)


def _online(daemon, req, uid, answer):
    if not trusted(daemon, uid):
        answer({"ok": False, "error": "permission denied", "denied": True})
        return
    name, how = req["route"], req["how"]
    if name not in daemon.online.by_name:
        answer({"ok": False, "error": "no route named %r" % name})
        return
    if how not in ("up", "down", "auto"):
        answer({"ok": False, "error": "say up, down or auto"})
        return
    daemon.online.set_override(name, how, daemon.loop.time())
    route = daemon.online.get(name)
    daemon.log.info("route %s set %s by %s: now %s", name, how, user_name(uid),
                    "online" if route.online else "offline")
    answer({"ok": True, "route": route.to_json()})


def _flush(daemon, req, uid, answer):
    route = req.get("route")
    if route is not None and route not in daemon.online.by_name:
        answer({"ok": False, "error": "no route named %r" % route})
        return
    forced = bool(req.get("forced")) and route is not None
    refusal = may_force(daemon, uid, route) if forced else None
    if refusal:
        answer({"ok": False, "error": refusal, "denied": True})
        return
    scheduler = daemon.scheduler
    if scheduler is None:
        answer({"ok": True, "started": False, "note": "no delivery service runs"})
        return
    daemon.publish(FlushAsked(route))        # polled detectors look again first
    scheduler.flush(route, forced=forced,
                    done=lambda result: answer(dict(result, ok=True)))


def _fetch(daemon, req, uid, answer):
    """Fetch mail now: from the named sources, those of a route, or every online one."""
    fetcher = daemon.fetcher
    names, route = req.get("names") or [], req.get("route")
    if fetcher is None or not fetcher.sources:
        answer({"ok": False, "error": "no fetch section in the configuration"})
        return
    unknown = [n for n in names if n not in fetcher.sources]
    if unknown or (route is not None and route not in daemon.online.by_name):
        answer({"ok": False, "error": "no fetch section named %r" % unknown[0] if unknown
                else "no route named %r" % route})
        return
    routes = {fetcher.sources[n].settings.route for n in names} if names else {route}
    for name in routes - {None, "always"}:
        refusal = may_force(daemon, uid, name)
        if refusal:
            answer({"ok": False, "error": refusal, "denied": True})
            return
    fetcher.fetch(names, route, done=lambda sources: answer(
        {"ok": True, "sources": [s.to_json() for s in sources]}))


_HANDLERS = {"status": _status, "new": _new, "rm": _rm, "release": _release,
             "online": _online, "flush": _flush, "fetch": _fetch}
