"""`sendmail` imports only what submission needs (issue 10, case 9): no `re`, no `enum`, no
`json`, no `socket`, with and without a daemon to poke, with -t and with -f.

Run as the installed launcher runs it (`python3 -I -S`), in a subprocess that prints the
modules it ended up with. How fast that is, is measured by tools/bench_submit.py.
"""

import json
import subprocess
import sys

import pytest

from helpers import ROOT, Daemon, free_port, status, write_config

HEAVY = ("re", "enum", "json", "socket", "functools", "collections", "ipaddress", "email",
         "ssl", "hashlib", "selectors")
# json for the probe's own answer is imported after main() has returned: record first.
RUN = ("import sys\nsys.path.insert(0, %(root)r)\nfrom masq.cli import main\n"
       "sys.argv = ['sendmail'] + %(args)r\nstatus = main()\n"
       "mods = sorted(sys.modules)\nimport json\n"
       "sys.stdout.write(json.dumps({'status': status, 'modules': mods}))\n")


def submit_probe(args, message=b"To: a@example.org\nSubject: x\n\nhi\n"):
    done = subprocess.run([sys.executable, "-I", "-S", "-c", RUN % {"root": ROOT, "args": args}],
                          input=message, capture_output=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    result["stderr"] = done.stderr.decode()
    return result


@pytest.mark.parametrize("args", [["-t", "-oi"], ["-oi", "-f", "s@example.org",
                                                   "b@example.org, c@example.org"]])
def test_submission_without_a_daemon_imports_nothing_heavy(tmp_path, args):
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\toption do_queue '1'\n")
    result = submit_probe(["-C", conf] + args)
    assert result["status"] == 0
    assert [m for m in HEAVY if m in result["modules"]] == []


def test_submission_that_pokes_a_daemon_imports_nothing_heavy(tmp_path):
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n\toption do_queue '1'\n"
                        % free_port())
    daemon = Daemon(conf).start()
    try:
        result = submit_probe(["-C", conf, "-t", "-oi", "-v"])
        accepted = status(conf)["counters"]["accepted"]
    finally:
        daemon.stop()
    assert result["status"] == 0 and "no daemon" not in result["stderr"]
    assert accepted == 1                      # the daemon was poked and took the message
    assert [m for m in HEAVY if m in result["modules"]] == []
