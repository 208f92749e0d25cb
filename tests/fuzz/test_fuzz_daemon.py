"""Fuzz the daemon's doors over real sockets: the control socket, SMTP and the status page.

One daemon runs in this process for the module (its loop driven by the test, without
signal handlers), with a route, an SMTP listener and the status page on loopback ports and
the control socket in its spool. Each example opens a connection, writes hostile bytes,
closes its sending side and runs the loop until the daemon closes the connection.
Input: control requests (JSON objects with every command and arguments of every JSON
type, deep nesting, non-objects, bad UTF-8, lines without an end, oversized lines), SMTP
dialogues from the engine fuzzer's grammar, HTTP requests from the HTTP fuzzer's grammar.
Properties: the loop never reports an internal error; a control request that ends in a
newline gets exactly one JSON line with a boolean "ok"; SMTP clients get well-formed
replies; HTTP clients get an HTTP/1.1 response or nothing; every connection is closed.
"""

import json
import socket

import pytest
from hypothesis import example, given, strategies as st

from fuzzing import fuzz_settings, splits
from helpers import free_port, write_config
from masq.base import control
from masq.daemon import services
from masq.daemon.host import Daemon
from masq.queue.opening import open_queue
from test_fuzz_http import _stream as http_requests
from test_fuzz_smtp_server import _client as smtp_clients, replies


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("daemon")
    spool = root / "spool"
    spool.mkdir()
    smtp, web = free_port(), free_port()
    conf = write_config(str(root / "masq.conf"), str(spool),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n"
                              "\toption status_listen '127.0.0.1:%d'\n"
                              "\toption mailbox 'maildir:%s/mail/%%u'\n" % (smtp, web, root),
                        routes="config route 'isp'\n\toption online 'file:%s/online'\n"
                               "\toption smarthost '127.0.0.1:9'\n" % root)
    d = Daemon(conf)
    d.errors = []
    d.loop.on_error = d.errors.append
    d.queue = open_queue(d.cfg, "runner")
    d.control = control.Server(d.loop, d.queue.dir, d._control)
    d.control.start()
    made = services.make(d)
    d.delivery, d.fetcher = made.delivery, made.fetcher
    for component in made.components:                # as Daemon.start, without signals
        component.start()
        d.components.append(component)
    d.loop.at_turn_end(d._turn_end)
    d.ports = {"smtp": smtp, "web": web}
    yield d
    for component in reversed(d.components):
        component.stop()
    d.close()


def converse(daemon, family, address, data, cuts=()):
    """Send data, close the sending side, run the loop until the daemon closes; return
    what came back."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.connect_ex(address)
    got, pieces = bytearray(), splits(data, cuts) or [b""]
    del daemon.errors[:]
    try:
        for _ in range(20000):
            daemon.loop.run_once(block=False)
            if pieces:
                try:
                    sent = sock.send(pieces[0])
                    pieces[0] = pieces[0][sent:]
                    if not pieces[0]:
                        pieces.pop(0)
                    if not pieces:
                        sock.shutdown(socket.SHUT_WR)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:          # the daemon closed first (a 421, a bad request)
                    pieces = []
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            got += chunk
        else:
            raise AssertionError("the daemon never closed the connection")
    finally:
        sock.close()
    for _ in range(3):
        daemon.loop.run_once(block=False)
    assert daemon.errors == [], daemon.errors
    return bytes(got)


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=10), st.sampled_from(["isp", "up", "down", "auto", "nosuch"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)
_request = st.fixed_dictionaries(
    {"cmd": st.one_of(st.sampled_from(["status", "new", "rm", "online", "flush", "nosuch"]),
                      _json)},
    optional={"ids": _json, "route": _json, "how": _json, "forced": _json})
_line = st.one_of(_request.map(lambda r: json.dumps(r).encode()), _json.map(
    lambda v: json.dumps(v).encode()), st.binary(max_size=40))
_control = st.tuples(_line, st.sampled_from([b"\n", b"\n", b"\r\n", b"", b"\nmore\n"])).map(
    b"".join)


@fuzz_settings(weight=4)
@given(_control)
@example(b'{"cmd": []}\n')
@example(b'{"cmd": "rm", "ids": 5}\n')
@example(b'{"cmd": "online", "route": "isp", "how": "up"}\n')
@example(b'{"cmd": "flush", "route": {"a": 1}}\n')
def test_every_control_request_gets_one_json_reply(daemon, data):
    reply = converse(daemon, socket.AF_UNIX, control.socket_path(daemon.queue.dir), data)
    if b"\n" not in data:
        assert reply == b""
        return
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1, reply
    answer = json.loads(reply)
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool)


@fuzz_settings(weight=4)
@given(smtp_clients, st.lists(st.integers(0, 4000), max_size=4))
def test_every_smtp_client_gets_well_formed_replies(daemon, data, cuts):
    wire = converse(daemon, socket.AF_INET, ("127.0.0.1", daemon.ports["smtp"]), data, cuts)
    found = replies(wire)
    assert found and found[0].code == 220


@fuzz_settings(weight=4)
@given(http_requests, st.lists(st.integers(0, 4000), max_size=4))
def test_every_http_client_gets_a_response_or_nothing(daemon, data, cuts):
    wire = converse(daemon, socket.AF_INET, ("127.0.0.1", daemon.ports["web"]), data, cuts)
    assert wire == b"" or wire.startswith(b"HTTP/1.1 ")


def test_deeply_nested_control_request_gets_a_json_error(daemon):
    reply = converse(daemon, socket.AF_UNIX, control.socket_path(daemon.queue.dir),
                     b"[" * 30000 + b"]" * 30000 + b"\n")
    assert json.loads(reply)["ok"] is False


def test_a_control_command_of_the_wrong_json_type_gets_a_json_error(daemon):
    reply = converse(daemon, socket.AF_UNIX, control.socket_path(daemon.queue.dir),
                     b'{"cmd": []}\n')
    assert json.loads(reply)["ok"] is False


def test_400_pipelined_commands_get_400_replies(daemon):
    wire = converse(daemon, socket.AF_INET, ("127.0.0.1", daemon.ports["smtp"]),
                    b"HELO x\r\n" * 400 + b"QUIT\r\n")
    found = replies(wire)
    assert [r.code for r in found] == [220] + [250] * 400 + [221]
