"""`smtp:HOST:PORT` content filters, the amavis way (docs/FILTERS.md): masq sends the message
to the filter (an aiosmtpd relay in the test that adds a header and relays it back, as
amavisd-new does, answering 250 only once the copy was accepted back) and the copy returns
to a `?filtered` listener, which strips X-Masq-Filter-Id and commits the copy replacing
the original in one record. No loss, no double: a second copy is dropped, a filter that
refuses bounces, a daemon SIGKILLed after the copy came back delivers it once."""

import smtplib
import threading

from aiosmtpd.controller import Controller

from helpers import Daemon, free_port, masq, status, wait_for, write_config
from sinks import Sink
from test_filter_pipe import send


class Relay:
    """The filter: adds `X-Scanned: yes` and relays the message back to masq."""

    def __init__(self, back_port):
        self.back_port = back_port
        self.mode = "relay"
        self.seen = []
        self.release = threading.Event()
        self.release.set()

    async def handle_DATA(self, server, session, envelope):
        text = envelope.original_content
        self.seen.append(text)
        if self.mode == "refuse":
            return "554 5.7.0 virus found: Eicar-Test-Signature"
        if self.mode == "swallow":
            return "250 2.0.0 queued (and never sent back)"
        copy = b"X-Scanned: yes\r\n" + text
        times = 2 if self.mode == "twice" else 1
        for _ in range(times):
            with smtplib.SMTP("127.0.0.1", self.back_port) as smtp:
                smtp.sendmail(envelope.mail_from, envelope.rcpt_tos, copy)
        self.release.wait(120)
        return "250 2.0.0 Ok, passed clean"


def setup(tmp_path, extra=""):
    smtp_port, back_port, filter_port, sink_port = (free_port() for _ in range(4))
    conf = write_config(
        str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
        extra="\tlist listen 'smtp://127.0.0.1:%d'\n\tlist listen 'smtp://127.0.0.1:%d"
              "?filtered'\n\tlist filter 'smtp:127.0.0.1:%d'\n%s"
              % (smtp_port, back_port, filter_port, extra),
        routes="config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
               % sink_port)
    relay = Relay(back_port)
    return conf, smtp_port, Controller(relay, hostname="127.0.0.1", port=filter_port), \
        relay, sink_port


def test_the_copy_comes_back_once_and_replaces_the_original(tmp_path):
    conf, smtp_port, controller, relay, sink_port = setup(tmp_path)
    controller.start()
    try:
        with Sink(sink_port) as sink:
            daemon = Daemon(conf, smtp_port).start()
            try:
                send(smtp_port, body=b"X-Masq-Filter-Id: forged\r\nSubject: hi\r\n\r\nhello\r\n")
                [(sender, rcpts, text)] = sink.wait(1, timeout=60)
                assert wait_for(lambda: status(conf)["queue"] == [], 30)
            finally:
                log = daemon.stop()
    finally:
        controller.stop()
    assert sender == "alice@sender.example" and rcpts == ["bob@remote.example"]
    [seen] = relay.seen
    assert seen.startswith(b"X-Masq-Filter-Id: ")       # ours, on top; the forged one stripped
    assert seen.count(b"X-Masq-Filter-Id") == 1
    assert b"X-Scanned: yes" in text and b"X-Masq-Filter-Id" not in text
    assert "filtered copy of" in log and len(sink.messages) == 1


def test_a_second_copy_is_dropped(tmp_path):
    conf, smtp_port, controller, relay, sink_port = setup(tmp_path)
    relay.mode = "twice"
    controller.start()
    try:
        with Sink(sink_port) as sink:
            daemon = Daemon(conf, smtp_port).start()
            try:
                send(smtp_port)
                sink.wait(1, timeout=60)
                assert wait_for(lambda: "no longer queued" in daemon.log_so_far(), 30)
                assert wait_for(lambda: status(conf)["queue"] == [], 30)
            finally:
                daemon.stop()
    finally:
        controller.stop()
    assert len(sink.messages) == 1


def test_a_filter_that_refuses_bounces_the_message(tmp_path):
    conf, smtp_port, controller, relay, sink_port = setup(tmp_path)
    relay.mode = "refuse"
    controller.start()
    try:
        with Sink(sink_port) as sink:
            daemon = Daemon(conf, smtp_port).start()
            try:
                send(smtp_port)
                [(sender, rcpts, text)] = sink.wait(1, timeout=60)
            finally:
                daemon.stop()
    finally:
        controller.stop()
    assert sender in ("", "<>") and rcpts == ["alice@sender.example"]
    assert b"5.7.1" in text and b"virus found: Eicar-Test-Signature" in text


def test_a_copy_that_never_comes_back_keeps_the_original(tmp_path):
    conf, smtp_port, controller, relay, sink_port = setup(tmp_path)
    relay.mode = "swallow"
    controller.start()
    try:
        with Sink(sink_port) as sink:
            daemon = Daemon(conf, smtp_port).start()
            try:
                send(smtp_port)
                assert wait_for(lambda: "has not come back" in daemon.log_so_far(), 30)
                [msg] = status(conf)["queue"]
            finally:
                daemon.stop()
            assert sink.messages == []
    finally:
        controller.stop()
    assert msg["recipients"][0]["state"] == "queued" and msg["quarantined"] is None


def test_daemon_killed_after_the_copy_came_back_delivers_it_once(tmp_path):
    conf, smtp_port, controller, relay, sink_port = setup(
        tmp_path, "\toption retry_interval '1s'\n")     # no sink before the kill
    relay.release.clear()                   # the filter holds its 250 back
    controller.start()
    try:
        daemon = Daemon(conf, smtp_port).start()
        try:
            send(smtp_port)
            assert wait_for(lambda: "filtered copy of" in daemon.log_so_far(), 60)
            daemon.proc.kill()                   # SIGKILL: the filter never answered 250
            daemon.proc.wait()
        finally:
            daemon.stop()
            relay.release.set()
        [msg] = status(conf)["queue"]            # the copy, not the original
        dump = masq("queue", "--dump", "-C", conf).stdout.decode()
        assert '"rp":"' in dump and msg["id"] in dump, dump
        with Sink(sink_port) as sink:
            daemon = Daemon(conf, smtp_port).start()
            try:
                assert sink.wait(1, timeout=60), daemon.log_so_far()
                [(_, _, text)] = sink.messages
                assert wait_for(lambda: status(conf)["queue"] == [], 30)
            finally:
                daemon.stop()
    finally:
        controller.stop()
    assert len(relay.seen) == 1 and len(sink.messages) == 1 and b"X-Scanned: yes" in text


def test_the_filtered_listener_takes_only_relay_net(tmp_path):
    conf, smtp_port, controller, relay, sink_port = setup(
        tmp_path, "\tlist relay_net '10.9.8.0/24'\n")
    back_port = relay.back_port
    daemon = Daemon(conf, smtp_port).start()
    try:
        try:
            with smtplib.SMTP("127.0.0.1", back_port) as smtp:
                code, text = smtp.ehlo()
        except smtplib.SMTPConnectError as exc:
            code, text = exc.smtp_code, exc.smtp_error
    finally:
        log = daemon.stop()
    assert code == 554 and b"relay_net" in text and "not in relay_net" in log
