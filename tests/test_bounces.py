"""Bounces as a mail reader sees them (issue 11 case 5), against an aiosmtpd sink.

The returned message follows a blank line after its part's Content-Type, so Python's email
package reads its headers as the returned message's own; a bounce to an SMTPUTF8 sender
is an RFC 6533 report (message/global-delivery-status, message/global) sent with SMTPUTF8;
a sender (or recipient) the SMTP client would refuse is refused in the dialogue and by
`sendmail`, not accepted and bounced to itself.
"""

import email
import email.policy
import smtplib

from helpers import Daemon, free_port, masq, write_config
from masq.proto import smtp_client_wire, smtp_path
from sinks import Sink

BODY = b"Subject: the original\nX-Mark: returned\n\nhello from the original\n"


def setup(tmp_path, sink_port, smtp_port=None):
    extra = "\tlist listen 'smtp://127.0.0.1:%d'\n" % (smtp_port or free_port())
    routes = ("config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
              % sink_port)
    return write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=extra,
                        routes=routes)


def bounce_of(conf, sink, sender, rcpt="perm-nobody@example.org"):
    """Queue a message from sender to rcpt (refused with 550), flush twice; return the
    bounce as (envelope recipients, parsed message)."""
    done = masq("-C", conf, "-odq", "-f", sender, rcpt, input=BODY)
    assert done.returncode == 0, done.stderr
    masq("flush", "-C", conf)
    masq("flush", "-C", conf)                       # the bounce leaves through the route
    bounces = [m for m in sink.wait(1) if m[0] in ("", "<>")]
    assert len(bounces) == 1, sink.messages
    _, rcpts, text = bounces[0]
    return rcpts, email.message_from_string(text.decode("utf-8"), policy=email.policy.default)


def test_the_returned_message_keeps_its_own_headers(tmp_path):
    port = free_port()
    conf = setup(tmp_path, port)
    with Sink(port) as sink:
        rcpts, msg = bounce_of(conf, sink, "writer@example.org")
    assert rcpts == ["writer@example.org"]
    assert msg.get_content_type() == "multipart/report"
    human, status, returned = msg.iter_parts()
    assert status.get_content_type() == "message/delivery-status"
    assert returned.get_content_type() == "message/rfc822"
    assert "Subject" not in returned and "X-Mark" not in returned    # not part headers
    [original] = returned.get_payload()
    assert original["Subject"] == "the original" and original["X-Mark"] == "returned"
    assert "hello from the original" in original.get_content()


def test_a_bounce_to_an_smtputf8_sender_is_a_global_report(tmp_path):
    port = free_port()
    conf = setup(tmp_path, port)
    with Sink(port, enable_SMTPUTF8=True) as sink:
        rcpts, msg = bounce_of(conf, sink, "jörg@exämple.org")
    assert rcpts == ["jörg@exämple.org"]
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "global-delivery-status"
    assert msg["To"].addresses[0].addr_spec == "jörg@exämple.org"
    human, status, returned = msg.iter_parts()
    assert "perm-nobody@example.org" in human.get_content()
    assert status.get_content_type() == "message/global-delivery-status"
    fields = status.as_string()
    assert "Final-Recipient: rfc822; perm-nobody@example.org" in fields
    assert "Action: failed" in fields and "Status: 5.1.1" in fields
    assert returned.get_content_type() == "message/global"
    [original] = returned.get_payload()
    assert original["Subject"] == "the original"


def test_a_sender_the_client_would_refuse_is_refused_at_mail(tmp_path):
    smtp_port = free_port()
    conf = setup(tmp_path, free_port(), smtp_port)
    bad = '"<img>"@example.org'
    daemon = Daemon(conf, wait_port=smtp_port).start()
    try:
        with smtplib.SMTP("127.0.0.1", smtp_port) as client:
            client.ehlo()
            code, text = client.docmd("MAIL", "FROM:<%s>" % bad)
            assert (code, text[:5]) == (553, b"5.1.7"), text
            assert client.docmd("MAIL", "FROM:<writer@example.org>")[0] == 250
            code, text = client.docmd("RCPT", "TO:<%s>" % bad)
            assert (code, text[:5]) == (553, b"5.1.3"), text
            assert client.docmd("RSET")[0] == 250
    finally:
        daemon.stop()
    done = masq("-C", conf, "-odq", "-f", bad, "someone@example.org", input=BODY)
    assert done.returncode == 65 and b"cannot be relayed" in done.stderr, done.stderr
    done = masq("-C", conf, "-odq", bad, input=BODY)
    assert done.returncode == 65 and b"cannot be relayed" in done.stderr, done.stderr
    assert masq("status", "--json", "-C", conf).stdout.count(b'"id"') == 0


def test_the_client_and_the_server_share_one_rule():
    env = smtp_client_wire.OutgoingEnvelope('"<img>"@example.org', ("a@b.example",), size=1)
    assert smtp_client_wire.check_envelope(env, smtp_client_wire.Extensions()) \
        is smtp_path.BAD_SENDER
    assert not smtp_path.sendable('"<img>"@example.org')
    assert not smtp_path.sendable('"a\x7fb"@example.org')
    assert smtp_path.sendable('"a b"@example.org') and smtp_path.sendable("jörg@exämple.org")
