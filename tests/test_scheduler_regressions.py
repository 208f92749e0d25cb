"""Regressions of the scheduler (issue 11, cases 1-4), with real peers and real processes.

Results of local deliveries are kept (no KeyError from a late-bound callback, no second
delivery); a route that fails temporarily hands its recipients to the next route unless it
has `last_route`; `-qo ROUTE` keeps each recipient on the route its criteria pick; a double
bounce without a daemon does not keep `sendmail` (and runner.lock) busy.
"""

import mailbox
import os

from helpers import absent_users, free_port, masq, write_config
from sinks import Sink
from test_delivery import queue_states, route, send, setup

absent_users("mqdora", "mqerin")


def local_conf(tmp_path, routes=""):
    extra = ("\tlist local_users 'mqdora'\n\tlist local_users 'mqerin'\n"
             "\toption mailbox 'maildir:%s/mail/%%u'\n" % tmp_path)
    return write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=extra,
                        routes=routes)


def maildir_count(path):
    if not os.path.isdir(os.path.join(path, "new")):
        return 0
    return len(mailbox.Maildir(str(path), factory=None))


def test_two_local_messages_are_delivered_once_by_runq(tmp_path):
    conf = local_conf(tmp_path)
    send(conf, "mqdora@test.example")
    send(conf, "mqerin@test.example")
    done = masq("-C", conf, argv0="runq")
    assert done.returncode == 0, done.stderr
    masq("-C", conf, argv0="runq")
    assert maildir_count(tmp_path / "mail" / "mqdora") == 1
    assert maildir_count(tmp_path / "mail" / "mqerin") == 1
    assert queue_states(conf) == {}


def test_local_copy_of_a_mixed_message_is_recorded(tmp_path):
    port = free_port()
    conf = local_conf(tmp_path, route("isp", smarthost="127.0.0.1:%d" % port, tls="none"))
    with Sink(port) as sink:
        send(conf, "mqdora@test.example", "far@example.org")
        done = masq("flush", "-C", conf)
        assert done.returncode == 0, done.stderr
        masq("flush", "-C", conf)
        assert len(sink.wait(1)) == 1
    assert maildir_count(tmp_path / "mail" / "mqdora") == 1
    assert queue_states(conf) == {}


def two_routes(port_a, port_b, last_route=False):
    a = dict(smarthost="127.0.0.1:%d" % port_a, tls="none")
    if last_route:
        a["last_route"] = "1"
    return route("a", **a) + route("b", smarthost="127.0.0.1:%d" % port_b, tls="none")


def test_temporary_failure_falls_through_to_the_next_route(tmp_path):
    down, port_b = free_port(), free_port()        # nothing listens on route a's port
    conf = setup(tmp_path, two_routes(down, port_b))
    with Sink(port_b) as sink:
        send(conf, "far@example.org")
        done = masq("flush", "-C", conf)
        assert b"1 delivered" in done.stdout, done.stdout + done.stderr
        assert [m[1] for m in sink.wait(1)] == [["far@example.org"]]
    assert queue_states(conf) == {}


def test_recipient_refused_450_by_one_route_leaves_by_the_next(tmp_path):
    port_a, port_b = free_port(), free_port()
    conf = setup(tmp_path, two_routes(port_a, port_b))
    with Sink(port_a) as sink_a, Sink(port_b) as sink_b:
        sink_a.refuse_all = "450 4.3.2 not now"
        send(conf, "x@example.org", "y@example.org")
        done = masq("flush", "-C", conf)
        assert b"2 delivered" in done.stdout, done.stdout + done.stderr
        got = sink_b.wait(1)
    assert sorted(r for m in got for r in m[1]) == ["x@example.org", "y@example.org"]
    assert queue_states(conf) == {}


def test_last_route_keeps_its_recipients(tmp_path):
    down, port_b = free_port(), free_port()
    conf = setup(tmp_path, two_routes(down, port_b, last_route=True))
    with Sink(port_b) as sink:
        send(conf, "far@example.org")
        done = masq("flush", "-C", conf)
        assert b"1 deferred" in done.stdout, done.stdout + done.stderr
        assert sink.messages == []
    state = queue_states(conf)["far@example.org"]
    assert state["state"] == "deferred" and state["route"] == "a"


def test_qo_keeps_each_recipient_on_the_route_its_criteria_pick(tmp_path):
    port_lan, port_isp = free_port(), free_port()
    routes = (route("lan", smarthost="127.0.0.1:%d" % port_lan, tls="none",
                    allowed_recipient="*@lan.example")
              + route("isp", online="file:%s" % (tmp_path / "absent"),
                      smarthost="127.0.0.1:%d" % port_isp, tls="none"))
    conf = setup(tmp_path, routes)
    with Sink(port_lan) as lan, Sink(port_isp) as isp:
        send(conf, "pc@lan.example", "far@example.org")
        done = masq("-C", conf, "-qo", "isp")
        assert done.returncode == 0, done.stderr
        assert [m[1] for m in lan.wait(1)] == [["pc@lan.example"]]
        assert [m[1] for m in isp.wait(1)] == [["far@example.org"]]
    assert queue_states(conf) == {}


def test_double_bounce_without_daemon_returns(tmp_path):
    conf = local_conf(tmp_path)
    done = masq("-C", conf, "-f", "nobody-here@test.example", "nosuchuser", timeout=30,
                input=b"Subject: lost\n\nnobody wants this\n")
    assert done.returncode == 0, done.stderr
    states = queue_states(conf)
    assert all(r["state"] != "queued" or r["address"].startswith("postmaster")
               for r in states.values()), states
