"""Deeply nested JSON from outside (issue 12 case 9): every decoder of outside bytes turns
any input into a reply or a clean error, never an uncaught RecursionError.

The control socket is attacked with a real Unix socket; the other JSON readers of outside
bytes (`ubus listen` lines, `ubus call` output) are fed the same document."""

import json
import socket

from helpers import Daemon, write_config
from masq.base import compat
from masq.base import control
from masq.online import ubus

NESTED = "[" * 30000 + "]" * 30000          # under control.MAX_REQUEST


def test_loads_turns_deep_nesting_into_a_value_error():
    try:
        compat.loads(NESTED)
    except ValueError as exc:
        assert "nested" in str(exc)
    else:
        raise AssertionError("30,000 levels decoded")


def ask(spool, line):
    """Send one raw request line to the control socket; return the decoded reply."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(control.socket_path(spool))
        sock.sendall(line + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    return json.loads(data)


def test_control_socket_answers_hostile_json_with_a_clean_error(tmp_path):
    spool = str(tmp_path / "spool")
    conf = write_config(str(tmp_path / "masq.conf"), spool,
                        extra="\tlist listen 'smtp://127.0.0.1:0'\n")
    daemon = Daemon(conf).start()
    try:
        assert len(NESTED) + 1 < control.MAX_REQUEST
        reply = ask(spool, NESTED.encode())
        assert reply["ok"] is False and reply["error"].startswith("bad request")
        for line in (b'{"cmd": ["status"]}', b'{"cmd": {"a": 1}}', b'{"cmd": "rm", "ids": 5}',
                     b'{"cmd": "online", "route": [], "how": "up"}'):
            reply = ask(spool, line)
            assert reply["ok"] is False and reply["error"], line
        assert control.request(spool, "status")["ok"] is True  # still serving
    finally:
        output = daemon.stop()
    assert "internal error" not in output and "RecursionError" not in output


def test_ubus_readers_judge_nested_output_as_unusable():
    assert ubus.parse_event(NESTED) is None
    assert ubus.judge_output(0, NESTED.encode()) is False
