"""The status file: the status document rewritten (in RAM, /var/run) when it changes.

The LuCI rpcd plugin is a /bin/sh script that only reads this file: it never starts a
Python interpreter per poll. Written at most once per second, and only when the document
(leaving out uptime and ages) changed, through a temporary file and a rename that never
follow a symlink (masq.base.files). With `option user` the daemon writes it as that user, after
dropping root: its directory must let that user write (masq makes it so only when it
creates the directory itself).

Cost that does not grow with the queue: the document is built at most once per second (at
the end of a turn in which something ran, or by one timer when the second is not over;
idle, nothing wakes the daemon), and the file lists the first FILE_MESSAGES messages only
(`queue_total` counts them all): with 50,000 messages waiting, building it every turn made
accepting mail 30 times slower and the daemon's RSS twice as large. The whole queue is in
`GET /status.json`, `masq status --json` and `mailq`.
"""

import os

from masq.base.host import Component
from masq.base import compat, files

MIN_INTERVAL = 1.0
FILE_MESSAGES = 100


class StatusFile(Component):
    """Keeps `status_file` up to date from the daemon's status document."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.last = None
        self.timer = None
        self.built = None     # loop time of the last build
        self.due = False      # the timer fired: build at the end of this turn

    def start(self):
        """Write the first document and watch for changes at the end of each turn."""
        self.daemon.loop.at_turn_end(self._turn_end)

    def stop(self):
        """Remove the file: no daemon, no live status."""
        if self.timer:
            self.timer.cancel()
        try:
            os.unlink(self.daemon.cfg.main.status_file)
        except OSError:
            pass

    def reload(self, cfg):
        """Write again after a configuration change."""
        self.last = None

    def _turn_end(self):
        """Something ran: build now, or once MIN_INTERVAL has passed since the last build."""
        if self.timer is not None:
            return
        loop = self.daemon.loop
        wait = MIN_INTERVAL - (loop.now - self.built) if self.built is not None else 0
        if wait > 0 and not self.due:
            self.timer = loop.call_later(wait, self._cooled)
            return
        self.due = False
        self.built = loop.now
        self._maybe_write()

    def _cooled(self):
        self.timer = None
        self.due = True

    def _maybe_write(self):
        doc = self.daemon.status(limit=FILE_MESSAGES)
        key = _stable(doc)
        if key == self.last:
            return
        self.last = key
        self._write(doc)

    def _write(self, doc):
        path = self.daemon.cfg.main.status_file
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            files.replace(path, compat.dumps(doc).encode("utf-8"))
        except OSError as exc:
            self.daemon.log.debug("cannot write status file %s: %s", path, exc.strerror)


def _stable(doc):
    """Return the document without the fields that change with the clock alone."""
    queue = [dict(m, age=None) for m in doc["queue"]]
    return compat.dumps(dict(doc, uptime=None, queue=queue, log=None))
