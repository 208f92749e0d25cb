"""Per-route max_message_size: a message over a route's limit never leaves through it; a
later route that fits takes it; when no route that would take the recipient fits (online
or not), the recipient bounces at once with 5.3.4 and the limit stated.

The scheduler core on a fake clock with agents that answer as told (test_scheduler's
harness), and one end-to-end run through a daemon to two real SMTP servers."""

import os

from masq import route as routes
from masq.base.host import MessagesQueued
from masq.outbound.outcome import Outcome
from masq.queue.envelope import Envelope

from helpers import OFFLINE, Daemon, free_port, masq, write_config
from sinks import SmtpSink
from test_scheduler import Host


def queue(host, size, *rcpts):
    """Queue a message of about size octets to rcpts and tell the scheduler."""
    writer = host.queue.writer()
    writer.write(b"Subject: big\r\nFrom: writer@example.org\r\n\r\n")
    writer.write((b"x" * 78 + b"\r\n") * (size // 80 + 1))
    writer.commit(Envelope("writer@example.org", list(rcpts), received=host.clock.time()))
    host.queue.sync()
    host.scheduler.queued(MessagesQueued((writer.id,)))
    host.turn()
    return writer.id


SMALL_THEN_BIG = ("config route 'small'\n\toption max_message_size '4k'\n"
                  "config route 'big'\n\toption max_message_size '1M'\n")


def test_a_message_over_a_routes_limit_leaves_by_a_later_route_that_fits(tmp_path):
    host = Host(tmp_path, routes=SMALL_THEN_BIG)
    small = queue(host, 1000, "a@example.org")
    large = queue(host, 10000, "b@example.org")
    assert host.route("small").delivered() == ["a@example.org"]
    assert host.route("big").delivered() == ["b@example.org"]
    assert host.queue.get_live(small) is None and host.queue.get_live(large) is None


def test_a_message_too_large_for_every_route_bounces_with_the_limit(tmp_path):
    host = Host(tmp_path, routes="config route 'small'\n\toption max_message_size '4k'\n"
                "config route 'other'\n\tlist allowed_recipient '*@elsewhere.example'\n")
    msgid = queue(host, 300000, "b@example.org")     # its bounce returns the headers only
    assert host.route("other").jobs == []
    assert host.queue.get_live(msgid) is None           # bounced at once, not waiting
    (bounce,) = host.route("small").jobs                # the bounce fits the small route
    assert bounce.sender == "" and bounce.recipients == ["writer@example.org"]
    text = b"".join(bounce.open_body())
    assert b"5.3.4" in text and b"limit of 4096 of route small" in text


def test_an_offline_route_that_fits_keeps_the_message_waiting(tmp_path):
    host = Host(tmp_path, routes="config route 'small'\n\toption max_message_size '4k'\n"
                "config route 'big'\n\toption online '" + OFFLINE + "'\n")
    msgid = queue(host, 10000, "b@example.org")
    assert host.route("small").jobs == [] and host.dsns("bounce") == []
    assert host.queue.get_live(msgid) is not None
    assert host.scheduler.waiting_routes() == {"big"}   # not 'small': it cannot take it
    host.set_online("big", True)
    host.turn()
    assert host.route("big").delivered() == ["b@example.org"]


def test_a_temporary_failure_does_not_fall_through_to_a_route_too_small(tmp_path):
    host = Host(tmp_path, routes="config route 'big'\n"
                "config route 'small'\n\toption max_message_size '4k'\n")
    host.route("big").answer = lambda addr: Outcome.temp("4.4.1", "refused")
    msgid = queue(host, 10000, "b@example.org")
    assert host.route("small").jobs == []
    assert host.state(msgid).state == "deferred" and host.state(msgid).route == "big"


def test_fits_and_too_small():
    host_routes = [type("R", (), dict(name=n, max_message_size=m, allowed_sender=[],
                                      denied_sender=[], allowed_recipient=r,
                                      denied_recipient=[], allowed_from=[], denied_from=[]))
                   for n, m, r in (("a", 100, []), ("b", 0, ["*@b.example"]),
                                   ("c", 500, ["*@c.example"]))]
    assert routes.fits(host_routes[0], 100) and not routes.fits(host_routes[0], 101)
    assert routes.fits(host_routes[1], 10 ** 12)            # 0: no limit
    assert routes.too_small(host_routes, "s@x", "u@b.example", 10 ** 9, ()) is None
    assert routes.too_small(host_routes, "s@x", "u@c.example", 1000, ()).name == "c"
    assert routes.too_small(host_routes, "s@x", "u@d.example", 1000, ()).name == "a"
    assert routes.too_small(host_routes, "s@x", "u@d.example", 50, ()) is None


def test_daemon_sends_a_large_message_by_the_route_that_fits(tmp_path):
    small_port, big_port = free_port(), free_port()
    spool = str(tmp_path / "spool")
    conf = write_config(str(tmp_path / "masq.conf"), spool, routes=(
        "config route 'small'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
        "\toption max_message_size '2k'\n"
        "config route 'big'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
        % (small_port, big_port)))
    with SmtpSink(small_port, str(tmp_path / "small")) as small, \
            SmtpSink(big_port, str(tmp_path / "big")) as big:
        daemon = Daemon(conf).start()
        try:
            text = b"Subject: large\n\n" + (b"y" * 70 + b"\n") * 100
            done = masq("-C", conf, "-f", "me@test.example", "far@example.org", input=text)
            assert done.returncode == 0, done.stderr
            (got,) = big.messages(1)
            assert got.count(b"y" * 70) == 100
            assert os.listdir(small.folder) == []
        finally:
            daemon.stop()
