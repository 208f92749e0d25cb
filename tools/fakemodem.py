#!/usr/bin/env python3
"""A fake 3G/LTE modem on a pty, answering the AT status commands masq's modem detector asks.

    fakemodem.py [--link PATH] [--state FILE] [--log FILE]

Prints the tty path (the pty slave, or PATH, a symlink made to it) on stdout, then serves
until SIGTERM. The modem's state is a few `key value` lines in the --state file, read
again before every answer, so a test changes the modem by rewriting the file:

    creg 1      +CREG stat (1 home, 5 roaming, 2 searching, 3 denied, 0/4 not)
    cgreg 1     +CGREG stat
    cereg 1     +CEREG stat, or `error` for a modem without LTE (answers ERROR)
    csq 20      +CSQ rssi (dBm = -113 + 2 * rssi; 99 unknown)
    dcd 1       carrier detect (a pty has no modem lines: tests read this key instead)
    echo 1      echo commands back, as modems do until ATE0
    urc         a line sent unsolicited before every answer, e.g. `^RSSI: 12`
    silent 0    1: read commands but never answer (for time-out tests)

Signals, for a test without a state file: SIGUSR1 loses registration and carrier
(stats 2, dcd 0), SIGUSR2 regains them (stats 1, dcd 1); with --state they rewrite it.
Every command received is appended to the --log file, one per line.
"""

import argparse
import os
import select
import signal
import sys
import tty

DEFAULTS = {"creg": "1", "cgreg": "1", "cereg": "1", "csq": "20", "dcd": "1", "echo": "1",
            "urc": "", "silent": "0"}


class Modem:
    """The fake modem's state and answers."""

    def __init__(self, state_path, log_path):
        self.state_path = state_path
        self.log_path = log_path
        self.memory = dict(DEFAULTS)
        self.pending_signal = None

    def state(self):
        """Return the current state (the file's keys over the in-memory ones)."""
        state = dict(self.memory)
        if self.state_path and os.path.exists(self.state_path):
            with open(self.state_path) as f:
                for line in f:
                    key, _, value = line.strip().partition(" ")
                    if key:
                        state[key] = value.strip()
        return state

    def save(self, changes):
        """Apply changes to the state (rewriting the state file if there is one)."""
        state = self.state()
        state.update(changes)
        self.memory.update(changes)
        if self.state_path:
            with open(self.state_path + ".new", "w") as f:
                f.write("".join("%s %s\n" % item for item in state.items()))
            os.replace(self.state_path + ".new", self.state_path)

    def answer(self, command):
        """Return the bytes the modem sends for one command line."""
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(command + "\n")
        state = self.state()
        if state["silent"] == "1":
            return b""
        out = command + "\r" if state["echo"] == "1" else ""
        if state["urc"]:
            out += "\r\n%s\r\n" % state["urc"]
        out += self._reply(command.upper(), state)
        return out.encode()

    def _reply(self, command, state):
        if command in ("ATE0", "ATE1"):
            self.save({"echo": command[-1]})
            return "\r\nOK\r\n"
        simple = {"AT": "", "ATZ": "", "AT+CPIN?": "+CPIN: READY",
                  "AT+COPS?": '+COPS: 0,0,"FakeNet",7',
                  "AT+CREG?": "+CREG: 0,%s" % state["creg"],
                  "AT+CGREG?": "+CGREG: 0,%s" % state["cgreg"],
                  "AT+CEREG?": "+CEREG: 0,%s" % state["cereg"],
                  "AT+CSQ": "+CSQ: %s,99" % state["csq"]}
        if command not in simple or (command == "AT+CEREG?" and state["cereg"] == "error"):
            return "\r\nERROR\r\n"
        info = simple[command]
        return ("\r\n%s\r\n" % info if info else "") + "\r\nOK\r\n"


def serve(modem, master):
    """Answer commands on the pty master until SIGTERM."""
    buffer = b""
    while True:
        if modem.pending_signal is not None:
            stat, dcd = ("2", "0") if modem.pending_signal == signal.SIGUSR1 else ("1", "1")
            modem.pending_signal = None
            modem.save({"creg": stat, "cgreg": stat, "cereg": stat, "dcd": dcd})
        try:
            ready, _, _ = select.select([master], [], [], 0.5)
        except InterruptedError:
            continue
        if not ready:
            continue
        try:
            buffer += os.read(master, 1024)
        except OSError:
            continue
        while b"\r" in buffer:
            line, buffer = buffer.split(b"\r", 1)
            command = line.strip().decode("ascii", "replace")
            if command:
                os.write(master, modem.answer(command))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--link", help="make this path a symlink to the tty")
    parser.add_argument("--state", help="state file (key value lines)")
    parser.add_argument("--log", help="append each command received here")
    args = parser.parse_args()
    master, slave = os.openpty()
    tty.setraw(slave)               # hold the slave open (no EIO between clients), raw
    path = os.ttyname(slave)
    if args.link:
        if os.path.lexists(args.link):
            os.unlink(args.link)
        os.symlink(path, args.link)
        path = args.link
    modem = Modem(args.state, args.log)

    def on_signal(signum, frame):
        modem.pending_signal = signum
    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGUSR2, on_signal)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    print(path, flush=True)
    try:
        serve(modem, master)
    finally:
        if args.link and os.path.islink(args.link):
            os.unlink(args.link)


if __name__ == "__main__":
    main()
