"""Where masq's messages go: syslog (the default; logd on OpenWrt), stderr, or a file.

Owns the level filter, the three targets of `option log` (`syslog`, `stderr`, or a file
path, written in syslog's format so that log tools read it), a ring of the last lines for
the status page, and a ring of the last delivery events (masq.outbound.maillog puts them there).

Never raises: a log line that cannot be written (disk full, I/O error, stderr closed) is
counted and dropped, and the next line that can be written says how many were lost.
Logging must never take the daemon down. Nothing here blocks the loop for long: syslog(3)
is a datagram to the local logger, a file line is one append.

Hostile input: logged texts carry what peers sent (a command, an address, a traceback of
their making). A line is cut in the middle to `MAX_LINE` characters, keeping its head and
its tail (where a traceback names the error), so one client can never put more than that
into the log or the status document's ring of recent lines.
"""

import os
import time

from masq.base.clock import Clock

LEVELS = {"error": 3, "warning": 4, "info": 6, "debug": 7}
MAX_LINE = 2000
KEEP_DELIVERIES = 20


class Logger:
    """Writes leveled lines to syslog, stderr or a file and keeps the last few in memory."""

    def __init__(self, target="stderr", level="info", ident="masq", keep=50, clock=None):
        self.clock = clock or Clock()   # without a loop (mailq, sendmail): the real clock
        self.threshold = LEVELS.get(level, 6)
        self.ident = ident
        self.recent = []
        self.deliveries = []        # the last delivery events, as dicts (masq.outbound.maillog)
        self.keep = keep
        self.lost = 0               # lines that could not be written since the last one
        self.target = self.syslog = self.fd = None
        self.retarget(target)

    def retarget(self, target):
        """Send the following lines to target: 'syslog', 'stderr' or a file path (a file
        is reopened at the next line even if it is the same: it may have been rotated)."""
        if target == self.target:
            if self.fd is not None:
                self.close()
            return
        self.close()
        self.target = target
        if target == "syslog":
            import syslog
            syslog.openlog(self.ident, syslog.LOG_PID, syslog.LOG_MAIL)
            self.syslog = syslog

    def close(self):
        """Close the log file (if any); the next line opens it again."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        self.syslog = None

    def log(self, level, text, *args):
        """Write one line at level ('error', 'warning', 'info', 'debug')."""
        priority = LEVELS[level]
        if priority > self.threshold:
            return
        if args:
            text = text % args
        text = text.replace("\r", "\\r").replace("\n", "\\n")
        text = shorten(text, MAX_LINE)
        self.recent.append("%s %s: %s" % (self._stamp("%Y-%m-%d %H:%M:%S"), level, text))
        del self.recent[:-self.keep]
        if self.lost and self._write(priority, level, "%d log line(s) lost: could not "
                                     "write the log" % self.lost):
            self.lost = 0
        if not self._write(priority, level, text):
            self.lost += 1

    def _stamp(self, form):
        return time.strftime(form, time.localtime(self.clock.time()))

    def _write(self, priority, level, text):
        """Write one line to the target; return False if it could not be written."""
        try:
            if self.syslog is not None:
                self.syslog.syslog(priority, text)
                return True
            if self.target == "stderr":
                return _write_all(2, ("masq[%s]: %s\n" % (level, text)).encode(
                    "utf-8", "backslashreplace"))
            return self._write_file(text)
        except (OSError, ValueError):
            if self.fd is not None:
                self.close()        # reopened at the next line: the file may be replaced
            return False

    def _write_file(self, text):
        if self.fd is None:
            self.fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                              | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY, 0o640)
        line = "%s %s %s[%d]: %s\n" % (self._stamp("%b %e %H:%M:%S"), _hostname(),
                                       self.ident, os.getpid(), text)
        return _write_all(self.fd, line.encode("utf-8", "backslashreplace"))

    def error(self, text, *args):
        """Log an error."""
        self.log("error", text, *args)

    def warning(self, text, *args):
        """Log a warning."""
        self.log("warning", text, *args)

    def info(self, text, *args):
        """Log an informational line."""
        self.log("info", text, *args)

    def debug(self, text, *args):
        """Log a debugging line."""
        self.log("debug", text, *args)

    def delivery(self, event):
        """Keep a delivery event (a dict) for the status page's last deliveries."""
        self.deliveries.append(event)
        del self.deliveries[:-KEEP_DELIVERIES]


def _write_all(fd, data):
    """Write data to fd; return False on an error or a short write that cannot go on."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            return False
        view = view[written:]
    return True


def _hostname():
    return os.uname().nodename.split(".")[0]


def shorten(text, limit):
    """Return text cut in the middle to about limit characters, keeping head and tail."""
    if len(text) <= limit:
        return text
    return "%s ...(%d characters cut)... %s" % (text[:limit // 2], len(text) - limit,
                                                 text[-(limit // 2):])
