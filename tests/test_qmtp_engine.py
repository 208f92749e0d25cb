"""QMTP engines (masq.proto.qmtp): packages cut from any split of the bytes, both message
encodings, pipelined packages; hostile input raises ProtocolError and nothing else."""

import pytest
from hypothesis import given, settings, strategies as st

from masq.proto import qmtp

import qmtp_peer


def events(server, data, step):
    out = []
    for i in range(0, len(data), step):
        server.receive_data(data[i:i + step])
        while True:
            event = server.next_event()
            if event is qmtp.NEED_DATA:
                break
            out.append(event)
            if isinstance(event, qmtp.Package):
                server.respond([("K", "ok")] * len(event.recipients))
    return out


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_pipelined_packages_in_both_encodings(step):
    data = (qmtp_peer.package(b"a\nb\n", b"s@x", [b"r1@y", b"r2@y"]) +
            qmtp_peer.package(b"c\nlast", b"", [b"r3@y"], crlf=True))
    server = qmtp.Server()
    got = events(server, data, step)
    starts = [e for e in got if isinstance(e, qmtp.PackageStart)]
    assert [(s.size, s.crlf) for s in starts] == [(4, False), (7, True)]
    texts, text = [], b""
    for event in got:
        if isinstance(event, qmtp.MessageChunk):
            text += event.data
        elif isinstance(event, qmtp.Package):
            texts.append((text, event.sender, event.recipients))
            text = b""
    assert texts == [(b"a\nb\n", b"s@x", (b"r1@y", b"r2@y")), (b"c\r\nlast", b"", (b"r3@y",))]
    assert server.data_to_send() == b"3:Kok,3:Kok,3:Kok,"


@pytest.mark.parametrize("data", [
    b"01:\n,0:,5:1:a,,", b"x:", b"1234567890123:", b"1:x,0:,5:1:a,,", b"2:\nab0:,5:1:a,,",
    b"1:\n,0:,0:,", b"1:\n,3000:", b"1:\n,0:,7:3:a,,", b"1:\n,0:,5:2:a,,"])
def test_malformed_packages_raise_protocol_error(data):
    server = qmtp.Server()
    with pytest.raises(qmtp.ProtocolError):
        events(server, data + b"9" * 4000, 1 << 20)


@pytest.mark.parametrize("data", [b"0:,", b"2:Xa,", b"5000:", b"3:Ka,x"])
def test_bad_responses_raise_protocol_error(data):
    client = qmtp.Client()
    client.receive_data(data + b"0" * 5000)
    with pytest.raises(qmtp.ProtocolError):
        client.responses()


def test_client_frames_a_package_the_independent_parser_reads():
    client = qmtp.Client()
    data = client.start(6) + b"a\r\nb\r\n" + client.end("s@x", ["r@y", "ü@y"])
    text, rest = qmtp_peer.read_ns(None, data)
    sender, rest = qmtp_peer.read_ns(None, rest)
    rcpts, rest = qmtp_peer.read_ns(None, rest)
    assert (text, sender, rcpts, rest) == (b"\ra\r\nb\r\n", b"s@x",
                                          b"3:r@y,4:\xc3\xbc@y,", b"")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_random_bytes_never_raise_anything_but_protocol_error(chunks):
    server = qmtp.Server()
    seen = []
    try:
        for chunk in chunks:
            seen += events(server, chunk, 7)
    except qmtp.ProtocolError:
        pass
    # what got through kept the engine's limits: known events, whole envelopes only
    for event in seen:
        assert isinstance(event, (qmtp.PackageStart, qmtp.MessageChunk, qmtp.Package))
        if isinstance(event, qmtp.Package):
            assert event.recipients
            assert all(len(a) <= qmtp.MAX_ADDRESS for a in (event.sender,) + event.recipients)
