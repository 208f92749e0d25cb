"""The OpenWrt hotplug hook (/etc/hotplug.d/iface/95-masq) and the pppd ip-up.d script.

Both are run as their callers run them (hotplug-call sources the hook in a subshell with
ACTION, INTERFACE, DEVICE; pppd passes six arguments, Debian's ip-up exports PPP_IPPARAM)
with a fake `masq` on PATH that records its arguments and then hangs, and a fake `uci`
that prints `uci show masq`. They must return while that `masq` still hangs (a hook that
waited for it would run into the run's time limit and fail) and poke the right command. Both pass shellcheck. End to end: the hook's `masq flush ROUTE` reaches a real
daemon, which delivers held mail to an aiosmtpd sink.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, Daemon, free_port, masq, write_config
from sinks import Sink

HOOK = os.path.join(ROOT, "openwrt", "masq", "files", "masq.hotplug")
IP_UP = os.path.join(ROOT, "openwrt", "masq", "files", "ip-up.masq")
UCI_SHOW = """masq.main=masq
masq.main.hostname='router.lan'
masq.isp=route
masq.isp.online='ubus:wan'
masq.isp.smarthost='mail.isp.example:587'
masq.lte=route
masq.lte.online='iface:3g-wwan'
masq.qmi=route
masq.qmi.online='ubus:wwan'
masq.lan=route
masq.lan.online='always'
"""


def write_script(path, text):
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fakes(tmp_path):
    """A bin folder with a recording, hanging `masq` and a `uci` printing UCI_SHOW."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record, pids = tmp_path / "calls", tmp_path / "pids"
    write_script(bin_dir / "masq", '#!/bin/sh\necho $$ >> %s\necho "$*" >> %s\n'
                 'exec sleep 600\n' % (pids, record))
    write_script(bin_dir / "uci", "#!/bin/sh\n[ \"$*\" = '-q show masq' ] || exit 1\n"
                 "cat <<'EOF'\n%sEOF\n" % UCI_SHOW)
    yield bin_dir, record
    for pid in (pids.read_text().split() if pids.exists() else ()):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_hook(bin_dir, **env):
    """Source the hook in a subshell, as hotplug-call does; return the finished process.

    The fake `masq` hangs for ten minutes: the hook returns only if it does not wait for it."""
    environ = {"PATH": "%s:/usr/bin:/bin" % bin_dir, "HOTPLUG_TYPE": "iface"}
    environ.update(env)
    return subprocess.run(["sh", "-c", '( . "$0" )', HOOK], env=environ,
                          capture_output=True, timeout=30)


def calls(record, expected, timeout=2.0):
    """Wait until `expected` calls were recorded (or the time is up); return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = record.read_text().splitlines() if record.exists() else []
        if len(lines) >= expected:
            break
        time.sleep(0.02)
    time.sleep(0.1)                                 # and nothing more arrives
    return sorted(record.read_text().splitlines()) if record.exists() else []


@pytest.mark.parametrize("env, expected", [
    ({"ACTION": "ifup", "INTERFACE": "wan", "DEVICE": "pppoe-wan"}, ["flush isp"]),
    ({"ACTION": "ifupdate", "INTERFACE": "wwan", "DEVICE": "3g-wwan",
      "IFUPDATE_ADDRESSES": "1"}, ["flush lte", "flush qmi"]),
    ({"ACTION": "ifup", "INTERFACE": "wwan_4", "DEVICE": "wwan0"}, ["flush qmi"]),
    ({"ACTION": "ifup", "INTERFACE": "guest", "DEVICE": "br-guest"}, ["flush"]),
    ({"ACTION": "ifdown", "INTERFACE": "wan"}, ["online isp auto"]),
    ({"ACTION": "ifdown", "INTERFACE": "guest"}, []),
    ({"ACTION": "ifup-failed", "INTERFACE": "wan"}, []),
    ({}, [])])
def test_hook_returns_at_once_and_pokes_the_right_routes(fakes, env, expected):
    bin_dir, record = fakes
    done = run_hook(bin_dir, **env)
    assert done.returncode == 0
    assert done.stdout == b"" and done.stderr == b""
    assert calls(record, len(expected) or 1, timeout=2.0 if expected else 0.3) == expected


def test_hook_without_uci_flushes_everything(fakes):
    bin_dir, record = fakes
    os.unlink(bin_dir / "uci")
    done = run_hook(bin_dir, ACTION="ifup", INTERFACE="wan", DEVICE="ppp-wan")
    assert done.returncode == 0 and calls(record, 1) == ["flush"]


def test_hook_without_masq_does_nothing(fakes):
    bin_dir, record = fakes
    os.unlink(bin_dir / "masq")
    done = run_hook(bin_dir, ACTION="ifup", INTERFACE="wan", DEVICE="ppp-wan")
    assert done.returncode == 0 and done.stderr == b""


@pytest.mark.parametrize("args, env, expected", [
    (["ppp0", "/dev/ttyS0", "115200", "10.0.0.2", "10.0.0.1", "isp"], {}, ["flush isp"]),
    ([], {"PPP_IFACE": "ppp0", "PPP_IPPARAM": "lte"}, ["flush lte"]),     # Debian ip-up.d
    (["ppp0", "/dev/ttyS0", "115200", "10.0.0.2", "10.0.0.1"], {}, ["flush"])])
def test_ip_up_flushes_the_ipparam_route(fakes, args, env, expected):
    bin_dir, record = fakes
    environ = dict(env, PATH="%s:/usr/bin:/bin" % bin_dir)
    done = subprocess.run(["sh", IP_UP] + args, env=environ, capture_output=True, timeout=30)
    assert done.returncode == 0
    assert calls(record, 1) == expected


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (tools/install-test-deps)")
@pytest.mark.parametrize("script", [HOOK, IP_UP])
def test_shellcheck_clean(script):
    done = subprocess.run(["shellcheck", "-s", "sh", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_hook_flush_reaches_a_real_daemon(tmp_path, fakes):
    bin_dir, _ = fakes
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), routes=(
        "config route 'isp'\n\toption online 'file:%s'\n\toption smarthost '127.0.0.1:%d'\n"
        "\toption tls 'none'\n" % (tmp_path / "never", port)))
    write_script(bin_dir / "masq", "#!/bin/sh\nPYTHONPATH=%s exec %s -m masq -C %s \"$@\"\n"
                 % (ROOT, sys.executable, conf))
    daemon = Daemon(conf).start()
    try:
        with Sink(port) as sink:
            done = masq("-C", conf, "-odq", "far@example.org", input=b"Subject: t\n\nheld\n")
            assert done.returncode == 0, done.stderr
            time.sleep(0.3)
            assert sink.messages == []
            assert run_hook(bin_dir, ACTION="ifup", INTERFACE="wan", DEVICE="ppp-wan").returncode == 0
            [(_, rcpts, _)] = sink.wait(1, timeout=5)
            assert rcpts == ["far@example.org"]
    finally:
        daemon.stop()
