"""Every protocol engine uses the one pair of masq.proto.errors; none defines its own."""

import ast
import pathlib

import pytest

from masq.proto import dns, http, imap, pop3, smtp_client, smtp_server
from masq.proto.errors import ConnectionClosed, ProtocolError
from masq.proto.reply import Reply

PROTO = pathlib.Path(__file__).resolve().parent.parent / "masq" / "proto"


def _own_errors_and_closed(path):
    """Return the names of exception classes and ConnectionClosed classes a module defines."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
        if node.name == "ConnectionClosed" or any(
                b.endswith(("Error", "Exception")) for b in bases):
            found.append(node.name)
    return found


@pytest.mark.parametrize("path", sorted(p for p in PROTO.glob("*.py") if p.name != "errors.py"),
                         ids=lambda p: p.name)
def test_no_engine_defines_its_own_error_or_closed_event(path):
    assert _own_errors_and_closed(path) == []


def test_the_engines_end_with_the_shared_event():
    srv = smtp_server.SMTPServer("mx.test", max_size=1000)
    srv.greeting()
    srv.receive_data(b"")
    assert srv.next_event() == ConnectionClosed("eof")
    web = http.HTTPServer()
    web.receive_data(b"")
    assert web.next_event() == ConnectionClosed()
    for engine in (smtp_client, pop3, imap):
        assert engine.ConnectionClosed is ConnectionClosed


def test_peer_faults_are_the_shared_error_with_what_and_reply():
    with pytest.raises(ProtocolError) as info:
        dns.parse_response(b"\x00", 1, "example.org", dns.A)
    assert info.value.reply is None and "truncated" in info.value.what
    error = ProtocolError(reply=Reply(500, "5.5.2", "Unknown command"))
    assert error.what == "500 5.5.2 Unknown command" and str(error) == error.what
    assert http.error_response(ProtocolError("no such page", 404)).status == 404
