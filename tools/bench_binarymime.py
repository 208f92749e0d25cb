#!/usr/bin/env python3
"""Measure the BINARYMIME conversion (masq.mail.downgrade): MB/s of CPU to scan and convert.

Prints figures; asserts nothing. Run: `python3 tools/bench_binarymime.py [MiB]`.

A message with one binary part of random octets (default 20 MiB: bare CR and LF, NUL, long
lines) is scanned and converted to base64 in the queue's 64 KiB chunks, as the SMTP client
does for a next hop without BINARYMIME and the local agent does for a mailbox.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from masq.mail import downgrade  # noqa: E402  (after the path)

CHUNK = 65536


def main():
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    text = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n"
            b"--=_b\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\n" + os.urandom(mib << 20)
            + b"\r\n--=_b--\r\n")

    def chunks():
        for start in range(0, len(text), CHUNK):
            yield text[start:start + CHUNK]
    started = time.process_time()
    plan = downgrade.Plan(seven_bit=False, binary=True)
    for _ in downgrade.scan_steps(chunks(), plan):
        pass
    scanned = time.process_time()
    out = sum(len(piece) for piece in downgrade.convert(chunks(), plan))
    converted = time.process_time()
    print("%d MiB binary part: scan %.0f MB/s, convert %.0f MB/s (CPU time), %d octets out "
          "(%.2f x)" % (
              mib, len(text) / (scanned - started) / 1e6,
              len(text) / (converted - scanned) / 1e6, out, out / len(text)))


if __name__ == "__main__":
    main()
