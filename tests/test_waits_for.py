"""What each queued recipient waits for (issue 18 point 10): its route, and why it is not
leaving: offline, retry at HH:MM, no route takes it. Pure rules, then the daemon's
status.json and mailq, then the listing without a daemon."""

import json
import os
import time

from helpers import Daemon, free_port, masq, wait_for, write_config
from masq.config import schema
from masq.outbound import waits_for
from masq.queue.envelope import DELIVERED, Recipient

CONFIG = """config masq 'main'
\tlist local_domain 'here.example'
config route 'work'
\toption online 'file:/nonexistent'
\tlist allowed_recipient '*@work.example'
config route 'isp'
\toption online 'always'
\tlist denied_recipient '*@nowhere.example'
"""


def explain(addr, online, next_attempt=None, now=1000.0, state="queued"):
    cfg = schema.loads(CONFIG)
    waits = waits_for.for_config(cfg, online, now)
    return waits("me@here.example", Recipient(addr, state=state, next_attempt=next_attempt))


def test_the_rules():
    both = lambda name: True                                    # noqa: E731
    only_isp = lambda name: name == "isp"                        # noqa: E731
    none = lambda name: False                                    # noqa: E731
    assert explain("a@work.example", both) == {"route": "work", "reason": "due",
                                                "until": None}
    assert explain("a@work.example", only_isp)["route"] == "isp"     # falls to the next
    assert explain("a@work.example", none) == {"route": "work", "reason": "offline",
                                                "until": None}
    assert explain("a@far.example", none) == {"route": "isp", "reason": "offline",
                                               "until": None}
    assert explain("a@nowhere.example", both) == {"route": None, "reason": "no_route",
                                                   "until": None}
    assert explain("a@far.example", both, next_attempt=1600.0) == {
        "route": "isp", "reason": "retry", "until": 1600.0}
    assert explain("a@far.example", both, next_attempt=900.0)["reason"] == "due"
    assert explain("bob@here.example", none)["reason"] == "local"
    assert explain("bob@here.example", none, next_attempt=2000.0) == {
        "route": None, "reason": "retry", "until": 2000.0}
    assert explain("a@far.example", None)["reason"] == "no_daemon"
    assert explain("a@far.example", both, state=DELIVERED) is None


def test_the_words():
    clock = lambda t: "HH:MM(%d)" % t                            # noqa: E731
    say = lambda route, reason, until=None: waits_for.describe(  # noqa: E731
        {"route": route, "reason": reason, "until": until}, clock)
    assert say("isp", "retry", 1600) == "retry at HH:MM(1600) via isp"
    assert say("isp", "offline") == "waits for route isp (offline)"
    assert say(None, "no_route") == "no route takes it: stays queued"
    assert say("isp", "due") == "due now via isp"
    assert waits_for.describe(None, clock) == ""


def test_daemon_status_and_mailq_say_what_mail_waits_for(tmp_path):
    port = free_port()
    flag = tmp_path / "online"
    routes = ("config route 'isp'\n\toption online 'file:%s'\n\toption smarthost "
              "'127.0.0.1:%d'\n\toption tls 'none'\n\tlist denied_recipient "
              "'*@nowhere.example'\n" % (flag, port))
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), routes=routes)
    daemon = Daemon(conf).start()
    try:
        done = masq("-C", conf, "-odq", "friend@far.example", "x@nowhere.example",
                    input=b"Subject: w\n\nwaiting\n")
        assert done.returncode == 0, done.stderr

        def waiting():
            doc = json.loads(masq("status", "--json", "-C", conf).stdout)
            return {r["address"]: r["waiting"] for m in doc["queue"] for r in m["recipients"]}

        assert wait_for(lambda: waiting().get("friend@far.example"))
        now = waiting()
        assert now["friend@far.example"] == {"route": "isp", "reason": "offline",
                                             "until": None}
        assert now["x@nowhere.example"]["reason"] == "no_route"
        listing = masq("-bp", "-C", conf).stdout.decode()
        assert "<friend@far.example>  (waits for route isp (offline))" in listing
        assert "<x@nowhere.example>  (no route takes it: stays queued)" in listing

        masq("online", "isp", "up", "-C", conf)     # online; nothing listens: deferred
        assert wait_for(lambda: (waiting()["friend@far.example"] or {}).get("reason")
                        == "retry", timeout=30), (waiting(), daemon.log_so_far())
        until = waiting()["friend@far.example"]["until"]
        listing = masq("-bp", "-C", conf).stdout.decode()
        assert "retry at %s via isp" % time.strftime("%H:%M", time.localtime(until)) in listing
    finally:
        log = daemon.stop()
    assert "Traceback" not in log, log


def test_without_a_daemon_the_listing_says_the_next_queue_run(tmp_path):
    routes = "config route 'isp'\n\toption online 'always'\n"
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), routes=routes)
    masq("-C", conf, "-odq", "friend@far.example", input=b"Subject: w\n\nwaiting\n")
    listing = masq("-bp", "-C", conf).stdout.decode()
    assert "no daemon runs: leaves via isp with the next queue run" in listing
    assert os.path.exists(str(tmp_path / "spool"))
