"""Modem detector `modem:DEVICE[?OPTIONS]`: is a 3G/LTE modem registered, is a line up?

DEVICE is a tty path (`/dev/ttyUSB2`) or `usb:VID:PID[:INTERFACE]` (hex, as sysfs shows
idVendor, idProduct and bInterfaceNumber), resolved at every check through
/sys/bus/usb/devices because USB ttys are renumbered when a modem re-enumerates; without
INTERFACE the lowest-numbered interface that has a tty is used. OPTIONS, joined by `&`:
`dcd` (judge by the carrier-detect line, for dial-up modems, instead of AT commands) and
`baud=N` (default 115200; USB ports ignore it). Examples: `modem:usb:2c7c:0125:02`,
`modem:/dev/ttyS0?dcd`, `modem:/dev/ttyS1?baud=9600`.

AT mode (the default) asks `AT+CREG?`, `AT+CGREG?`, `AT+CEREG?` and `AT+CSQ`: online
when any of the three says registered (stat 1, home, or 5, roaming) and, if the route sets
`modem_min_signal`, the signal (dBm = -113 + 2 * rssi) is not below it; an unknown signal
(99, often so on LTE) does not count against. The port is opened for each check with
pyserial (imported here only), non-blocking, read and written by the loop, with a time
limit per exchange, and closed again. A port that pppd or ModemManager holds (a UUCP lock
file /var/lock/LCK..NAME with a live pid, or such a process with the tty open) is never
opened: the verdict is offline with an error that says so. Echo and unsolicited lines
(`^RSSI:`, `RING`, URCs) are tolerated; nothing is sent that changes the modem's settings.

DCD mode reads only the modem-status lines (TIOCMGET on a read-only, non-blocking
descriptor; no termios change, nothing written), which does not disturb the process that
dialled; it is therefore done on a locked port too: a dial-up line is normally held by pppd.

Hostile input: everything the modem says. Lines are capped; only the documented shapes
are believed. Fails: no port, busy port, no pyserial, silence past the time limit: offline
with an error.
"""

import os
import struct

SYSFS = "/sys"
LOCK_DIR = "/var/lock"
PROC = "/proc"
EXCHANGE_TIMEOUT = 3.0
DEFAULT_BAUD = 115200
LINE_CAP = 4096
REGISTERED = (1, 5)
OWNERS = ("ModemManager", "pppd")
COMMANDS = (("AT+CREG?", "+CREG:"), ("AT+CGREG?", "+CGREG:"), ("AT+CEREG?", "+CEREG:"),
            ("AT+CSQ", "+CSQ:"))
_ERRORS = ("ERROR", "+CME ERROR", "+CMS ERROR", "NO CARRIER", "COMMAND NOT SUPPORT")


# the AT dialogue, without IO

def _small(field):
    """Return a field of one to three ASCII digits as an int, else None (a hostile modem
    may send thousands of digits, past what int() converts)."""
    return int(field) if 0 < len(field) <= 3 and field.isascii() and field.isdigit() else None


def registration(text):
    """Return <stat> from the text after `+CxREG:` (query or unsolicited form), or None."""
    fields = [f.strip() for f in text.split(",")]
    return _small(fields[1] if len(fields) >= 2 and fields[1].isdigit() else fields[0])


def signal_dbm(text):
    """Return the signal in dBm from the text after `+CSQ:`, or None if unknown."""
    rssi = _small(text.split(",")[0].strip())
    if rssi is None or rssi > 31:
        return None
    return -113 + 2 * rssi


class Dialogue:
    """The status questions and their answers: command() to send, feed(bytes) to read."""

    def __init__(self, commands=COMMANDS):
        self.commands = commands
        self.index = 0
        self.pending = b""
        self.answers = {}           # prefix -> text after it, from the last such line

    @property
    def done(self):
        """Return True when every command has had its final result."""
        return self.index >= len(self.commands)

    def command(self):
        """Return the bytes of the command to send now, or None when done."""
        return None if self.done else (self.commands[self.index][0] + "\r").encode()

    def feed(self, data):
        """Read what the modem said; return how many exchanges it completed."""
        self.pending += data
        *lines, self.pending = self.pending.replace(b"\r", b"\n").split(b"\n")
        self.pending = self.pending[-LINE_CAP:]
        completed = 0
        for raw in lines:
            line = raw[:LINE_CAP].decode("ascii", "replace").strip()
            if not line or self.done:
                continue
            prefix = self.commands[self.index][1]
            if line.startswith(prefix):
                self.answers[prefix] = line[len(prefix):].strip()
            elif line == "OK" or line.startswith(_ERRORS):
                self.index += 1
                completed += 1
        return completed

    def verdict(self, min_signal=None):
        """Return (online, reason) from the answers."""
        stats = [(p.strip("+:"), registration(self.answers[p]))
                 for _, p in self.commands[:3] if p in self.answers]
        stats = [(what, stat) for what, stat in stats if stat is not None]
        if not stats:
            return False, "the modem gave no registration status"
        if not any(stat in REGISTERED for _, stat in stats):
            return False, "not registered (%s)" % ", ".join("%s %d" % s for s in stats)
        dbm = signal_dbm(self.answers.get("+CSQ:", ""))
        if min_signal is not None and dbm is not None and dbm < min_signal:
            return False, "signal %d dBm is below modem_min_signal %d" % (dbm, min_signal)
        return True, None


