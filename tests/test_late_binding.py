"""No closure made in a loop reads a name the loop rebinds (issue 11 case 1).

`Scheduler._pump` once handed each job a lambda that looked `done_each` up when it was
called; by then the loop had bound the name to the last batch's function: KeyError, lost
results, mail delivered again. Names a closure needs from a loop are bound when it is made
(default arguments, a bound method, an object). This reads every module in masq/ (ast).
"""

import ast
import os

from helpers import ROOT


def _stored(nodes):
    return {n.id for node in nodes for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def late_bound(tree):
    """Yield (line, names) for closures in loops that read names the loop rebinds."""
    for loop in ast.walk(tree):
        if not isinstance(loop, (ast.For, ast.While)):
            continue
        closures = [n for n in ast.walk(loop) if isinstance(n, (ast.Lambda, ast.FunctionDef))]
        inside = {id(n) for c in closures for n in ast.walk(c) if n is not c}
        rebound = {n.id for n in ast.walk(loop) if id(n) not in inside
                   and isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        rebound |= {c.name for c in closures if isinstance(c, ast.FunctionDef)}
        for closure in closures:
            body = closure.body if isinstance(closure, ast.FunctionDef) else [closure.body]
            own = {a.arg for a in closure.args.args + closure.args.kwonlyargs} | _stored(body)
            read = {n.id for b in body for n in ast.walk(b)
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            late = sorted((read & rebound) - own)
            if late:
                yield closure.lineno, late


def test_no_closure_in_a_loop_reads_a_name_the_loop_rebinds():
    found = []
    for folder, _, files in os.walk(os.path.join(ROOT, "masq")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                tree = ast.parse(open(path).read())
                found += ["%s:%d %s" % (os.path.relpath(path, ROOT), line, names)
                          for line, names in late_bound(tree)]
    assert found == []


def test_the_old_pump_is_caught():
    old = ("while True:\n"
           "    batch = take()\n"
           "    def done_each(job, outcomes, batch=batch):\n"
           "        record(batch, job, outcomes)\n"
           "    agent.deliver(job, lambda outcomes, job=job: done_each(job, outcomes))\n")
    assert list(late_bound(ast.parse(old))) == [(5, ["done_each"])]
