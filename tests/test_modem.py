"""The modem: detector: the AT dialogue (golden and split-anywhere), USB port resolution
through a fake sysfs, UUCP locks, and the detector in a real Loop against tools/fakemodem.py
(a pty that answers AT+CREG?/CGREG?/CEREG?/CSQ from a state file). A pty has no modem
lines, so DCD tests read the fake's `dcd` key through the detector's line reader. End to
end: a daemon delivers held mail to an aiosmtpd sink once the fake modem registers.
"""

import os
import signal
import subprocess
import sys
import termios
import time

import pytest

from helpers import ROOT
from masq.online import modem, probe
from masq.base.host import FlushAsked, MessagesQueued
from masq.online.modem import Dialogue, ModemDetector
from test_online_detectors import Host, held_then_delivered

TRANSCRIPT = (b"AT+CREG?\r\r\n+CREG: 0,2\r\n\r\nOK\r\n"
              b"\r\n^RSSI: 14\r\n"
              b"AT+CGREG?\r\r\n+CGREG: 2,1,\"00C3\",\"0000001A\",2\r\n\r\nOK\r\n"
              b"AT+CEREG?\r\r\n+CME ERROR: 4\r\n"
              b"AT+CSQ\r\r\n+CSQ: 17,99\r\n\r\nOK\r\n")


# the dialogue

def test_transcript_with_echo_urcs_and_errors():
    dialogue = Dialogue()
    assert dialogue.command() == b"AT+CREG?\r"
    assert dialogue.feed(TRANSCRIPT) == 4 and dialogue.done and dialogue.command() is None
    assert dialogue.answers == {"+CREG:": "0,2", "+CGREG:": '2,1,"00C3","0000001A",2',
                                "+CSQ:": "17,99"}
    assert dialogue.verdict() == (True, None)
    assert dialogue.verdict(min_signal=-80) == (True, None)                # -79 dBm
    assert dialogue.verdict(min_signal=-70) == (
        False, "signal -79 dBm is below modem_min_signal -70")


def test_any_split_of_the_transcript_gives_the_same_answers():
    whole = Dialogue()
    whole.feed(TRANSCRIPT)
    for cut in range(1, len(TRANSCRIPT)):
        parts = Dialogue()
        parts.feed(TRANSCRIPT[:cut])
        parts.feed(TRANSCRIPT[cut:])
        assert (parts.answers, parts.index) == (whole.answers, whole.index), cut


@pytest.mark.parametrize("text, stat", [
    ("0,1", 1), ("2,5,\"00C3\",\"0000001A\",7", 5), ("1", 1), ('1,"00C3","001A"', 1),
    (" 0 , 3 ", 3), ("", None), ("x,y", None), ('"1"', None)])
def test_registration(text, stat):
    assert modem.registration(text) == stat


@pytest.mark.parametrize("text, dbm", [
    ("20,99", -73), ("0,0", -113), ("31,0", -51), ("99,99", None), ("150,0", None),
    ("", None), ("-5,0", None)])
def test_signal_dbm(text, dbm):
    assert modem.signal_dbm(text) == dbm


@pytest.mark.parametrize("lines, min_signal, verdict", [
    (["+CREG: 0,2", "+CGREG: 0,2", "+CEREG: 0,4"], None,
     (False, "not registered (CREG 2, CGREG 2, CEREG 4)")),
    (["+CREG: 0,3", "+CGREG: 0,5"], None, (True, None)),
    (["+CEREG: 0,1", "+CSQ: 99,99"], -60, (True, None)),           # unknown signal passes
    (["+CEREG: 0,1", "+CSQ: 5,99"], -100, (False, "signal -103 dBm is below "
                                                    "modem_min_signal -100")),
    ([], None, (False, "the modem gave no registration status")),
    (["+CREG: garbage"], None, (False, "the modem gave no registration status"))])
