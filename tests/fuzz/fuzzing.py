"""Shared pieces of the fuzzers: the settings profiles, byte strategies and splitting.

Two hypothesis profiles, chosen with the environment variable HYPOTHESIS_PROFILE:
`fuzz-quick` (the default, part of `make test`: a few dozen examples per fuzzer) and
`fuzz` (`make fuzz`: thousands per fuzzer, well over ten minutes in all). Neither has a
deadline: a loaded machine must not turn a slow example into a failure. Each fuzzer takes
`fuzz_settings(weight)`: a heavy fuzzer (whole sessions, sockets) asks for fewer examples.

Failing examples found by a long run are kept as `@example(...)` on the fuzzer, or as a
named test in tests/fuzz/regressions/.
"""

import os

from hypothesis import HealthCheck, settings, strategies as st

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fuzz-quick")
_EXAMPLES = {"fuzz-quick": 40, "fuzz": int(os.environ.get("FUZZ_EXAMPLES", "10000"))}
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture]


def fuzz_settings(weight=1.0):
    """Return the settings for one fuzzer: the profile's example count divided by weight."""
    examples = _EXAMPLES.get(PROFILE, _EXAMPLES["fuzz-quick"])
    return settings(max_examples=max(5, int(examples / weight)), deadline=None,
                    suppress_health_check=_SLOW_OK, print_blob=True)


def splits(data, cuts):
    """Return data cut at the given offsets (sorted, clipped, duplicates kept as empty)."""
    points = sorted(min(max(0, c), len(data)) for c in cuts)
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return [p for p in pieces if p]


def mixed(grammar, junk_size=40):
    """Return a strategy for byte strings made of grammar pieces mixed with random bytes."""
    piece = st.one_of(grammar, grammar, grammar, st.binary(max_size=junk_size))
    return st.lists(piece, max_size=25).map(b"".join)


def mutated(valid):
    """Return a strategy for a valid byte string with a few flips, cuts and insertions."""
    return st.tuples(valid, st.lists(st.tuples(st.sampled_from("fdi"), st.integers(0, 10**6),
                                               st.binary(min_size=1, max_size=8)),
                                     max_size=4)).map(_apply_mutations)


def _apply_mutations(args):
    data, edits = args
    data = bytearray(data)
    for kind, where, extra in edits:
        if not data:
            data += extra
            continue
        at = where % len(data)
        if kind == "f":
            data[at] ^= extra[0] or 1
        elif kind == "d":
            del data[at:at + len(extra)]
        else:
            data[at:at] = extra
    return bytes(data)
