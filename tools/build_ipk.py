#!/usr/bin/env python3
"""Build masq's OpenWrt .ipk packages (masq, masq-src, masq-modem, luci-app-masq) without
the SDK (the real per-release builds come from openwrt/masq/Makefile in an SDK; see
openwrt/README.md).

An ipk is what scripts/ipkg-build writes: a gzip'ed tar (GNU format) holding
./debian-binary ("2.0"), ./data.tar.gz and ./control.tar.gz, in that order. Every tar
here is GNU format, owner root:root (numeric 0:0), members sorted, mtimes set to
SOURCE_DATE_EPOCH (else the last commit's time), gzip without name or time: the same
tree gives the same bytes. control.tar.gz holds control, conffiles, and the postinst and
prerm wrappers OpenWrt generates (source /lib/functions.sh, call default_postinst /
default_prerm: create the Require-User account, enable and start the init script, run
uci-defaults, stop and disable on removal), plus the package's own postinst-pkg, which
only acts on a live system (`[ -n "$IPKG_INSTROOT" ] ||`). Installed-Size is the
uncompressed data tar's length, as ipkg-build computes it, and is what is printed.

Python as the feed's python3-package.mk ships it: legacy byte-code beside where each
module was (`compileall -b`: masq/cli/main.pyc), no .py; the sources go into masq-src.
Byte-code belongs to one Python minor version: the one running this script is the
target (3.11 builds for 24.10, 3.13 for 25.12); the package directory follows it and
masq depends on that python3-light minor version, so opkg refuses a mismatch. The LuCI
JavaScript is not minified (the SDK does that).

Usage: tools/build_ipk.py [--out DIR]
"""

import argparse
import gzip
import io
import os
import py_compile
import re
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

POSTINST = """#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck disable=SC1091
. "${IPKG_INSTROOT}/lib/functions.sh"
default_postinst "$0" "$@"
"""
PRERM = """#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
# shellcheck disable=SC1091
. "${IPKG_INSTROOT}/lib/functions.sh"
default_prerm "$0" "$@"
"""
MASQ_POSTINST_PKG = """#!/bin/sh
# On an upgrade, restart masq so that the new code runs (procd keeps an instance whose
# command line and configuration did not change), but only if the administrator left
# the service enabled: a disabled masq stays stopped.
[ -n "${IPKG_INSTROOT}" ] || {
	if [ "${PKG_UPGRADE}" = "1" ] && /etc/init.d/masq enabled; then
		/etc/init.d/masq restart
	fi
	exit 0
}
"""
# What luci.mk gives every LuCI app: forget the menu caches, make rpcd read the new ACL
# and plugin.
LUCI_POSTINST_PKG = """#!/bin/sh
[ -n "${IPKG_INSTROOT}" ] || {
	rm -f /tmp/luci-indexcache.*
	rm -rf /tmp/luci-modulecache/
	killall -HUP rpcd 2>/dev/null
	exit 0
}
"""
MASQ_DESCRIPTION = """\
masq is a sendmail-compatible mail transfer agent for small, often-offline
devices. It keeps mail in a crash-safe queue on flash until a suitable online
route (PPP link, LTE modem, WAN interface) is up, then delivers it through a
smarthost (STARTTLS, AUTH) or to the recipients' MX hosts. Configured in
/etc/config/masq; `masq setup PRESET` writes a configuration for common cases."""
LUCI_DESCRIPTION = "Status (routes, queue, counters, send now) and settings pages for masq."
MODEM_DESCRIPTION = """\
Lets masq's modem:DEVICE online detector talk to a 3G/LTE modem's AT port.
Separate from masq because python3-pyserial pulls in python3-logging and
python3-urllib."""
SRC_DESCRIPTION = MASQ_DESCRIPTION + """

This package contains the Python source files for masq."""
# Every name masq answers to that another MTA may also install (msmtp-mta uses 100).
ALTERNATIVES = ", ".join("200:%s:/usr/bin/masq" % path for path in (
    "/usr/sbin/sendmail", "/usr/lib/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases",
    "/usr/sbin/runq"))


def makefile_value(path, name):
    """Return the value of `NAME:=value` in an OpenWrt Makefile."""
    with open(path) as f:
        match = re.search(r"^[ \t]*%s:=(.*)$" % re.escape(name), f.read(), re.M)
    if not match:
        raise SystemExit("build_ipk: %s sets no %s" % (path, name))
    return match.group(1).strip()


def target_python():
    """Return the target's Python minor version: this interpreter's (byte-code is per
    minor version)."""
    return "%d.%d" % sys.version_info[:2]