def test_verdict(lines, min_signal, verdict):
    dialogue = Dialogue()
    for line in lines:
        dialogue.answers[line.split(":")[0] + ":"] = line.split(":", 1)[1].strip()
    assert dialogue.verdict(min_signal) == verdict


def test_endless_line_is_capped():
    dialogue = Dialogue()
    dialogue.feed(b"x" * 100000)
    assert len(dialogue.pending) <= modem.LINE_CAP


# device names, sysfs, locks

@pytest.mark.parametrize("arg, parsed", [
    ("/dev/ttyUSB2", ("/dev/ttyUSB2", False, 115200)),
    ("/dev/ttyS0?dcd", ("/dev/ttyS0", True, 115200)),
    ("usb:2c7c:0125:02?baud=9600&dcd", ("usb:2c7c:0125:02", True, 9600))])
def test_parse_spec(arg, parsed):
    assert modem.parse_spec(arg) == parsed


@pytest.mark.parametrize("arg", ["/dev/ttyS0?speed=9600", "/dev/x?baud=0", "?dcd",
                                 "/dev/x?dcd=1"])
def test_parse_spec_refuses(arg):
    with pytest.raises(ValueError):
        modem.parse_spec(arg)


def fake_sysfs(root, vid="2c7c", pid="0125", ttys=("ttyUSB0", "ttyUSB1", "ttyUSB2")):
    devices = root / "bus/usb/devices"
    (devices / "1-1").mkdir(parents=True)
    (devices / "1-1/idVendor").write_text(vid + "\n")
    (devices / "1-1/idProduct").write_text(pid + "\n")
    (devices / "usb1").mkdir()                              # a hub without ids
    for number, tty in enumerate(ttys):
        intf = devices / ("1-1:1.%d" % number)
        intf.mkdir()
        (intf / "bInterfaceNumber").write_text("%02x\n" % number)
        (intf / tty if tty.startswith("ttyUSB") else intf / "tty" / tty).mkdir(parents=True)
    return str(root)


def test_resolve_usb_names_through_sysfs(tmp_path):
    sysfs = fake_sysfs(tmp_path / "a")
    assert modem.resolve("/dev/ttyUSB7", sysfs) == "/dev/ttyUSB7"
    assert modem.resolve("usb:2c7c:0125:2", sysfs) == "/dev/ttyUSB2"
    assert modem.resolve("usb:2C7C:0125:02", sysfs) == "/dev/ttyUSB2"
    assert modem.resolve("usb:2c7c:0125", sysfs) == "/dev/ttyUSB0"
    renumbered = fake_sysfs(tmp_path / "b", ttys=("ttyUSB4", "ttyUSB5", "ttyUSB6"))
    assert modem.resolve("usb:2c7c:0125:2", renumbered) == "/dev/ttyUSB6"
    acm = fake_sysfs(tmp_path / "c", vid="1546", pid="01a8", ttys=("ttyACM0",))
    assert modem.resolve("usb:1546:01a8:0", acm) == "/dev/ttyACM0"
    for missing in ("usb:2c7c:0125:5", "usb:dead:beef:0", "usb:2c7c", "usb:2c7c:0125:zz"):
        with pytest.raises(LookupError):
            modem.resolve(missing, sysfs)


def dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_lock_files_with_a_live_pid_hold_the_port(tmp_path):
    locks = tmp_path / "lock"
    locks.mkdir()
    lock = locks / "LCK..ttyUSB2"
    assert modem.holder("/dev/ttyUSB2", str(locks), str(tmp_path)) is None
    lock.write_text("%10d\n" % os.getpid())                 # ASCII, as pppd writes it
    assert "lock file" in modem.holder("/dev/ttyUSB2", str(locks), str(tmp_path))
    lock.write_bytes(os.getpid().to_bytes(4, sys.byteorder))  # the old binary form
    assert modem.holder("/dev/ttyUSB2", str(locks), str(tmp_path)) is not None
    lock.write_text("%10d\n" % dead_pid())                  # stale
    assert modem.holder("/dev/ttyUSB2", str(locks), str(tmp_path)) is None
    lock.write_text("garbage")
    assert modem.holder("/dev/ttyUSB2", str(locks), str(tmp_path)) is None


