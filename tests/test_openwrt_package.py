"""The OpenWrt packaging: the .ipk files tools/build_ipk.py makes, what they install, the
procd init script, the rpcd plugin, the shell scripts and the LuCI JavaScript.

The ipk is unpacked into a fake root and run from there (launcher, sendmail submission);
the init script runs under a stub /etc/rc.common whose procd_* functions print their
arguments.
"""

import importlib.util
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile

import pytest

from helpers import ROOT

OPENWRT = os.path.join(ROOT, "openwrt")
LUCI = os.path.join(OPENWRT, "luci-app-masq")
PLUGIN = os.path.join(LUCI, "root", "usr", "libexec", "rpcd", "luci.masq")
PYVER = "%d.%d" % sys.version_info[:2]             # the byte-code is this interpreter's
SITE = "usr/lib/python%s/site-packages" % PYVER
IPK_MEMBERS = ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]   # ipkg-build order


def _version():
    spec = importlib.util.spec_from_file_location("masq_init", os.path.join(ROOT, "masq",
                                                                            "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.__version__


VERSION = _version()
FULL_VERSION = VERSION + "-r1"


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """Build both packages once; return the output folder."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_ipk.py"),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def _ipk(dist, name):
    return os.path.join(str(dist), "%s_%s_all.ipk" % (name, FULL_VERSION))


def _members(path):
    """Return {name: bytes} of a .ipk's outer tar, and the names in order."""
    with tarfile.open(path, "r:gz") as tar:
        infos = tar.getmembers()
        return {i.name: tar.extractfile(i).read() for i in infos}, infos


def _inner(blob):
    """Return the TarInfo list and {name: bytes} of a .tar.gz blob."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        infos = tar.getmembers()
        return infos, {i.name: tar.extractfile(i).read() for i in infos if i.isfile()}


def _control(dist, name):
    members, _ = _members(_ipk(dist, name))
    _, files = _inner(members["./control.tar.gz"])
    fields = {}
    for line in files["./control"].decode().splitlines():
        if not line.startswith(" "):
            key, _, value = line.partition(": ")
            fields[key] = value
    return fields, files


@pytest.fixture(scope="module")
def fakeroot(dist, tmp_path_factory):
    """Unpack masq's data.tar.gz into a fake root; point the launcher at it."""
    root = tmp_path_factory.mktemp("root")
    members, _ = _members(_ipk(dist, "masq"))
    with tarfile.open(fileobj=io.BytesIO(members["./data.tar.gz"]), mode="r:gz") as tar:
        tar.extractall(str(root), filter="data")
    launcher = root / "usr" / "bin" / "masq"
    text = launcher.read_text()
    text = text.replace("#!/usr/bin/python3", "#!" + sys.executable, 1)
    launcher.write_text(text.replace("'/%s'" % SITE, repr(str(root / SITE))))
    (root / "usr" / "sbin").mkdir()
    os.symlink("../bin/masq", str(root / "usr" / "sbin" / "sendmail"))   # an alternative
    return root


# ---- the package files --------------------------------------------------------------

@pytest.mark.parametrize("name", ["masq", "masq-src", "masq-modem", "luci-app-masq"])
def test_outer_format_is_ipkg_build_s(dist, name):
    path = _ipk(dist, name)
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"                       # gzip, not an ar archive
    members, infos = _members(path)
    assert [i.name for i in infos] == IPK_MEMBERS
    assert all(i.isfile() and i.uid == 0 and i.gid == 0 for i in infos)
    assert members["./debian-binary"] == b"2.0\n"
    for blob in (members["./data.tar.gz"], members["./control.tar.gz"]):
        assert blob[:2] == b"\x1f\x8b"


def test_masq_control_fields(dist):
    fields, files = _control(dist, "masq")
    assert fields["Package"] == "masq"
    assert fields["Version"] == FULL_VERSION
    major, minor = sys.version_info[:2]
    assert fields["Depends"] == ("python3-light (>= %d.%d), python3-light (<< %d.%d), "
                                 "python3-openssl" % (major, minor, major, minor + 1))
    assert fields["Source"] == "feeds/masq/masq" and fields["SourceName"] == "masq"
    assert fields["Section"] == "mail" and fields["Architecture"] == "all"
    assert fields["Alternatives"].split(", ") == [
        "200:%s:/usr/bin/masq" % path for path in (
            "/usr/sbin/sendmail", "/usr/lib/sendmail", "/usr/bin/mailq",
            "/usr/bin/newaliases", "/usr/sbin/runq")]
    assert fields["Description"].strip()
    members, _ = _members(_ipk(dist, "masq"))
    data = members["./data.tar.gz"]
    import gzip
    assert int(fields["Installed-Size"]) == len(gzip.decompress(data))  # as ipkg-build
    assert files["./conffiles"] == b"/etc/config/masq\n"


def test_the_daemon_runs_as_the_masq_account(dist, fakeroot):
    """default_postinst creates the Require-User account (the Makefile's USERID); the
    shipped configuration makes the daemon drop to it (issue 18 point 1)."""
    fields, _ = _control(dist, "masq")
    makefile = open(os.path.join(OPENWRT, "masq", "Makefile")).read()
    userid = re.search(r"^\s*USERID:=(\S+)$", makefile, re.M).group(1)
    assert fields["Require-User"] == userid == "masq=27:masq=27"
    config = (fakeroot / "etc" / "config" / "masq").read_text()
    assert "\toption user 'masq'\n" in config


@pytest.mark.parametrize("name", ["masq", "masq-src", "masq-modem", "luci-app-masq"])
def test_maintainer_scripts_follow_openwrt(dist, name):
    _, files = _control(dist, name)
    assert b"default_postinst" in files["./postinst"]
    assert b"default_prerm" in files["./prerm"]
    own = name in ("masq", "luci-app-masq")             # a postinst-pkg of their own
    assert ("./postinst-pkg" in files) == own
    if own:
        assert b'[ -n "${IPKG_INSTROOT}" ] ||' in files["./postinst-pkg"]
    members, _ = _members(_ipk(dist, name))
    infos, _ = _inner(members["./control.tar.gz"])
    modes = {i.name: i.mode for i in infos}
    for script in ("./postinst", "./prerm") + (("./postinst-pkg",) if own else ()):
        assert modes[script] == 0o755


def test_luci_control_fields(dist):
    fields, files = _control(dist, "luci-app-masq")
    assert fields["Package"] == "luci-app-masq" and fields["Version"] == FULL_VERSION
    assert fields["Depends"] == "luci-base, masq"
    assert fields["Architecture"] == "all"
    assert "./conffiles" not in files


def test_masq_data_members(dist):
    members, _ = _members(_ipk(dist, "masq"))
    infos, files = _inner(members["./data.tar.gz"])
    assert all(i.uid == 0 and i.gid == 0 for i in infos)
    assert all(not i.mode & 0o022 for i in infos)                # nothing group/world-writable
    modes = {i.name: i.mode for i in infos}
    assert modes["./usr/bin/masq"] == 0o755
    assert modes["./etc/init.d/masq"] == 0o755
    assert modes["./etc/config/masq"] == 0o600                   # routes hold passwords
    assert modes["./etc/hotplug.d/iface/95-masq"] == 0o644
    assert files["./usr/bin/masq"].startswith(b"#!/usr/bin/python3 -IS\n")
    assert "./%s/masq/cli/__init__.pyc" % SITE in files
    assert "./%s/masq/config/presets.pyc" % SITE in files
    assert not any(name.endswith(".py") for name in files)      # sources: masq-src
    assert "./usr/share/masq/board/quectel-ec2x.conf" in files
    assert not any("rpcd" in name or "/www/" in name for name in files)
    assert not any("__pycache__" in name for name in files)


def test_byte_code_as_the_feed_ships_it_and_sources_in_masq_src(dist):
    """compileall -b: NAME.pyc where NAME.py was, this interpreter's magic, no source to
    check (issue 18 point 3); masq-src holds exactly the matching .py files."""
    members, _ = _members(_ipk(dist, "masq"))
    _, files = _inner(members["./data.tar.gz"])
    pycs = sorted(n for n in files if n.endswith(".pyc"))
    members, _ = _members(_ipk(dist, "masq-src"))
    _, sources = _inner(members["./data.tar.gz"])
    assert sorted(n + "c" for n in sources) == pycs
    for name in pycs:
        data = files[name]
        assert data[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(data[4:8], "little") == 0b01      # hash-based, unchecked
        assert data[8:16] == importlib.util.source_hash(sources[name[:-1]])
    fields, _ = _control(dist, "masq-src")
    assert fields["Depends"] == "masq"


def test_masq_modem_is_built(dist):
    fields, _ = _control(dist, "masq-modem")
    assert fields["Depends"] == "masq, python3-pyserial"
    assert fields["Architecture"] == "all"


def test_printed_size_is_the_installed_size_field(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_ipk.py"),
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        path, _, rest = line.partition(": ")
        printed = int(re.search(r"Installed-Size (\d+)", rest).group(1))
        name = os.path.basename(path).split("_")[0]
        fields, _ = _control(tmp_path, name)
        assert int(fields["Installed-Size"]) == printed, line


def test_luci_data_members(dist):
    members, _ = _members(_ipk(dist, "luci-app-masq"))
    infos, files = _inner(members["./data.tar.gz"])
    modes = {i.name: i.mode for i in infos}
    assert "./www/luci-static/resources/view/masq/status.js" in files
    assert "./www/luci-static/resources/view/masq/settings.js" in files
    assert "./usr/share/luci/menu.d/luci-app-masq.json" in files
    assert "./usr/share/rpcd/acl.d/luci-app-masq.json" in files
    assert modes["./usr/libexec/rpcd/luci.masq"] == 0o755
    assert all(i.uid == 0 and i.gid == 0 for i in infos)
    assert not any("/etc/uci-defaults/" in name for name in files)   # luci.mk does that


def test_build_is_reproducible(tmp_path):
    # Two builds back to back (the tree is shared with other work in progress).
    env = dict(os.environ, SOURCE_DATE_EPOCH="1764115200")
    for out in ("a", "b"):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_ipk.py"),
                        "--out", str(tmp_path / out)], check=True, capture_output=True,
                       env=env, timeout=300)
    for name in ("masq", "luci-app-masq"):
        with open(_ipk(tmp_path / "a", name), "rb") as a, \
                open(_ipk(tmp_path / "b", name), "rb") as b:
            assert a.read() == b.read()
        with tarfile.open(_ipk(tmp_path / "a", name), "r:gz") as tar:
            assert {i.mtime for i in tar.getmembers()} == {1764115200}


# ---- running from the fake root ----------------------------------------------------

def test_launcher_prints_the_version(fakeroot):
    done = subprocess.run([str(fakeroot / "usr" / "bin" / "masq"), "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "masq %s\n" % VERSION


def test_shipped_config_is_valid(fakeroot, tmp_path):
    # the router has the account `masq` (Require-User); this machine has root for sure
    conf = tmp_path / "masq.conf"
    conf.write_text((fakeroot / "etc" / "config" / "masq").read_text().replace(
        "option user 'masq'", "option user 'root'"))
    done = subprocess.run([str(fakeroot / "usr" / "bin" / "masq"), "check-config", "-C",
                           str(conf)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "option spool_dir '/usr/var/spool/masq'" in done.stdout
    assert "option status_listen '127.0.0.1:8025'" in done.stdout


def test_sendmail_submission_in_the_fake_root(fakeroot, tmp_path):
    spool = tmp_path / "spool"
    conf = tmp_path / "masq.conf"
    conf.write_text("config masq 'main'\n\toption hostname 'router.lan'\n"
                    "\toption spool_dir '%s'\n\toption pid_file '%s/masq.pid'\n"
                    "\toption status_file '%s/status.json'\n\toption log 'stderr'\n"
                    % (spool, tmp_path, tmp_path))
    env = dict(os.environ)
    env.pop("MASQ_CONFIG", None)
    sendmail = str(fakeroot / "usr" / "sbin" / "sendmail")
    done = subprocess.run([sendmail, "-C", str(conf), "-odq", "-f", "root@router.lan",
                           "friend@example.com"], input="Subject: hello\n\nfrom the router\n",
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([str(fakeroot / "usr" / "bin" / "masq"), "queue", "-C", str(conf)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "friend@example.com" in done.stdout


# ---- the procd init script ------------------------------------------------------------

FAKE_RC_COMMON = r"""#!/bin/sh
# Stub /etc/rc.common: source the init script, run one action, print what procd gets.
initscript=$1
action=$2
shift 2
extra_command() { echo "extra_command $1|$2"; }
procd_open_instance() { echo "procd_open_instance $*"; }
procd_set_param() { printf 'procd_set_param'; printf ' %s' "$@"; echo; }
procd_close_instance() { echo "procd_close_instance"; }
procd_add_reload_trigger() { echo "procd_add_reload_trigger $*"; }
. "$initscript"
echo "START=$START STOP=$STOP USE_PROCD=$USE_PROCD"
case "$action" in
start) start_service ;;
triggers) service_triggers ;;
*) "$action" "$@" ;;
esac
"""


def _rc(fakeroot, tmp_path, *args, script=None):
    rc_common = tmp_path / "rc.common"
    rc_common.write_text(FAKE_RC_COMMON)
    script = script or str(fakeroot / "etc" / "init.d" / "masq")
    done = subprocess.run(["sh", str(rc_common), script] + list(args),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_init_script_gives_procd_the_daemon(fakeroot, tmp_path):
    init = (fakeroot / "etc" / "init.d" / "masq").read_text()
    assert init.startswith("#!/bin/sh /etc/rc.common\n")
    lines = _rc(fakeroot, tmp_path, "start")
    assert "START=95 STOP=10 USE_PROCD=1" in lines
    assert "extra_command flush|Deliver queued mail now" in lines
    body = lines[lines.index("procd_open_instance "):]
    assert body[-1] == "procd_close_instance"
    params = body[1:-1]
    assert "procd_set_param command /usr/bin/masq daemon" in params
    assert "procd_set_param file /etc/config/masq" in params
    assert "procd_set_param reload_signal HUP" in params
    assert "procd_set_param respawn" in params
    assert "procd_set_param stderr 1" in params


def test_init_script_reload_trigger(fakeroot, tmp_path):
    assert "procd_add_reload_trigger masq" in _rc(fakeroot, tmp_path, "triggers")


def test_init_script_flush_runs_masq_flush(fakeroot, tmp_path):
    stub = tmp_path / "masq-stub"
    stub.write_text("#!/bin/sh\necho \"masq $*\"\n")
    stub.chmod(0o755)
    init = (fakeroot / "etc" / "init.d" / "masq").read_text()
    copy = tmp_path / "masq.init"
    copy.write_text(init.replace("PROG=/usr/bin/masq", "PROG=%s" % stub))
    assert "masq flush isp" in _rc(fakeroot, tmp_path, "flush", "isp", script=str(copy))
    assert "masq flush" in _rc(fakeroot, tmp_path, "flush", script=str(copy))


# ---- shell scripts and JavaScript ---------------------------------------------------

def _shell_scripts():
    found = []
    for folder, dirs, names in os.walk(OPENWRT):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                if f.read(9) == b"#!/bin/sh":
                    found.append(path)
    return found


def test_every_openwrt_script_is_found():
    names = {os.path.relpath(p, OPENWRT) for p in _shell_scripts()}
    assert {"masq/files/masq.init", "masq/files/masq.hotplug", "masq/test.sh",
            "luci-app-masq/root/usr/libexec/rpcd/luci.masq"} <= names


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed")
@pytest.mark.parametrize("path", _shell_scripts(), ids=lambda p: os.path.relpath(p, OPENWRT))
def test_shellcheck(path):
    done = subprocess.run(["shellcheck", "-s", "sh", path], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck is not installed")
@pytest.mark.parametrize("name", ["masq", "masq-src", "masq-modem", "luci-app-masq"])
def test_shellcheck_maintainer_scripts(dist, tmp_path, name):
    _, files = _control(dist, name)
    for script in [n for n in ("./postinst", "./prerm", "./postinst-pkg") if n in files]:
        path = tmp_path / script[2:]
        path.write_bytes(files[script])
        done = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout


def _js_files():
    top = os.path.join(LUCI, "htdocs")
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(top)
                  for name in names if name.endswith(".js"))


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
@pytest.mark.parametrize("path", _js_files(), ids=os.path.basename)
def test_luci_javascript_parses(path):
    done = subprocess.run(["node", "--check", path], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_luci_views_use_the_plugin_and_the_uci_config():
    status = open(os.path.join(LUCI, "htdocs", "luci-static", "resources", "view", "masq",
                               "status.js")).read()
    assert "object: 'luci.masq'" in status and "method: 'status'" in status
    assert "method: 'flush'" in status and "poll.add(" in status
    assert "view.extend(" in status
    settings = open(os.path.join(LUCI, "htdocs", "luci-static", "resources", "view",
                                 "masq", "settings.js")).read()
    assert "new form.Map('masq'" in settings
    for section in ("'masq'", "'route'", "'user'"):
        assert section in settings


def test_menu_and_acl():
    share = os.path.join(LUCI, "root", "usr", "share")
    menu = json.load(open(os.path.join(share, "luci", "menu.d", "luci-app-masq.json")))
    assert menu["admin/services/masq"]["depends"]["acl"] == ["luci-app-masq"]
    assert menu["admin/services/masq/status"]["action"]["path"] == "masq/status"
    assert menu["admin/services/masq/settings"]["action"]["path"] == "masq/settings"
    acl = json.load(open(os.path.join(share, "rpcd", "acl.d", "luci-app-masq.json")))
    grants = acl["luci-app-masq"]
    assert grants["read"]["ubus"]["luci.masq"] == ["status"]
    assert grants["write"]["ubus"]["luci.masq"] == ["flush"]
    assert grants["read"]["uci"] == ["masq"] and grants["write"]["uci"] == ["masq"]


# ---- the rpcd plugin ----------------------------------------------------------------

def _plugin(tmp_path, *args, stdin="", status_file=None, masq_bin=None):
    """Run the plugin with a stub `uci` on PATH that names status_file."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    uci = bindir / "uci"
    uci.write_text("#!/bin/sh\n%s\n" % ("echo '%s'" % status_file if status_file
                                       else "exit 1"))
    uci.chmod(0o755)
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ["PATH"]))
    if masq_bin:
        env["MASQ_BIN"] = masq_bin
    done = subprocess.run(["sh", PLUGIN] + list(args), input=stdin, capture_output=True,
                          text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_plugin_list(tmp_path):
    methods = _plugin(tmp_path, "list")
    assert methods == {"status": {}, "flush": {"route": "name"}}


def test_plugin_status_prints_the_status_file(tmp_path):
    doc = {"version": "1.0", "hostname": "router.lan", "routes": [{"name": "isp",
           "online": True}], "queue": [], "counters": {"accepted": 1}}
    path = tmp_path / "status.json"
    path.write_text(json.dumps(doc))
    assert _plugin(tmp_path, "call", "status", status_file=str(path)) == doc


def test_plugin_status_without_a_daemon(tmp_path):
    answer = _plugin(tmp_path, "call", "status", status_file=str(tmp_path / "missing"))
    assert set(answer) == {"error"}


def test_plugin_flush_starts_masq_in_the_background(tmp_path):
    log = tmp_path / "flush.log"
    stub = tmp_path / "masq"
    stub.write_text("#!/bin/sh\necho \"$*\" >> %s\n" % log)
    stub.chmod(0o755)
    answer = _plugin(tmp_path, "call", "flush", masq_bin=str(stub),
                     stdin='{"route": "isp", "ubus_rpc_session": "abc"}')
    assert answer == {"started": True, "route": "isp"}
    answer = _plugin(tmp_path, "call", "flush", masq_bin=str(stub), stdin="{}")
    assert answer == {"started": True, "route": ""}
    import time
    deadline = time.time() + 60             # a bound on a failing wait, not a timing
    while time.time() < deadline and len(_lines(log)) < 2:
        time.sleep(0.05)
    assert sorted(_lines(log)) == ["flush", "flush isp"]


def _lines(path):
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("stdin", ['{"route": "isp; reboot"}', '{"route": "a\\"b"}',
                                   '{"route": "../x"}'])
def test_plugin_flush_refuses_a_bad_route(tmp_path, stdin):
    answer = _plugin(tmp_path, "call", "flush", masq_bin="/bin/false", stdin=stdin)
    assert "error" in answer


def test_plugin_unknown_method(tmp_path):
    assert "error" in _plugin(tmp_path, "call", "reboot")


# ---- the SDK Makefiles and the feed test ----------------------------------------------

def test_package_makefile():
    text = open(os.path.join(OPENWRT, "masq", "Makefile")).read()
    order = [text.index(s) for s in ("include $(TOPDIR)/rules.mk",
                                     "include $(INCLUDE_DIR)/package.mk",
                                     "lang/python/python3-package.mk")]
    assert order == sorted(order)
    assert re.search(r"^PKG_VERSION:=%s$" % re.escape(VERSION), text, re.M)
    assert re.search(r"^PKG_RELEASE:=1$", text, re.M)
    assert re.search(r"^PKG_VERSION:=[0-9]+(\.[0-9]+)*$", text, re.M)   # apk-valid
    assert "DEPENDS:=+python3-light +python3-openssl" in text
    assert "DEPENDS:=+masq +python3-pyserial" in text
    for path in ("/usr/sbin/sendmail", "/usr/lib/sendmail", "/usr/bin/mailq",
                 "/usr/bin/newaliases", "/usr/sbin/runq"):
        assert "\t200:%s:/usr/bin/masq" % path in text
    assert "define Package/masq/conffiles\n/etc/config/masq\nendef" in text
    # a feed package: a release tarball with its hash, the project's URL, a maintainer
    # (issue 18 point 2); no Build/Prepare copying from a checkout
    assert "PKG_SOURCE:=$(PKG_NAME)-$(PKG_VERSION).tar.gz" in text
    assert re.search(r"^PKG_SOURCE_URL:=https://\S+/$", text, re.M)
    assert re.search(r"^PKG_HASH:=[0-9a-f]{64}$", text, re.M)
    assert re.search(r"^PKG_MAINTAINER:=[^<>]+ <[^@<>]+@[^@<>]+>$", text, re.M)
    assert re.search(r"^PKG_LICENSE_FILES:=LICENSE$", text, re.M)
    assert text.count("  URL:=https://") == 2                   # masq and masq-modem
    assert "Build/Prepare" not in text and "MASQ_SOURCE_DIR" not in text
    for name in re.findall(r"\./files/([\w.]+)", text):
        assert os.path.exists(os.path.join(OPENWRT, "masq", "files", name)), name
    assert "$(eval $(call Py3Package,masq))" in text


def test_luci_makefile():
    text = open(os.path.join(LUCI, "Makefile")).read()
    assert re.search(r"^PKG_VERSION:=%s$" % re.escape(VERSION), text, re.M)
    assert re.search(r"^PKG_RELEASE:=1$", text, re.M)
    assert not os.path.exists(os.path.join(LUCI, "root", "etc", "uci-defaults"))
    assert "LUCI_DEPENDS:=+luci-base +masq" in text
    assert "include $(TOPDIR)/feeds/luci/luci.mk" in text


def test_pyproject_builds_the_masq_package():
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert project["project"]["name"] == "masq"
    assert project["project"]["dependencies"] == []
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "masq.__version__"}
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == [
        "masq", "masq.*"]
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"


def test_feed_test_script(tmp_path):
    stub = tmp_path / "masq"
    stub.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'masq %s'\nexit 0\n"
                    % VERSION)
    stub.chmod(0o755)
    env = dict(os.environ, PATH="%s:%s" % (tmp_path, os.environ["PATH"]))
    script = os.path.join(OPENWRT, "masq", "test.sh")
    ok = subprocess.run(["sh", script, "masq", VERSION], env=env, capture_output=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(["sh", script, "masq", "9.9.9"], env=env, capture_output=True)
    assert bad.returncode == 1
    other = subprocess.run(["sh", script, "luci-app-masq", VERSION], env=env)
    assert other.returncode == 0
    assert stat.S_IMODE(os.stat(script).st_mode) & 0o111


@pytest.mark.parametrize("enabled, upgrade, expected", [
    (True, "1", ["enabled", "restart"]),
    (False, "1", ["enabled"]),                      # disabled by the administrator: stays
    (True, "", [])])                                # a first install: default_postinst starts it
def test_postinst_restarts_only_an_enabled_service(dist, tmp_path, enabled, upgrade, expected):
    """masq's postinst-pkg, run in a fake root (a mount namespace whose /etc/init.d holds
    a stub init script that records its verbs)."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"]).returncode:
        pytest.skip("needs root and unshare (a mount namespace for the fake /etc/init.d)")
    _, files = _control(dist, "masq")
    script = tmp_path / "postinst-pkg"
    script.write_bytes(files["./postinst-pkg"])
    initd, record = tmp_path / "init.d", tmp_path / "calls"
    initd.mkdir()
    stub = initd / "masq"
    stub.write_text('#!/bin/sh\necho "$1" >> %s\n[ "$1" != enabled ] || exit %d\n'
                    % (record, 0 if enabled else 1))
    stub.chmod(0o755)
    env = dict(os.environ, PKG_UPGRADE=upgrade)
    env.pop("IPKG_INSTROOT", None)
    done = subprocess.run(["unshare", "-m", "sh", "-c",
                           'mount --bind "$0" /etc/init.d && exec sh "$1"', str(initd),
                           str(script)], env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (record.read_text().split() if record.exists() else []) == expected


def test_luci_translation_template_is_up_to_date():
    """po/templates/masq.pot holds every _('...') string and menu title (issue 18 point 5)."""
    pot = os.path.join(LUCI, "po", "templates", "masq.pot")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "luci_pot.py"),
                           "--check"], capture_output=True)
    assert done.returncode == 0, "run tools/luci_pot.py"
    text = open(pot).read()
    assert 'msgid "Mail (masq)"' in text and 'msgid "General"' in text
    if shutil.which("msgfmt"):
        done = subprocess.run(["msgfmt", "--check-format", "-o", "/dev/null", pot],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_make_dist_is_reproducible_and_holds_what_the_package_builds_from(tmp_path):
    """`make dist` (issue 18 point 2): the tarball PKG_SOURCE names, the same bytes twice,
    with everything Py3Package and Py3Package/masq/install use, and not the feed."""
    digests = []
    for out in ("a", "b"):
        done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "dist.py"),
                               "--out", str(tmp_path / out)], capture_output=True,
                              text=True, timeout=300,
                              env=dict(os.environ, SOURCE_DATE_EPOCH="1764115200"))
        assert done.returncode == 0, done.stderr
        digests.append(done.stdout.split("sha256 ")[1].strip())
    name = "masq-%s.tar.gz" % VERSION
    a, b = (open(str(tmp_path / out / name), "rb").read() for out in ("a", "b"))
    assert a == b and digests[0] == digests[1]
    import hashlib
    assert hashlib.sha256(a).hexdigest() == digests[0]
    with tarfile.open(str(tmp_path / "a" / name), "r:gz") as tar:
        infos = tar.getmembers()
    names = [i.name for i in infos]
    assert names == sorted(names) and all(n.startswith("masq-%s/" % VERSION) or
                                          n == "masq-%s" % VERSION for n in names)
    top = "masq-%s/" % VERSION
    for needed in ("masq/__init__.py", "pyproject.toml", "README.md", "LICENSE",
                   "tools/launcher.py", "board/quectel-ec2x.conf"):
        assert top + needed in names, needed
    assert not any(n.startswith(top + "openwrt/") for n in names)
    assert {i.mtime for i in infos} == {1764115200}
    assert all(i.uid == 0 and i.gid == 0 for i in infos)


def test_the_packagers_page_covers_both_formats():
    """openwrt/README.md (issue 18 point 4): 24.10 ipk and 25.x apk through the SDK, the
    release tarball, and what apk makes of USERID, ALTERNATIVES and conffiles."""
    text = open(os.path.join(OPENWRT, "README.md")).read()
    for needed in ("24.10", "25.12", "opkg install", "apk add", "make dist",
                   "--update-hash", "feeds.conf", ".rusers", ".alternatives",
                   ".conffiles_static", "PKG_VERSION"):
        assert needed in text, needed
