"""Who may change the queue: one authority for the control socket and the status page.

Each test acts as a throw-away unprivileged account (tests/local_user.py) against a daemon
run by root: an unprivileged user may ask for a flush but not force a route root set down
(issue 12 case 6), and may not delete or force anything through the status page on
loopback without a password (case 7), while root and the page's password may.
"""

import os
import shutil

import pytest

from helpers import Daemon, free_port, masq, status, write_config
from local_user import LocalUser, needs_root, open_dir
from sinks import Sink


def route(port):
    return ("config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n\n"
            % port)


@pytest.fixture
def world():
    """A root daemon on a folder every user can enter, a route to a sink, a local user."""
    needs_root()
    base = open_dir()
    smtp, web = free_port(), free_port()
    conf = write_config(os.path.join(base, "masq.conf"), os.path.join(base, "spool"),
                        extra="\toption status_listen '127.0.0.1:%d'\n" % web,
                        routes=route(smtp))
    os.chmod(conf, 0o644)
    try:
        with Sink(smtp) as sink, LocalUser() as user:
            daemon = Daemon(conf, wait_port=web).start()
            os.chmod(os.path.join(base, "spool"), 0o755)     # the control socket is 0666
            try:
                yield type("World", (), {"conf": conf, "web": web, "sink": sink,
                                         "user": user, "daemon": daemon})
            finally:
                log = daemon.stop()
                assert "Traceback" not in log and "internal error" not in log, log
    finally:
        shutil.rmtree(base, ignore_errors=True)


def queue_one(conf):
    done = masq("-C", conf, "-odq", "someone@remote.example",
                input=b"Subject: held\n\nheld back\n")
    assert done.returncode == 0, done.stderr
    return status(conf)["queue"][0]["id"]


def test_a_local_user_cannot_force_a_route_root_set_down(world):
    assert masq("-C", world.conf, "online", "isp", "down").returncode == 0
    queue_one(world.conf)
    done = world.user.masq("-C", world.conf, "flush", "isp")
    assert done.returncode == 77, (done.returncode, done.stdout, done.stderr)
    assert "permission denied" in done.stderr and "Traceback" not in done.stderr
    done = world.user.masq("-C", world.conf, "-qo", "isp")      # sendmail's spelling
    assert done.returncode == 77, (done.returncode, done.stdout, done.stderr)
    assert len(status(world.conf)["queue"]) == 1 and world.sink.messages == []
    done = world.user.masq("-C", world.conf, "flush")           # an ordinary flush is fine
    assert done.returncode == 0, done.stderr
    assert len(status(world.conf)["queue"]) == 1 and world.sink.messages == []
    done = masq("-C", world.conf, "flush", "isp")               # root may force it
    assert done.returncode == 0, done.stderr
    assert len(world.sink.wait(1)) == 1


PAGE_CLIENT = r"""
import http.client, json, re, sys
port, actions = int(sys.argv[1]), json.loads(sys.argv[2])

def request(method, path, body=None, headers={}):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=dict(headers, Host="127.0.0.1:%d" % port))
    response = conn.getresponse()
    return response, response.read()

response, page = request("GET", "/")
cookie = re.match(r"masq=([0-9a-f]+);", response.getheader("Set-Cookie")).group(1)
token = re.search(rb'<meta name="csrf" content="([0-9a-f]+)">', page).group(1).decode()
answers = [response.status]
for path, form in actions:
    form["csrf"] = token
    body = "&".join("%s=%s" % item for item in form.items())
    response, data = request("POST", path, body, {
        "Cookie": "masq=" + cookie, "Content-Type": "application/x-www-form-urlencoded"})
    answers.append([response.status, json.loads(data)])
print(json.dumps(answers))
"""


def page_actions(user, port, *actions):
    """Load the page as user, then POST each (path, form); return [GET status, [code, reply]...]."""
    import json
    done = user.python(PAGE_CLIENT, str(port), json.dumps(actions))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_local_user_cannot_delete_or_force_through_the_page(world):
    assert masq("-C", world.conf, "online", "isp", "down").returncode == 0
    msgid = queue_one(world.conf)
    answers = page_actions(world.user, world.web, ["/delete", {"id": msgid}],
                           ["/flush", {"route": "isp"}], ["/flush", {}],
                           ["/retry", {"id": msgid}])
    assert answers[0] == 200                                    # viewing stays open
    (deleted, reply), (forced, _), (flushed, _), (retried, _) = answers[1:]
    assert deleted == 403 and "permission denied" in reply["error"]
    assert forced == 403                                        # as `masq flush isp`
    assert flushed == 200 and retried == 200                   # as `masq flush`
    assert [m["id"] for m in status(world.conf)["queue"]] == [msgid]
    assert world.sink.messages == []


def test_root_on_the_same_page_may_delete(world):
    assert masq("-C", world.conf, "online", "isp", "down").returncode == 0
    msgid = queue_one(world.conf)
    root = type("Root", (), {"python": staticmethod(_as_root)})
    answers = page_actions(root, world.web, ["/delete", {"id": msgid}])
    assert answers[1][0] == 200 and answers[1][1]["removed"] == [msgid]
    assert status(world.conf)["queue"] == []


def _as_root(code, *args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", code] + list(args), capture_output=True,
                          text=True, timeout=120)