def masq_version():
    """Return (version, release), checking masq/__init__.py against the Makefile."""
    with open(os.path.join(ROOT, "masq", "__init__.py")) as f:
        code = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)
    makefile = os.path.join(ROOT, "openwrt", "masq", "Makefile")
    version = makefile_value(makefile, "PKG_VERSION")
    if version != code:
        raise SystemExit("build_ipk: PKG_VERSION %s in %s is not masq.__version__ %s"
                         % (version, makefile, code))
    return version, makefile_value(makefile, "PKG_RELEASE")


def masq_userid():
    """Return the USERID of package masq (the account default_postinst creates)."""
    return makefile_value(os.path.join(ROOT, "openwrt", "masq", "Makefile"), "USERID")


def source_epoch():
    """Return the build's timestamp: SOURCE_DATE_EPOCH, else the last commit's time."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        out = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%ct"],
                             capture_output=True, text=True, timeout=30)
        return int(out.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def read(*parts):
    """Return the bytes of a file of the source tree."""
    with open(os.path.join(ROOT, *parts), "rb") as f:
        return f.read()


def tar_gz(files, mtime):
    """Return a .tar.gz of files {"./path": (mode, bytes)}, with every parent directory."""
    dirs = {"./"}
    for name in files:
        parts = name.split("/")
        dirs.update("/".join(parts[:i]) for i in range(2, len(parts)))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(dirs | set(files)):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid = mtime, 0, 0
            info.uname = info.gname = "root"
            if name in files:
                info.mode, data = files[name]
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
    return gzip_bytes(raw.getvalue()), len(raw.getvalue())


def gzip_bytes(data):
    """Return data gzip'ed without file name or time (as `gzip -n`)."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as z:
        z.write(data)
    return out.getvalue()


def control_text(fields, description):
    """Return a control file: the fields in order, then Description as ipkg-build writes."""
    lines = ["%s: %s" % (key, value) for key, value in fields if value]
    desc = "\n".join(" " + line.strip() for line in description.strip().splitlines())
    return "\n".join(lines) + "\nDescription: " + desc + "\n"


def build_ipk(out_dir, name, version, data_files, control_fields, description, scripts,
              mtime):
    """Write NAME_VERSION_all.ipk into out_dir; return (path, installed size)."""
    data, tar_length = tar_gz(data_files, mtime)
    fields = [("Package", name), ("Version", version)] + control_fields + [
        ("Architecture", "all"), ("Installed-Size", str(tar_length))]
    control = {"./control": (0o644, control_text(fields, description).encode())}
    for script, text in scripts.items():
        mode = 0o644 if script == "conffiles" else 0o755
        control["./" + script] = (mode, text.encode())
    control_tgz, _ = tar_gz(control, mtime)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member, payload in (("./debian-binary", b"2.0\n"), ("./data.tar.gz", data),
                                ("./control.tar.gz", control_tgz)):
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(payload), 0o644, mtime
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(payload))
    path = os.path.join(out_dir, "%s_%s_all.ipk" % (name, version))
    with open(path, "wb") as f:
        f.write(gzip_bytes(raw.getvalue()))
    return path, tar_length


def python_sources():
    """Yield (relative path, bytes) of every .py file of the masq package, sorted."""
    top = os.path.join(ROOT, "masq")
    found = []
    for folder, dirs, names in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found.append(os.path.relpath(path, ROOT))
    for rel in sorted(found):
        yield rel.replace(os.sep, "/"), read(rel)


