"""The daemon's one greylist: its state read at first use, saved a while after changes.

Owns the glue between the listeners and masq/policy/greylist.py: one State (masq/policy/
greylist_state.py) shared by every listener, read from the spool at the first check, and
written back `SAVE_AFTER` seconds after the first change since the last write (one timer,
armed only while something is unsaved: an idle daemon has no wake-up) and at stop. A
state file that cannot be read is logged and replaced by an empty greylist; one that
cannot be written is logged and tried again at the next change. Time is the loop's.
"""

import os

from masq.policy import greylist, greylist_state

SAVE_AFTER = 300.0      # seconds from the first unsaved change to the write


class Greylisting:
    """The greylist every listener asks."""

    def __init__(self, host, spool_dir, settings):
        self.loop, self.log = host.loop, host.log
        self.state = greylist_state.State(os.path.join(spool_dir, greylist_state.NAME),
                                          settings.limit)
        self.timer = None
        self.settings = settings    # those of the last check, for expiry
        try:
            self.state.load()
        except greylist_state.Damaged as exc:
            self.log.warning("greylist: %s", exc)
        except OSError as exc:
            self.log.warning("greylist: cannot read %s: %s; starting empty",
                             self.state.path, exc.strerror)

    def check(self, settings, peer, sender, rcpt):
        """Return a 450 reply if sender -> rcpt from peer is greylisted now, else None."""
        now = self.loop.time()
        self.settings, self.state.limit = settings, settings.limit
        reply = greylist.check(self.state, settings, peer, sender, rcpt, now)
        if reply is not None:
            self.log.info("greylisted: client=%s from=<%s> to=<%s>", peer.ip, sender, rcpt)
        if self.state.dirty and self.timer is None:
            self.timer = self.loop.call_later(SAVE_AFTER, self._due)
        return reply

    def _due(self):
        self.timer = None
        self.state.expire(int(self.loop.time()), self.settings.window, self.settings.keep)
        self.save(False)

    def save(self, at_stop=True):
        """Write the state now if it changed (at stop, where last-seen times moved count
        too, and when the timer is due)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not (self.state.dirty or (at_stop and self.state.touched)):
            return
        try:
            self.state.save()
        except OSError as exc:
            self.log.warning("greylist: cannot write %s: %s", self.state.path, exc.strerror)
