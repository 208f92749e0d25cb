#!/usr/bin/env python3
"""Measure the text readers on hostile shapes: the time they take, that tests no longer assert.

Prints figures; asserts nothing. Run: `python3 tools/bench_parsing.py` (or `make bench`).

Each case is one a quadratic reader would turn into minutes (the tests check what comes
out; how fast is measured here): 200,000 short lines given to the input normaliser in one
piece; 100,000 short header fields, whole and line by line; a 50,000-byte header line fed
byte by byte; and an alias bomb of three levels of 1,000 that expansion must refuse at its
size limit. Best of three runs each.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from masq.aliases.expand import expand                         # noqa: E402
from masq.aliases.file import parse                            # noqa: E402
from masq.mail.message import HeaderReader, HeaderTooLong, InputNormalizer   # noqa: E402


def normalise_short_lines():
    data = b"line\n" * 200000 + b"..\n" * 1000
    norm = InputNormalizer()
    norm.feed(data)
    norm.finish()


def read_headers(pieces, limit):
    reader = HeaderReader(limit=limit)
    for piece in pieces:
        reader.feed(piece)
    reader.finish()


FIELDS = b"".join(b"X-H%d: v\r\n" % i for i in range(100000)) + b"\r\nbody\r\n"


def many_fields_whole():
    try:
        read_headers([FIELDS], 102400)              # refused at the cap
    except HeaderTooLong:
        pass
    read_headers([FIELDS], len(FIELDS))


def many_fields_line_by_line():
    lines = FIELDS.split(b"\r\n")
    read_headers([line + b"\r\n" for line in lines[:-1]], len(FIELDS))


LONG = b"Subject: " + b"x" * 50000 + b"\r\n\r\n"


def long_field_byte_by_byte():
    read_headers([bytes([b]) for b in LONG], 102400)


BOMB = None


def alias_bomb():
    global BOMB
    if BOMB is None:
        lines = ["bomb: " + ", ".join("b%d" % i for i in range(1000))]
        lines += ["b%d: " % i + ", ".join("c%d" % j for j in range(1000)) for i in range(1000)]
        lines += ["c%d: " % i + ", ".join("d%d" % j for j in range(1000)) for i in range(1000)]
        BOMB, errors = parse("\n".join(lines) + "\n", "/etc/aliases")
        assert not errors
    result = expand(BOMB, "bomb")
    assert result.failed


CASES = [
    ("normalise 200,000 short lines in one piece", normalise_short_lines),
    ("read 100,000 header fields (capped, then whole)", many_fields_whole),
    ("read 100,000 header fields line by line", many_fields_line_by_line),
    ("read a 50,000-byte field byte by byte", long_field_byte_by_byte),
    ("expand an alias bomb of 3 levels of 1,000", alias_bomb),
]


def main():
    for name, case in CASES:
        best = None
        for _ in range(3):
            started = time.perf_counter()
            case()
            took = time.perf_counter() - started
            best = took if best is None else min(best, took)
        print("%-52s %8.3f s" % (name, best))


if __name__ == "__main__":
    main()
