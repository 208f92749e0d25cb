#!/usr/bin/env python3
"""`make dist`: the release tarball dist/masq-VERSION.tar.gz that openwrt/masq/Makefile's
PKG_SOURCE names, built reproducibly.

Holds every file git tracks except the OpenWrt feed itself (openwrt/: its Makefile names
the tarball's hash, so the tarball cannot contain it) and CI settings, under the folder
masq-VERSION/. Members are sorted, owned by 0:0 with modes 0644 or 0755 (the executable
bit as git has it), dated SOURCE_DATE_EPOCH (else the last commit's time), in a GNU tar
compressed without name or time (as `gzip -n`): the same tree gives the same bytes on any
machine. Prints the path and its SHA-256, the PKG_HASH of a release; --update-hash writes
that hash into openwrt/masq/Makefile.

Usage: tools/dist.py [--out DIR] [--update-hash]
"""

import argparse
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import build_ipk  # noqa: E402  (version, epoch and gzip rules shared with the packages)

LEFT_OUT = ("openwrt/", ".ci/")
MAKEFILE = os.path.join(ROOT, "openwrt", "masq", "Makefile")


def tracked():
    """Return the tracked files to ship, sorted, with their git modes."""
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "-s"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    files = []
    for line in out.splitlines():
        meta, path = line.split("\t", 1)
        mode = meta.split()[0]
        if path.startswith(LEFT_OUT) or mode == "160000" or not os.path.isfile(
                os.path.join(ROOT, path)):
            continue
        files.append((path, 0o755 if mode == "100755" else 0o644))
    return sorted(files)


def build(out_dir):
    """Write the tarball; return (path, sha256 hex)."""
    version, _ = build_ipk.masq_version()
    top = "masq-%s" % version
    mtime = build_ipk.source_epoch()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = set()
        for path, mode in tracked():
            parts = path.split("/")
            for i in range(0, len(parts)):
                folder = "/".join([top] + parts[:i])
                if folder not in dirs:
                    dirs.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
                    info.uname = info.gname = "root"
                    tar.addfile(info)
            with open(os.path.join(ROOT, path), "rb") as f:
                data = f.read()
            info = tarfile.TarInfo("%s/%s" % (top, path))
            info.size, info.mode, info.mtime = len(data), mode, mtime
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    blob = build_ipk.gzip_bytes(raw.getvalue())
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "%s.tar.gz" % top)
    with open(path, "wb") as f:
        f.write(blob)
    return path, hashlib.sha256(blob).hexdigest()


def update_hash(digest):
    """Write PKG_HASH:=digest into the feed Makefile."""
    with open(MAKEFILE) as f:
        text = f.read()
    text, count = re.subn(r"^PKG_HASH:=.*$", "PKG_HASH:=%s" % digest, text, flags=re.M)
    if count != 1:
        raise SystemExit("dist: %s has no single PKG_HASH line" % MAKEFILE)
    with open(MAKEFILE, "w") as f:
        f.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build the release tarball.")
    parser.add_argument("--out", default=os.path.join(ROOT, "dist"))
    parser.add_argument("--update-hash", action="store_true",
                        help="write its SHA-256 into openwrt/masq/Makefile (PKG_HASH)")
    args = parser.parse_args(argv)
    path, digest = build(args.out)
    print("%s: %d bytes, sha256 %s" % (path, os.path.getsize(path), digest))
    if args.update_hash:
        update_hash(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