def test_a_process_called_pppd_with_the_tty_open_holds_it(tmp_path):
    proc = tmp_path / "proc"
    (proc / "42/fd").mkdir(parents=True)
    (proc / "42/comm").write_text("pppd\n")
    os.symlink("/dev/ttyUSB3", proc / "42/fd/7")
    (proc / "43/fd").mkdir(parents=True)
    (proc / "43/comm").write_text("bash\n")
    os.symlink("/dev/ttyUSB2", proc / "43/fd/0")
    assert modem.holder("/dev/ttyUSB3", str(tmp_path), str(proc)) == "pppd (pid 42)"
    assert modem.holder("/dev/ttyUSB2", str(tmp_path), str(proc)) is None


# against the fake modem

class FakeModem:
    """tools/fakemodem.py on a pty; state changes through its state file."""

    def __init__(self, folder):
        self.state_path = folder / "state"
        self.log_path = folder / "commands"
        self.link = str(folder / "ttyFAKE")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tools", "fakemodem.py"), "--link", self.link,
             "--state", str(self.state_path), "--log", str(self.log_path)],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == self.link

    def set(self, **state):
        current = {}
        if self.state_path.exists():
            current = dict(line.split(" ", 1) for line in
                           self.state_path.read_text().splitlines() if " " in line)
        current.update({k: str(v) for k, v in state.items()})
        self.state_path.write_text("".join("%s %s\n" % kv for kv in current.items()))

    def registered(self, stat):
        self.set(creg=stat, cgreg=stat, cereg=stat)

    def state_text(self):
        return self.state_path.read_text() if self.state_path.exists() else ""

    def commands(self):
        return self.log_path.read_text().split() if self.log_path.exists() else []

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture
def fakemodem(tmp_path):
    fake = FakeModem(tmp_path)
    yield fake
    fake.stop()


@pytest.fixture
def host():
    made = []

    def make(*routes, **kw):
        made.append(Host(list(routes), **kw).start())
        return made[-1]
    yield make
    for one in made:
        one.close()


def settled(h):
    return h.run_until(lambda: not h.detectors.busy, 60.0)


def test_registered_home_roaming_and_searching(fakemodem, host):
    h = host(("lte", "modem:" + fakemodem.link))
    assert settled(h) and h.is_online("lte")
    assert fakemodem.commands() == ["AT+CREG?", "AT+CGREG?", "AT+CEREG?", "AT+CSQ"]
    for stat, online in ((2, False), (5, True), (3, False), (1, True)):
        fakemodem.registered(stat)
        h.publish(FlushAsked("lte"))
        h.spin(0.01)
        assert settled(h) and h.is_online("lte") is online, stat
        assert probe.probe("lte", "modem:" + fakemodem.link) is online
    assert "not registered (CREG 3, CGREG 3, CEREG 3)" == h.online.get("lte").last_error


def test_min_signal_and_an_lte_modem_that_does_not_know_its_rssi(fakemodem, host):
    fakemodem.set(csq=5)                                            # -103 dBm
    h = host(("lte", "modem:" + fakemodem.link, ("modem_min_signal", "-100")))
    assert settled(h) and not h.is_online("lte")
    fakemodem.set(csq=99)
    h.publish(FlushAsked("lte"))
    h.spin(0.01)
    assert settled(h) and h.is_online("lte")


def test_no_echo_unsolicited_noise_and_no_lte(fakemodem, host):
    fakemodem.set(echo=0, urc="^RSSI: 12", cereg="error", creg=0, cgreg=1)
    h = host(("umts", "modem:" + fakemodem.link))
    assert settled(h) and h.is_online("umts")


