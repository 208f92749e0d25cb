"""Test helpers: write a configuration, run masq as a command, read the queue."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_config(path, spool, extra="", routes=""):
    """Write a masq configuration for a test spool; return its path."""
    text = (
        "config masq 'main'\n"
        "\toption hostname 'test.example'\n"
        "\toption spool_dir '%s'\n"
        "\toption pid_file '%s/masq.pid'\n"
        "\toption status_file '%s/status.json'\n"
        "\toption log 'stderr'\n"
        "\tlist local_domain 'test.example'\n"
        "%s\n%s" % (spool, os.path.dirname(spool), os.path.dirname(spool), extra, routes))
    with open(path, "w") as out:
        out.write(text)
    return path


def masq(*args, input=None, env=None, argv0=None, timeout=60, **kw):
    """Run `python3 -m masq ARGS`; return the CompletedProcess (text mode)."""
    environ = dict(os.environ, PYTHONPATH=ROOT)
    environ.pop("MASQ_CONFIG", None)
    if env:
        environ.update(env)
    cmd = [sys.executable, "-m", "masq"] + list(args)
    if argv0:
        cmd = [sys.executable, "-c", "import sys; from masq.cli import main; "
               "sys.argv[0] = %r; sys.exit(main())" % argv0] + list(args)
    return subprocess.run(cmd, input=input, capture_output=True, env=environ,
                          timeout=timeout, cwd=ROOT, **kw)


def status(conf):
    """Return the status document from `masq status --json`."""
    done = masq("status", "--json", "-C", conf)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
