"""The OpenWrt hotplug hook (/etc/hotplug.d/iface/95-masq).

It is run as hotplug-call runs it (sourced in a subshell with ACTION, INTERFACE, DEVICE)
in a fake root: a private mount namespace whose /etc/init.d holds a stub `masq` init
script (enabled or not), with a fake `masq` on PATH that records its arguments and then
hangs, and a fake `uci` that prints `uci show masq`. It must return while that `masq`
still hangs (a hook that waited for it would run into the run's time limit and fail),
poke the right command, start nothing for an interface no route names (lan, loopback,
wan6), and nothing at all while the service is disabled. It passes shellcheck. End to
end: the hook's `masq flush ROUTE` reaches a real daemon, which delivers held mail to an
aiosmtpd sink. (pppd's ip-up needs no script of masq's: on OpenWrt netifd runs this hook
for ppp links too.)
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


def needs_namespaces():
    done = subprocess.run(["unshare", "-m", "true"], capture_output=True) \
        if shutil.which("unshare") else None
    if done is None or done.returncode != 0:
        pytest.skip("needs root and unshare (a mount namespace for the fake /etc/init.d)")


@pytest.fixture
def fakes(tmp_path):
    """A bin folder with a recording, hanging `masq` and a `uci` printing UCI_SHOW, and a
    fake /etc/init.d whose `masq enabled` says yes (remove bin/enabled to say no)."""
    needs_namespaces()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    initd = tmp_path / "init.d"
    initd.mkdir()
    write_script(initd / "masq", '#!/bin/sh\n[ "$1" = enabled ] && [ -e %s ]\n'
                 % (bin_dir / "enabled"))
    (bin_dir / "enabled").write_text("")
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
    environ = {"PATH": "%s:/usr/bin:/bin:/usr/sbin:/sbin" % bin_dir, "HOTPLUG_TYPE": "iface"}
    environ.update(env)
    initd = os.path.join(os.path.dirname(str(bin_dir)), "init.d")
    return subprocess.run(["unshare", "-m", "sh", "-c",
                           'mount --bind "$0" /etc/init.d && exec sh -c \'( . "$0" )\' "$1"',
                           initd, HOOK], env=environ, capture_output=True, timeout=30)


def calls(record, expected, timeout=60.0):
    """Wait until `expected` calls were recorded (or the time is up: a bound on a failing
    wait, or, short, how long to look for calls that must not come); return them."""
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
    ({"ACTION": "ifup", "INTERFACE": "guest", "DEVICE": "br-guest"}, []),
    ({"ACTION": "ifup", "INTERFACE": "lan", "DEVICE": "br-lan"}, []),
    ({"ACTION": "ifup", "INTERFACE": "loopback", "DEVICE": "lo"}, []),
    ({"ACTION": "ifupdate", "INTERFACE": "wan6", "DEVICE": "pppoe-wan"}, []),
    ({"ACTION": "ifdown", "INTERFACE": "wan"}, ["online isp auto"]),
    ({"ACTION": "ifdown", "INTERFACE": "guest"}, []),
    ({"ACTION": "ifup-failed", "INTERFACE": "wan"}, []),
    ({}, [])])
def test_hook_returns_at_once_and_pokes_the_right_routes(fakes, env, expected):
    bin_dir, record = fakes
    done = run_hook(bin_dir, **env)
    assert done.returncode == 0
    assert done.stdout == b"" and done.stderr == b""
    assert calls(record, len(expected) or 1, timeout=60.0 if expected else 0.3) == expected


def test_hook_without_uci_starts_nothing(fakes):
    bin_dir, record = fakes
    os.unlink(bin_dir / "uci")
    done = run_hook(bin_dir, ACTION="ifup", INTERFACE="wan", DEVICE="ppp-wan")
    assert done.returncode == 0 and calls(record, 1, timeout=0.3) == []


def test_hook_does_nothing_while_the_service_is_disabled(fakes):
    bin_dir, record = fakes
    os.unlink(bin_dir / "enabled")
    done = run_hook(bin_dir, ACTION="ifup", INTERFACE="wan", DEVICE="pppoe-wan")
    assert done.returncode == 0 and done.stderr == b""
    assert calls(record, 1, timeout=0.3) == []


def test_hook_without_masq_does_nothing(fakes):
    bin_dir, record = fakes
    os.unlink(bin_dir / "masq")
    done = run_hook(bin_dir, ACTION="ifup", INTERFACE="wan", DEVICE="ppp-wan")
    assert done.returncode == 0 and done.stderr == b""


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (tools/install-test-deps)")
@pytest.mark.parametrize("script", [HOOK])
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
            [(_, rcpts, _)] = sink.wait(1, timeout=60)
            assert rcpts == ["far@example.org"]
    finally:
        daemon.stop()
