"""`smtp:HOST:PORT` content filters, the amavis way (docs/FILTERS.md): masq sends the message
to the filter (an aiosmtpd relay in the test that adds a header and relays it back, as
amavisd-new does, answering 250 only once the copy was accepted back) and the copy returns
to a `?filtered` listener, which strips X-Masq-Filter-Id and commits the copy replacing
the original in one record. No loss, no double: a second copy is dropped, a filter that
refuses bounces, a daemon SIGKILLed after the copy came back delivers it once."""

import contextlib
import smtplib
import threading

from aiosmtpd.controller import Controller

from helpers import free_port, masq, status, wait_for
from test_binarymime import BINARY, BLOB, leaves, send_binary
from test_filter_pipe import configure, running, send


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


@contextlib.contextmanager
def filtering(tmp_path, extra="", mode="relay"):
    """Write masq.conf with the Relay as its `smtp:` filter (in mode) and a `?filtered`
    listener, and run the Relay for a `with` block; yield (conf, smtp_port, relay,
    sink_port)."""
    back_port, filter_port = free_port(), free_port()
    conf, smtp_port, sink_port = configure(
        str(tmp_path), "\tlist listen 'smtp://127.0.0.1:%d?filtered'\n"
        "\tlist filter 'smtp:127.0.0.1:%d'\n" % (back_port, filter_port), extra)
    relay = Relay(back_port)
    relay.mode = mode
    controller = Controller(relay, hostname="127.0.0.1", port=filter_port)
    controller.start()
    try:
        yield conf, smtp_port, relay, sink_port
    finally:
        controller.stop()


def test_the_copy_comes_back_once_and_replaces_the_original(tmp_path):
    with filtering(tmp_path) as (conf, smtp_port, relay, sink_port), \
            running(conf, smtp_port, sink_port) as run:
        send(smtp_port, body=b"X-Masq-Filter-Id: forged\r\nSubject: hi\r\n\r\nhello\r\n")
        [(sender, rcpts, text)] = run.sink.wait(1, timeout=60)
        assert wait_for(lambda: status(conf)["queue"] == [], 30)
    log, sink = run.log, run.sink
    assert sender == "alice@sender.example" and rcpts == ["bob@remote.example"]
    [seen] = relay.seen
    assert seen.startswith(b"X-Masq-Filter-Id: ")       # ours, on top; the forged one stripped
    assert seen.count(b"X-Masq-Filter-Id") == 1
    assert b"X-Scanned: yes" in text and b"X-Masq-Filter-Id" not in text
    assert "filtered copy of" in log and len(sink.messages) == 1


def test_a_second_copy_is_dropped(tmp_path):
    with filtering(tmp_path, mode="twice") as (conf, smtp_port, relay, sink_port), \
            running(conf, smtp_port, sink_port) as run:
        send(smtp_port)
        run.sink.wait(1, timeout=60)
        assert wait_for(lambda: "no longer queued" in run.daemon.log_so_far(), 30)
        assert wait_for(lambda: status(conf)["queue"] == [], 30)
    assert len(run.sink.messages) == 1


def test_a_filter_that_refuses_bounces_the_message(tmp_path):
    with filtering(tmp_path, mode="refuse") as (conf, smtp_port, relay, sink_port), \
            running(conf, smtp_port, sink_port) as run:
        send(smtp_port)
        [(sender, rcpts, text)] = run.sink.wait(1, timeout=60)
    assert sender in ("", "<>") and rcpts == ["alice@sender.example"]
    assert b"5.7.1" in text and b"virus found: Eicar-Test-Signature" in text


def test_a_copy_that_never_comes_back_keeps_the_original(tmp_path):
    with filtering(tmp_path, mode="swallow") as (conf, smtp_port, relay, sink_port), \
            running(conf, smtp_port, sink_port) as run:
        send(smtp_port)
        assert wait_for(lambda: "has not come back" in run.daemon.log_so_far(), 30)
        [msg] = status(conf)["queue"]
    assert run.sink.messages == []
    assert msg["recipients"][0]["state"] == "queued" and msg["quarantined"] is None


def test_daemon_killed_after_the_copy_came_back_delivers_it_once(tmp_path):
    with filtering(tmp_path, "\toption retry_interval '1s'\n") as (
            conf, smtp_port, relay, sink_port):
        relay.release.clear()               # the filter holds its 250 back
        try:
            with running(conf, smtp_port) as run:   # no sink before the kill
                send(smtp_port)
                assert wait_for(lambda: "filtered copy of" in run.daemon.log_so_far(), 60)
                run.daemon.proc.kill()      # SIGKILL: the filter never answered 250
                run.daemon.proc.wait()
        finally:
            relay.release.set()
        [msg] = status(conf)["queue"]            # the copy, not the original
        dump = masq("queue", "--dump", "-C", conf).stdout.decode()
        assert '"rp":"' in dump and msg["id"] in dump, dump
        with running(conf, smtp_port, sink_port) as run:
            assert run.sink.wait(1, timeout=60), run.daemon.log_so_far()
            [(_, _, text)] = run.sink.messages
            assert wait_for(lambda: status(conf)["queue"] == [], 30)
    assert len(relay.seen) == 1 and len(run.sink.messages) == 1 and b"X-Scanned: yes" in text


def test_the_filtered_listener_takes_only_relay_net(tmp_path):
    with filtering(tmp_path, "\tlist relay_net '10.9.8.0/24'\n") as (
            conf, smtp_port, relay, sink_port), running(conf, smtp_port) as run:
        try:
            with smtplib.SMTP("127.0.0.1", relay.back_port) as smtp:
                code, text = smtp.ehlo()
        except smtplib.SMTPConnectError as exc:
            code, text = exc.smtp_code, exc.smtp_error
    assert code == 554 and b"relay_net" in text and "not in relay_net" in run.log


def test_a_binarymime_message_reaches_the_filter_converted_never_raw_after_data(tmp_path):
    """The filter (aiosmtpd: no CHUNKING, no BINARYMIME) gets the binary part in base64,
    decoding to the same octets; the message is never sent as it is after DATA."""
    with filtering(tmp_path) as (conf, smtp_port, relay, sink_port), \
            running(conf, smtp_port, sink_port) as run:
        send_binary(smtp_port, BINARY)
        [(_, rcpts, text)] = run.sink.wait(1, timeout=60)
    [seen] = relay.seen
    assert b"\x00" not in seen and b"Content-Transfer-Encoding: base64" in seen
    assert leaves(seen) == [leaves(BINARY)[0], ("application/octet-stream", BLOB)]
    assert rcpts == ["far@example.org"] and leaves(text) == leaves(seen)
