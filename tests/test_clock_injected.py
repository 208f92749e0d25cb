"""Only masq/base/clock.py reads the time: everything else asks a clock, so tests can drive it.

A component asks the loop (`loop.now`, `loop.time()`, `loop.clock`); pure code takes `now`.
A process with no loop (sendmail, mailq, a synchronous probe) makes the real `Clock()`
itself, on a line whose comment says why; those places are listed here by name, so that a
new one is a decision, not an accident. Converting a given timestamp (`time.localtime(t)`,
`time.strftime(form, t)`) reads no clock and is fine.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASQ = os.path.join(ROOT, "masq")

READS = {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns",
         "process_time", "clock_gettime", "clock_gettime_ns"}
CONVERTS = {"localtime": 1, "gmtime": 1, "ctime": 1, "asctime": 1, "strftime": 2}

# Where the real clock is made outside the loop (module: why; the line says it too).
REAL_CLOCK = {
    "masq/base/clock.py": "the clock itself",
    "masq/base/loop.py": "the loop owns the clock",
    "masq/base/logger.py": "a logger of a one-shot command (mailq, sendmail) has no loop",
    "masq/queue/spool.py": "a queue opened by sendmail or mailq has no loop",
    "masq/outbound/mailbox/mbox.py": "mbox delivery called without a loop (tools)",
    "masq/online/modem.py": "the synchronous modem probe runs before any loop turns",
    "masq/cli/mailq.py": "mailq without a daemon has no loop",
    "masq/status/text.py": "masq status without a daemon has no loop",
}


def sources():
    for folder, _, names in os.walk(MASQ):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, ROOT), open(path, encoding="utf-8").read()


def clock_reads(tree):
    """Yield (line, what) for every direct read of a system clock in tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "datetime":
                    yield node.lineno, "import datetime"
        elif isinstance(node, ast.ImportFrom):
            if node.module in ("time", "datetime"):
                yield node.lineno, "from %s import" % node.module
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if not (isinstance(func.value, ast.Name) and func.value.id == "time"):
                continue
            if func.attr in READS:
                yield node.lineno, "time.%s()" % func.attr
            elif func.attr in CONVERTS and len(node.args) < CONVERTS[func.attr]:
                yield node.lineno, "time.%s() of the current time" % func.attr


def real_clocks(tree):
    """Yield the line of every `Clock()` made in tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and not node.args and not node.keywords:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "Clock":
                yield node.lineno


def test_no_module_but_the_clock_reads_the_time():
    found = []
    for path, text in sources():
        if path == "masq/base/clock.py":
            continue
        found += ["%s:%d: %s" % (path, line, what) for line, what in clock_reads(ast.parse(text))]
    assert found == []


def test_the_real_clock_is_made_only_where_there_is_no_loop_and_says_why():
    made = {}
    for path, text in sources():
        lines = text.splitlines()
        for line in real_clocks(ast.parse(text)):
            made.setdefault(path, []).append(lines[line - 1])
    assert sorted(made) == sorted(p for p in REAL_CLOCK if p != "masq/base/clock.py")
    for path, lines in made.items():
        if path != "masq/base/loop.py":
            assert all("#" in line for line in lines), (path, lines)


def test_the_checker_sees_what_it_must():
    code = ("import time\nfrom datetime import datetime\nt = time.time()\n"
            "m = time.monotonic()\ns = time.strftime('%H')\nok = time.strftime('%H', t)\n"
            "lt = time.localtime()\nok2 = time.localtime(5)\n")
    assert [line for line, _ in clock_reads(ast.parse(code))] == [2, 3, 4, 5, 7]


def elapsed_bounds(tree):
    """Yield the line of every assertion on a time difference read from a system clock
    (`assert time.monotonic() - started < 2`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            for sub in ast.walk(node.test):
                if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Sub) and \
                        any(True for _ in clock_reads(sub.left)):
                    yield node.lineno


def test_no_test_asserts_on_the_wall_clock():
    """Timing belongs in benchmarks (tools/bench_*.py): an assertion on how long something
    took flakes on a loaded machine. Tests drive a fake clock or wait for a condition."""
    found = []
    tests = os.path.join(ROOT, "tests")
    for folder, _, names in os.walk(tests):
        for name in sorted(names):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            tree = ast.parse(open(path, encoding="utf-8").read())
            found += ["%s:%d" % (os.path.relpath(path, ROOT), line)
                      for line in elapsed_bounds(tree)]
    assert found == []
    assert list(elapsed_bounds(ast.parse("assert time.monotonic() - t0 < 2\n"
                                         "assert 0.2 < time.time() - t0 < 3\n"
                                         "assert clock.monotonic() - t0 == 5\n"))) == [1, 2]