# finding and guarding the port

def parse_spec(arg):
    """Return (device, dcd, baud) of a `modem:` argument; ValueError if malformed."""
    device, _, query = arg.partition("?")
    dcd, baud = False, DEFAULT_BAUD
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if key == "dcd" and not sep:
            dcd = True
        elif key == "baud" and value.isdigit() and int(value) > 0:
            baud = int(value)
        else:
            raise ValueError("unknown modem option %r (dcd, baud=N)" % item)
    if not device:
        raise ValueError("no modem device named")
    return device, dcd, baud


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip().lower()
    except OSError:
        return None


def _ttys(folder):
    names = []
    for sub in (folder, os.path.join(folder, "tty")):
        try:
            names += [n for n in os.listdir(sub) if n.startswith(("ttyUSB", "ttyACM"))]
        except OSError:
            pass
    return names


def resolve(device, sysfs=SYSFS):
    """Return the tty path of device (a path, or usb:VID:PID[:IF]); LookupError if absent."""
    if not device.startswith("usb:"):
        return device
    parts = device[4:].lower().split(":")
    try:
        wanted = int(parts[2], 16) if len(parts) == 3 else None
    except ValueError:
        wanted = -1
    if len(parts) not in (2, 3) or wanted == -1:
        raise LookupError("bad USB modem name %r: write usb:VID:PID[:INTERFACE]" % device)
    root = os.path.join(sysfs, "bus/usb/devices")
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        entries = []
    for dev in entries:
        if ":" in dev or _read(os.path.join(root, dev, "idVendor")) != parts[0] \
                or _read(os.path.join(root, dev, "idProduct")) != parts[1]:
            continue
        found = []
        for intf in (e for e in entries if e.startswith(dev + ":")):
            number = _read(os.path.join(root, intf, "bInterfaceNumber")) or "x"
            if all(c in "0123456789abcdef" for c in number) and \
                    wanted in (None, int(number, 16)):
                found += [(int(number, 16), n) for n in _ttys(os.path.join(root, intf))]
        if found:
            return "/dev/" + min(found)[1]
    raise LookupError("no tty of USB modem %s" % device[4:])


def lock_pid(path):
    """Return the pid in a UUCP lock file (ASCII, or the old 4-byte binary), or None."""
    try:
        with open(path, "rb") as f:
            data = f.read(64)
    except OSError:
        return None
    if len(data) == 4 and not data.strip().isdigit():
        return struct.unpack("=i", data)[0]
    text = data.strip()
    return int(text) if text.isdigit() else None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return pid > 0


def holder(path, lock_dir=LOCK_DIR, proc=PROC):
    """Return who holds the port at path ("pppd (pid 12)"), or None if nobody."""
    real = os.path.realpath(path)
    for name in {p[5:] if p.startswith("/dev/") else os.path.basename(p) for p in (path, real)}:
        lock = os.path.join(lock_dir, "LCK.." + name.replace("/", "_"))
        pid = lock_pid(lock)
        if pid is not None and _alive(pid):
            return "pid %d (lock file %s)" % (pid, lock)
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        comm = _read(os.path.join(proc, pid, "comm"))
        if comm not in [o.lower() for o in OWNERS]:
            continue
        try:
            fds = os.listdir(os.path.join(proc, pid, "fd"))
            if any(os.readlink(os.path.join(proc, pid, "fd", fd)) == real for fd in fds):
                return "%s (pid %s)" % (comm, pid)
        except OSError:
            continue
    return None


def modem_lines(path):
    """Return the TIOCMGET bits of the tty at path, without disturbing its owner."""
    import fcntl
    import termios
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        return struct.unpack("=i", fcntl.ioctl(fd, termios.TIOCMGET, b"\0\0\0\0"))[0]
    finally:
        os.close(fd)


