"""The online state of every route: what its detector says, and the manual override.

Owns, per route: the detector's last verdict, the override set by `masq online ROUTE
up|down` (it holds until the detector next reports a change; `auto` hands back at once),
since when the route is in its current state, and its last error. Every transition is
published to the host as a RouteChanged event (a route coming online starts a flush).

Does not run detectors (see the detector modules) nor choose routes for mail (route.py).
"""

from masq.base.host import RouteChanged


class RouteState:
    """The online state of one route."""

    __slots__ = ("name", "detector", "detected", "override", "since", "last_error",
                 "last_delivery")

    def __init__(self, name, detector, now):
        self.name = name
        self.detector = detector
        self.detected = detector == "always"
        self.override = None
        self.since = now
        self.last_error = None
        self.last_delivery = None

    @property
    def online(self):
        """Return True when the route may be used now."""
        return self.detected if self.override is None else self.override

    def to_json(self):
        """Return the route's part of the status document."""
        return {"name": self.name, "detector": self.detector, "online": self.online,
                "since": self.since, "override": _override_name(self.override),
                "last_delivery": self.last_delivery, "last_error": self.last_error}


def _override_name(value):
    return None if value is None else ("up" if value else "down")


class OnlineState:
    """The routes in file order, with their online state."""

    def __init__(self, routes, now, publish=None):
        self.routes = [RouteState(r.name, r.online, now) for r in routes]
        self.by_name = {r.name: r for r in self.routes}
        self.publish = publish      # the host's publish(event), or None

    def get(self, name):
        """Return the RouteState called name (KeyError if there is none)."""
        return self.by_name[name]

    def detected(self, name, online, now, error=None):
        """Record a detector's verdict for route name."""
        route = self.by_name[name]
        before = route.online
        if online != route.detected:
            route.override = None      # a change from the detector ends the override
        route.detected = online
        if error is not None:
            route.last_error = error
        self._changed(route, before, now)

    def set_override(self, name, how, now):
        """Apply `masq online NAME up|down|auto`."""
        route = self.by_name[name]
        before = route.online
        route.override = {"up": True, "down": False, "auto": None}[how]
        self._changed(route, before, now)

    def _changed(self, route, before, now):
        if route.online == before:
            return
        route.since = now
        if self.publish is not None:
            self.publish(RouteChanged(route))

    def to_json(self):
        """Return the routes part of the status document."""
        return [route.to_json() for route in self.routes]
