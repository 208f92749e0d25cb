"""QMQP engines (masq.proto.qmqp): a message cut from any split of the bytes; the parts
must fill the outer netstring; hostile input raises ProtocolError; and the QMQP agent's
CRLF to LF conversion (the text's size is declared first) holds across chunk edges."""

import pytest
from hypothesis import given, settings, strategies as st

from masq.outbound.qmtp import _lf
from masq.proto import qmqp

from qmtp_peer import ns


def message(text, sender, recipients):
    return ns(ns(text) + ns(sender) + b"".join(map(ns, recipients)))


def run(data, step):
    server, out = qmqp.Server(), []
    for i in range(0, len(data), step):
        server.receive_data(data[i:i + step])
        while True:
            event = server.next_event()
            if event is qmqp.NEED_DATA:
                break
            out.append(event)
    return server, out


@pytest.mark.parametrize("step", [1, 5, 4096])
def test_a_message_in_any_split(step):
    server, events = run(message(b"a\nb\n", b"s@x", [b"r1@y", b"r2@y"]), step)
    assert events[0] == qmqp.PackageStart(4, False)
    assert b"".join(e.data for e in events if isinstance(e, qmqp.MessageChunk)) == b"a\nb\n"
    assert events[-1] == qmqp.Package(b"s@x", (b"r1@y", b"r2@y"))
    server.respond("K", "ok")
    assert server.data_to_send() == b"3:Kok," and not server.wants_data


@pytest.mark.parametrize("data", [
    ns(ns(b"text") + ns(b"s@x")),                         # no recipient
    ns(ns(b"text") + ns(b"s@x") + ns(b"r@y")) + b"more",  # data after the message
    b"10:" + ns(b"text") + ns(b"s@x") + b",",             # a part overruns the outer one
    b"22:" + ns(b"text") + ns(b"s@x") + ns(b"r@y") + b"xyz,",       # not a netstring
    b"9999999:" + ns(b"t") + b"99999999:",                 # an envelope too large
])
def test_malformed_messages_raise_protocol_error(data):
    with pytest.raises(qmqp.ProtocolError):
        run(data, 3)


def test_client_frames_what_the_server_reads():
    head, tail = qmqp.Client.start(4, "s@x", ["r@y"])
    server, events = run(head + b"a\nb\n" + tail, 2)
    assert events[-1] == qmqp.Package(b"s@x", (b"r@y",))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"xy\r\n"]), max_size=30),
       st.integers(1, 7))
def test_crlf_to_lf_across_chunk_edges(pieces, size):
    text = b"".join(pieces)
    chunks = [text[i:i + size] for i in range(0, len(text), size)]
    assert b"".join(_lf(chunks)) == text.replace(b"\r\n", b"\n")