def carrier(path, read_lines=modem_lines):
    """Return True if the carrier-detect line of the tty at path is up."""
    import termios
    return bool(read_lines(path) & termios.TIOCM_CAR)


def open_port(path, baud, timeout=0):
    """Open the serial port with pyserial (imported here); raise OSError on failure."""
    try:
        import serial
    except ImportError:
        raise OSError("pyserial is not installed (the masq-modem package)") from None
    try:
        port = serial.Serial(path, baud, timeout=timeout, write_timeout=timeout,
                             exclusive=True)
    except (serial.SerialException, ValueError) as exc:
        raise OSError(str(exc)) from None
    port.reset_input_buffer()
    return port


def prepare(arg, lock_dir=LOCK_DIR, sysfs=SYSFS):
    """Return (path, dcd, baud) ready to check; raise OSError saying why not."""
    try:
        device, dcd, baud = parse_spec(arg)
        path = resolve(device, sysfs)
    except (ValueError, LookupError) as exc:
        raise OSError(str(exc.args[0])) from None
    if not dcd:
        who = holder(path, lock_dir)
        if who:
            raise OSError("%s is in use by %s; not opened" % (path, who))
    return path, dcd, baud


# the detector

class ModemDetector:
    """`modem:DEVICE`: asks the modem (or reads DCD) when the component says so."""

    polled = True
    exchange_timeout = EXCHANGE_TIMEOUT
    lock_dir = LOCK_DIR
    sysfs = SYSFS
    read_lines = staticmethod(modem_lines)

    def __init__(self, ctx, route, arg):
        self.loop = ctx.loop
        self.name = route.name
        self.arg = arg
        self.min_signal = route.modem_min_signal
        self.port = self.fd = self.timer = self.done = self.dialogue = None
        self.out = b""

    def start(self):
        """Nothing to set up: the port is opened for each check."""

    def stop(self):
        """Abandon a check in flight and close the port."""
        self.done = None
        self._close()

    def check(self, done):
        """Ask the modem; done(online, error) when it has answered or timed out."""
        self.done = done
        try:
            path, dcd, baud = prepare(self.arg, self.lock_dir, self.sysfs)
            if dcd:
                self._finish(self._carrier(path), None)
                return
            self.port = open_port(path, baud)
        except OSError as exc:
            self._finish(False, exc.strerror or str(exc))
            return
        self.fd = self.port.fileno()
        self.dialogue = Dialogue()
        self.loop.add_reader(self.fd, self._readable)
        self._send()

    def _carrier(self, path):
        try:
            return carrier(path, self.read_lines)
        except OSError as exc:
            raise OSError("cannot read the modem lines of %s: %s"
                          % (path, exc.strerror or exc)) from None

    def _send(self):
        self.out = self.dialogue.command()
        self.loop.add_writer(self.fd, self._writable)
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(self.exchange_timeout, self._timeout)

    def _writable(self):
        try:
            self.out = self.out[os.write(self.fd, self.out):]
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(False, "cannot write to the modem: %s" % exc.strerror)
            return
        if not self.out:
            self.loop.remove_writer(self.fd)

    def _readable(self):
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(False, "cannot read from the modem: %s" % exc.strerror)
            return
        if not data:
            self._finish(False, "the modem port was closed")
        elif self.dialogue.feed(data):
            if self.dialogue.done:
                self._finish(*self.dialogue.verdict(self.min_signal))
            else:
                self._send()

    def _timeout(self):
        self.timer = None
        command = self.dialogue.commands[self.dialogue.index][0]
        self._finish(False, "no answer to %s within %gs" % (command, self.exchange_timeout))

    def _close(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            self.loop.remove_writer(self.fd)
            self.fd = None
        if self.port is not None:
            self.port.close()
            self.port = None

    def _finish(self, online, error):
        self._close()
        done, self.done = self.done, None
        if done is not None:
            done(online, error)


def probe(arg, min_signal=None, timeout=EXCHANGE_TIMEOUT):
    """Return True if `modem:arg` is online now (synchronous, for runs without a daemon)."""
    from masq.base.clock import Clock
    clock = Clock()         # a synchronous probe, before any loop turns: the real clock
    try:
        path, dcd, baud = prepare(arg)
        if dcd:
            return carrier(path)
        port = open_port(path, baud, timeout=0.1)
    except OSError:
        return False
    try:
        dialogue = Dialogue()
        while not dialogue.done:
            port.write(dialogue.command())
            deadline = clock.monotonic() + timeout
            while not dialogue.feed(port.read(256)):
                if clock.monotonic() > deadline:
                    return False
        return dialogue.verdict(min_signal)[0]
    except OSError:
        return False
    finally:
        port.close()
