"""The SMTP client session feeds message text a bounded amount per loop turn.

A next hop that takes text as fast as it comes (its socket never fills) must not let one
session pump a whole message in one loop turn: meanwhile no reply is read (a BDAT reply
per chunk piles up), no other session, listener or timer runs. The session's stream here
takes every byte at once (as a fast peer on loopback does); the server's replies are real
bytes on a socketpair."""

import socket
from types import SimpleNamespace

from masq.base.loop import Loop
from masq.outbound import smtp_session
from masq.outbound.job import Job
from masq.outbound.smtp import SMTPSettings
from masq.proto import smtp_client as C

CHUNK = b"y" * 76 + b"\r\n"
CHUNK *= 65536 // len(CHUNK)
CHUNKS = 64                     # 4 MiB of text: four turns' worth


def test_a_fast_peer_gets_the_text_a_turn_at_a_time_and_all_of_it():
    loop = Loop()
    pulled, finished, sent = [], [], bytearray()

    def body():
        for n in range(CHUNKS):
            pulled.append(n)
            yield CHUNK
    job = Job("id-pump", "a@me.example", ("b@dest.example",), body, crlf=True,
              size=CHUNKS * len(CHUNK))
    parts = [SimpleNamespace(job=job, indices=[0], finish=finished.extend,
                             envelope=lambda raw=False: C.OutgoingEnvelope(
                                 job.sender, tuple(job.recipients), job.size))]
    dest = SimpleNamespace(settings=SMTPSettings(helo="client.example", tls="none"),
                           agent=SimpleNamespace(loop=loop),
                           take_part=lambda: parts.pop() if parts else None,
                           session_over=lambda *args: None)
    ours, theirs = socket.socketpair()
    try:
        session = smtp_session.SMTPClientSession(dest, "sink.example", "127.0.0.1", 25,
                                                 False)
        session._connected(ours, None)
        session.stream.write = sent.extend          # a peer that takes everything at once
        theirs.sendall(b"220 sink\r\n250-sink\r\n250-8BITMIME\r\n250 PIPELINING\r\n250 2.1.0 ok\r\n"
                       b"250 2.1.5 ok\r\n354 go\r\n")
        assert loop.run_until(lambda: pulled, 10)
        assert session.client.state == C.BODY
        assert len(pulled) * len(CHUNK) <= smtp_session.TURN + len(CHUNK)   # one turn's
        assert loop.run_until(lambda: session.client.state == C.DOT, 10)
        assert len(pulled) == CHUNKS
        text = bytes(sent).split(b"DATA\r\n", 1)[1]
        assert text == CHUNK * CHUNKS + b".\r\n"
        theirs.sendall(b"250 2.0.0 queued\r\n221 bye\r\n")
        assert loop.run_until(lambda: finished, 10)
        assert [o.kind for o in finished] == ["ok"]
    finally:
        theirs.close()
        loop.close()