def test_a_silent_modem_times_out(fakemodem, host, monkeypatch):
    monkeypatch.setattr(ModemDetector, "exchange_timeout", 0.3)
    fakemodem.set(silent=1)
    h = host(("lte", "modem:" + fakemodem.link))
    assert settled(h) and not h.is_online("lte")
    assert h.online.get("lte").last_error == "no answer to AT+CREG? within 0.3s"


def test_a_locked_port_is_never_opened(fakemodem, host, monkeypatch, tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "LCK..ttyFAKE").write_text("%10d\n" % fakemodem.proc.pid)
    monkeypatch.setattr(ModemDetector, "lock_dir", str(locks))
    h = host(("lte", "modem:" + fakemodem.link))
    assert settled(h) and not h.is_online("lte")
    assert "in use by pid %d" % fakemodem.proc.pid in h.online.get("lte").last_error
    time.sleep(0.1)
    assert fakemodem.commands() == []


def test_dcd_mode_reads_only_the_carrier_even_on_a_locked_port(fakemodem, host, monkeypatch,
                                                               tmp_path):
    def read_lines(path):
        assert path == fakemodem.link
        return 0 if "dcd 0" in fakemodem.state_text() else termios.TIOCM_CAR | termios.TIOCM_DSR
    monkeypatch.setattr(ModemDetector, "read_lines", staticmethod(read_lines))
    (tmp_path / "LCK..ttyFAKE").write_text("%10d\n" % fakemodem.proc.pid)
    monkeypatch.setattr(ModemDetector, "lock_dir", str(tmp_path))
    h = host(("dialup", "modem:%s?dcd" % fakemodem.link))
    assert settled(h) and h.is_online("dialup")
    fakemodem.proc.send_signal(signal.SIGUSR1)                      # the line drops
    assert h.run_until(lambda: "dcd 0" in fakemodem.state_text(), 60.0)
    h.publish(FlushAsked("dialup"))
    assert h.run_until(lambda: not h.is_online("dialup"), 60.0)
    assert fakemodem.commands() == []                               # nothing was written


def test_dcd_on_a_pty_reports_why_it_cannot(fakemodem, host):
    h = host(("dialup", "modem:%s?dcd" % fakemodem.link))
    assert settled(h) and not h.is_online("dialup")
    assert "cannot read the modem lines" in h.online.get("dialup").last_error


def test_without_pyserial_the_route_is_offline_with_a_reason(fakemodem, host, monkeypatch):
    monkeypatch.setitem(sys.modules, "serial", None)
    h = host(("lte", "modem:" + fakemodem.link))
    assert settled(h) and not h.is_online("lte")
    assert "pyserial is not installed" in h.online.get("lte").last_error


def test_signals_lose_and_regain_registration(fakemodem, host):
    h = host(("lte", "modem:" + fakemodem.link), interval="0.1")
    h.scheduler.waiting.add("lte")
    h.publish(MessagesQueued(()))
    assert settled(h) and h.is_online("lte")
    fakemodem.proc.send_signal(signal.SIGUSR1)
    assert h.run_until(lambda: not h.is_online("lte"), 60.0)
    fakemodem.proc.send_signal(signal.SIGUSR2)
    assert h.run_until(lambda: h.is_online("lte"), 60.0)


def test_asked_only_while_mail_waits(fakemodem, host):
    h = host(("lte", "modem:" + fakemodem.link), interval="0.1")
    assert settled(h)
    h.spin(0.4)
    assert len(fakemodem.commands()) == 4 and h.loop.next_deadline() is None
    h.scheduler.waiting.add("lte")
    h.publish(MessagesQueued(()))
    h.spin(0.45)
    assert len(fakemodem.commands()) >= 4 * 4


def test_daemon_delivers_when_the_modem_registers(fakemodem, tmp_path):
    fakemodem.registered(2)
    log = held_then_delivered(tmp_path, "modem:%s" % fakemodem.link,
                              lambda: fakemodem.registered(5))
    assert "says online" in log

