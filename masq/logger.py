"""Where masq's messages go: syslog (the default; logd on OpenWrt, never a file on flash) or
stderr (foreground runs, procd's `stderr 1`, tests).

Owns the level filter and a ring of the last lines for the status page. Nothing here
blocks the loop for long: syslog(3) is a datagram to the local logger.

Hostile input: logged texts carry what peers sent (a command, an address, a traceback of
their making). A line is cut in the middle to `MAX_LINE` characters, keeping its head and
its tail (where a traceback names the error), so one client can never put more than that
into the log or the status document's ring of recent lines.
"""

import sys
import time

LEVELS = {"error": 3, "warning": 4, "info": 6, "debug": 7}
MAX_LINE = 2000


class Logger:
    """Writes leveled lines to syslog or stderr and keeps the last few in memory."""

    def __init__(self, target="stderr", level="info", ident="masq", keep=50):
        self.target = target
        self.threshold = LEVELS.get(level, 6)
        self.recent = []
        self.keep = keep
        self.syslog = None
        if target == "syslog":
            import syslog
            syslog.openlog(ident, syslog.LOG_PID, syslog.LOG_MAIL)
            self.syslog = syslog

    def log(self, level, text, *args):
        """Write one line at level ('error', 'warning', 'info', 'debug')."""
        priority = LEVELS[level]
        if priority > self.threshold:
            return
        if args:
            text = text % args
        text = text.replace("\r", "\\r").replace("\n", "\\n")
        if len(text) > MAX_LINE:
            cut = len(text) - MAX_LINE
            text = "%s ...(%d characters cut)... %s" % (
                text[:MAX_LINE // 2], cut, text[-MAX_LINE // 2:])
        self.recent.append("%s %s: %s" % (time.strftime("%Y-%m-%d %H:%M:%S"), level, text))
        del self.recent[:-self.keep]
        if self.syslog:
            self.syslog.syslog(priority, text)
        else:
            sys.stderr.write("masq[%s]: %s\n" % (level, text))
            sys.stderr.flush()

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
