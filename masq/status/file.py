"""The status file: the status document rewritten (in RAM, /var/run) when it changes.

The LuCI rpcd plugin is a /bin/sh script that only reads this file: it never starts a
Python interpreter per poll. Written at most once per second, and only when the document
(leaving out uptime and ages) changed, through a temporary file and a rename that never
follow a symlink (masq.files). With `option user` the daemon writes it as that user, after
dropping root: its directory must let that user write (masq makes it so only when it
creates the directory itself).
"""

import os

from masq import compat, files

MIN_INTERVAL = 1.0


class StatusFile:
    """Keeps `status_file` up to date from the daemon's status document."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.last = None
        self.timer = None

    def start(self):
        """Write the first document and watch for changes at the end of each turn."""
        self.daemon.loop.at_turn_end(self._maybe_write)

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

    def _maybe_write(self):
        if self.timer is not None:
            return
        doc = self.daemon.status()
        key = _stable(doc)
        if key == self.last:
            return
        self.last = key
        self._write(doc)
        self.timer = self.daemon.loop.call_later(MIN_INTERVAL, self._cooled)

    def _cooled(self):
        self.timer = None
        self._maybe_write()

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