def compiled(source, installed_path):
    """Return the byte-code of one module as `compileall -b` writes it for a package:
    unoptimised (as the feed), named after its installed path, and with no source to
    check against (unchecked hash: the same source gives the same bytes)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, os.path.basename(installed_path))
        with open(src, "wb") as f:
            f.write(source)
        pyc = os.path.join(tmp, "out.pyc")
        py_compile.compile(src, cfile=pyc, dfile=installed_path, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        with open(pyc, "rb") as f:
            return f.read()


def site_dir(pyver):
    return "./usr/lib/python%s/site-packages" % pyver


def masq_files(pyver):
    """Return the data files of the masq package {"./path": (mode, bytes)}."""
    site = site_dir(pyver)
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import launcher                        # tools/launcher.py: the installed entry script
    files = {"./usr/bin/masq": (0o755, (launcher.TEMPLATE % {
        "python": "/usr/bin/python3", "libdir": site[1:]}).encode())}
    for rel, source in python_sources():
        files["%s/%sc" % (site, rel)] = (0o644, compiled(source, "%s/%s" % (site[1:], rel)))
    files["./etc/init.d/masq"] = (0o755, read("openwrt", "masq", "files", "masq.init"))
    files["./etc/config/masq"] = (0o600, read("openwrt", "masq", "files", "masq.config"))
    files["./etc/hotplug.d/iface/95-masq"] = (
        0o644, read("openwrt", "masq", "files", "masq.hotplug"))
    for name in sorted(os.listdir(os.path.join(ROOT, "board"))):
        if name.endswith(".conf"):
            files["./usr/share/masq/board/" + name] = (0o644, read("board", name))
    return files


def luci_files():
    """Return the data files of luci-app-masq: htdocs/ under /www, root/ under /."""
    top = os.path.join(ROOT, "openwrt", "luci-app-masq")
    files = {}
    for sub, prefix in (("htdocs", "./www"), ("root", ".")):
        for folder, dirs, names in os.walk(os.path.join(top, sub)):
            dirs.sort()
            for name in names:
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.join(top, sub)).replace(os.sep, "/")
                mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with open(path, "rb") as f:
                    files["%s/%s" % (prefix, rel)] = (mode, f.read())
    return files


def src_files(pyver):
    """Return the data files of masq-src: the .py files beside masq's byte-code."""
    site = site_dir(pyver)
    return {"%s/%s" % (site, rel): (0o644, source) for rel, source in python_sources()}


def python_depends(pyver):
    """Return the Depends entries that pin python3-light to the byte-code's version."""
    major, minor = (int(part) for part in pyver.split("."))
    return "python3-light (>= %d.%d), python3-light (<< %d.%d)" % (major, minor, major,
                                                                   minor + 1)


def build_all(out_dir):
    """Build the packages into out_dir; return [(path, installed size)]."""
    version, release = masq_version()
    full = "%s-r%s" % (version, release)
    pyver = target_python()
    mtime = source_epoch()
    os.makedirs(out_dir, exist_ok=True)
    maintainer = makefile_value(os.path.join(ROOT, "openwrt", "masq", "Makefile"),
                                "PKG_MAINTAINER")
    common = [("License", "MIT"), ("Section", "mail"), ("Maintainer", maintainer)]
    src = build_ipk(out_dir, "masq-src", full, src_files(pyver), [
        ("Depends", "masq"), ("Source", "feeds/masq/masq"), ("SourceName", "masq-src")]
        + common, SRC_DESCRIPTION, {"postinst": POSTINST, "prerm": PRERM}, mtime)
    modem = build_ipk(out_dir, "masq-modem", full, {}, [
        ("Depends", "masq, python3-pyserial"), ("Source", "feeds/masq/masq"),
        ("SourceName", "masq-modem")] + common, MODEM_DESCRIPTION,
        {"postinst": POSTINST, "prerm": PRERM}, mtime)
    masq = build_ipk(out_dir, "masq", full, masq_files(pyver), [
        ("Depends", "%s, python3-openssl" % python_depends(pyver)),
        ("Alternatives", ALTERNATIVES),
        ("Source", "feeds/masq/masq"), ("SourceName", "masq"), ("License", "MIT"),
        ("LicenseFiles", "LICENSE"), ("Section", "mail"), ("Require-User", masq_userid()),
        ("Maintainer", maintainer)],
        MASQ_DESCRIPTION, {"conffiles": "/etc/config/masq\n", "postinst": POSTINST,
                           "prerm": PRERM, "postinst-pkg": MASQ_POSTINST_PKG}, mtime)
    luci = build_ipk(out_dir, "luci-app-masq", full, luci_files(), [
        ("Depends", "luci-base, masq"), ("Source", "feeds/masq/luci-app-masq"),
        ("SourceName", "luci-app-masq"), ("License", "MIT"), ("Section", "luci"),
        ("Maintainer", maintainer)],
        LUCI_DESCRIPTION, {"postinst": POSTINST, "prerm": PRERM,
                           "postinst-pkg": LUCI_POSTINST_PKG}, mtime)
    return [masq, src, modem, luci]


def main(argv=None):
    """Build the packages; print each one's path, size and Installed-Size."""
    parser = argparse.ArgumentParser(description="Build masq's OpenWrt .ipk files with "
                                     "this interpreter's byte-code (3.11: 24.10).")
    parser.add_argument("--out", default=os.path.join(ROOT, "dist"))
    args = parser.parse_args(argv)
    for path, installed in build_all(args.out):
        print("%s: %d bytes, Installed-Size %d%s" % (
            path, os.path.getsize(path), installed,
            " (Python %s byte-code)" % target_python() if "/masq_" in path else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
