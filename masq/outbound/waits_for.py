"""Why a queued recipient has not left yet: the route it waits for, and what it waits on.

For listings (mailq, the status page, status.json's `waiting` per recipient). The same
rules as the scheduler, read rather than run: local recipients need no route; a remote one
goes by the first route, in file order, whose criteria take it (sender and recipient
patterns; From: patterns are not read here: a listing does not open every message); it
leaves when that route is online and its retry time has come. Pure: the caller passes the
routes, which are online, and the time.

The answer is {"route": name or None, "reason": REASON, "until": time or None}:
  "local"     delivered here, due now;        "retry"   due again at `until`;
  "due"       its route is online and it is due: it leaves on this run;
  "offline"   its route (the first that takes it) is offline;
  "no_daemon" (online unknown, no daemon runs) it leaves with the next queue run;
  "no_route"  no route's criteria take it (or no route is configured): it stays queued.
"""

from masq import route as routes
from masq.policy.local import Locality
from masq.queue.envelope import FINAL


def for_config(cfg, online, now):
    """Return waits(sender, rcpt) -> explain(...) for configuration cfg (online: as in
    explain)."""
    is_local = Locality.from_config(cfg.main).is_local
    return lambda sender, rcpt: explain(cfg.routes, online, is_local, sender, rcpt, now)


def explain(cfg_routes, online, is_local, sender, rcpt, now):
    """Return what recipient rcpt (an envelope Recipient) waits for, or None if final.

    online(name) says whether a route is online now (online None: no daemon runs, nobody
    knows); is_local(address) whether the recipient is delivered here."""
    if rcpt.state in FINAL:
        return None
    retry = rcpt.next_attempt if rcpt.next_attempt and rcpt.next_attempt > now else None
    if is_local(rcpt.address):
        return _answer(None, "retry" if retry else "local", retry)
    takers = [r.name for r in cfg_routes
              if routes.accepts_message(r, sender, ()) and routes.accepts_recipient(
                  r, rcpt.address)]
    if not takers:
        return _answer(None, "no_route", None)
    if online is None:
        return _answer(takers[0], "retry" if retry else "no_daemon", retry)
    up = [name for name in takers if online(name)]
    if not up:
        return _answer(takers[0], "offline", None)
    return _answer(up[0], "retry" if retry else "due", retry)


def _answer(route, reason, until):
    return {"route": route, "reason": reason, "until": until}


def describe(waiting, clock_text):
    """Return the listing's words for an explain() answer; clock_text(t) -> "HH:MM"."""
    if not waiting:
        return ""
    route, reason = waiting["route"], waiting["reason"]
    via = " via %s" % route if route else ""
    if reason == "retry":
        return "retry at %s%s" % (clock_text(waiting["until"]), via)
    if reason == "offline":
        return "waits for route %s (offline)" % route
    if reason == "no_route":
        return "no route takes it: stays queued"
    if reason == "local":
        return "local delivery, due now"
    if reason == "no_daemon":
        return "no daemon runs: leaves%s with the next queue run" % via
    return "due now%s" % via
