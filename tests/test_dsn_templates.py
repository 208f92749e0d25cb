"""Bounce and warning templates (issue 14, point 12): masqmail's errmsg_file and
warnmsg_file give the human part and Subject: of masq's RFC 3464 reports.

The reports are read back with Python's email package: the template's words (and
variables) in the text part, the message/delivery-status part as without a template. A
template fault is a configuration error naming the template's file and line, at
check-config and daemon start; a template that breaks later costs its words, never the
bounce.
"""

import email
import email.policy

import pytest

from helpers import free_port, masq, write_config
from masq.config.uci import ConfigError
from masq.outbound import bounce, dsn_text
from masq.outbound.outcome import Outcome
from masq.queue.envelope import Envelope, Recipient
from sinks import Sink

BODY = b"Subject: the original\nX-Mark: returned\n\nhello from the original\n"
GERMAN = ("Subject: Nicht zustellbar: ${rcpt}\n"
          "\n"
          "Dies ist das Mailsystem auf ${host_name} ($package $version).\n"
          "Ihre Nachricht $uid von ${return_path} kostet 5 $$ und konnte nicht\n"
          "zugestellt werden, Grund: ${err_msg}\n"
          "\n"
          "@failed_rcpts\n"
          "Grüße\n")


def parse(text, path="/etc/masq/failmsg.tpl"):
    return dsn_text.parse(text.encode("utf-8") if isinstance(text, str) else text, path)


@pytest.mark.parametrize("text,line,why", [
    ("Hello ${nosuch}\n", 1, "unknown variable 'nosuch'"),
    ("Subject: s\nFrom: MAILER-DAEMON@${host_name}\n\nx\n", 2, "only one Subject:"),
    ("Subject: s\n\ntext\n@msg_body\n", 4, "@msg_body: masq attaches the original"),
    ("line one\n\n${rcpt\n", 3, "'${' without '}'"),
    (b"ok\nGr\xfc\xdfe\n", 2, "not UTF-8"),
    ("Subject: only a subject\n", 1, "no text"),
    ("Subject: s\nHello\n", 2, "an empty line must follow"),
    ("From: MAILER-DAEMON@${host_name}\nSubject: s\n\nx\n", 1, "only one Subject:"),
    ("text\x07bell\n", 1, "control character"),
])
def test_a_template_fault_names_the_template_and_its_line(text, line, why):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert (info.value.path, info.value.line) == ("/etc/masq/failmsg.tpl", line)
    assert why in info.value.message


def conf_with(tmp_path, port, **options):
    extra = "".join("\toption %s '%s'\n" % item for item in options.items())
    routes = ("config route 'isp'\n\toption smarthost '127.0.0.1:%d'\n\toption tls 'none'\n"
              % port)
    return write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=extra,
                        routes=routes)


def test_check_config_refuses_a_bad_template_at_its_line(tmp_path):
    tpl = tmp_path / "warn.tpl"
    tpl.write_text("Subject: delayed\n\nStill trying ${rcpt}.\nUntil ${retry_when}.\n")
    conf = conf_with(tmp_path, free_port(), warnmsg_file=str(tpl))
    done = masq("check-config", "-C", conf)
    assert done.returncode == 78
    assert ("%s:4: unknown variable 'retry_when'" % tpl).encode() in done.stderr
    tpl.unlink()
    done = masq("check-config", "-C", conf)
    assert done.returncode == 78
    assert b"option warnmsg_file: %s: cannot read it" % str(tpl).encode() in done.stderr
    assert b"masq.conf:" in done.stderr                     # the line that names it


def bounce_through(tmp_path, sink, conf):
    done = masq("-C", conf, "-odq", "-f", "writer@example.org", "perm-nobody@example.org",
                input=BODY)
    assert done.returncode == 0, done.stderr
    flushed = masq("flush", "-C", conf)
    masq("flush", "-C", conf)                       # the bounce leaves through the route
    [(_, rcpts, text)] = [m for m in sink.wait(1) if m[0] in ("", "<>")]
    assert rcpts == ["writer@example.org"]
    return email.message_from_bytes(text, policy=email.policy.default), flushed


def test_a_bounce_speaks_the_templates_words_in_the_rfc3464_structure(tmp_path):
    tpl = tmp_path / "failmsg.tpl"
    tpl.write_text(GERMAN, encoding="utf-8")
    port = free_port()
    conf = conf_with(tmp_path, port, errmsg_file=str(tpl))
    assert masq("check-config", "-C", conf).returncode == 0
    with Sink(port) as sink:
        msg, _ = bounce_through(tmp_path, sink, conf)
    assert msg["Subject"] == "Nicht zustellbar: perm-nobody@example.org"
    assert msg.get_content_type() == "multipart/report"
    human, status, returned = msg.iter_parts()
    text = human.get_content().replace("\r\n", "\n")
    assert human["Content-Transfer-Encoding"] == "quoted-printable"      # 7-bit on the wire
    assert "Dies ist das Mailsystem auf test.example (masq " in text
    assert "von writer@example.org kostet 5 $ und" in text
    assert "\n<perm-nobody@example.org>: " in text and text.endswith("Grüße\n")
    assert "Grund: " in text and "550" in text
    assert status.get_content_type() == "message/delivery-status"
    fields = status.as_string()
    assert "Final-Recipient: rfc822; perm-nobody@example.org" in fields
    assert "Action: failed" in fields and "Status: 5." in fields
    [original] = returned.get_payload()
    assert original["X-Mark"] == "returned"


def test_a_template_that_breaks_after_loading_costs_its_words_not_the_bounce(tmp_path):
    tpl = tmp_path / "failmsg.tpl"
    tpl.write_text(GERMAN, encoding="utf-8")
    port = free_port()
    conf = conf_with(tmp_path, port, errmsg_file=str(tpl))
    assert masq("check-config", "-C", conf).returncode == 0
    tpl.write_text("Grund: ${reason}\n")            # edited without a reload
    with Sink(port) as sink:
        msg, flushed = bounce_through(tmp_path, sink, conf)
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    human, status, _ = msg.iter_parts()
    assert "could not be delivered" in human.get_content()
    assert status.get_content_type() == "message/delivery-status"
    assert b"unknown variable 'reason'" in flushed.stderr


def report(template, action="delayed", sender="writer@example.org"):
    env = Envelope(sender, [Recipient("far@example.org")], received=1000.0, size=10,
                   client="mx.example[192.0.2.1]")
    rows = [(env.recipients[0], Outcome.temp("4.4.1", "connection refused"))]
    text = b"".join(bounce.build("test.example", "MSGID1", env, rows,
                                 [b"Subject: s\r\n\r\nbody\r\n"], action, 5000.0, 2000.0,
                                 template))
    return email.message_from_bytes(text, policy=email.policy.default)


def test_a_warning_template_gets_the_retry_date_and_keeps_the_report():
    tpl = parse("Subject: Verzögert\n\n${rcpt}: ${err_msg}\nvon ${received_host}\n"
                "bis ${retry_until}\n", "/etc/masq/warn.tpl")
    own, plain = report(tpl), report(None)
    assert own["Subject"] == "Verzögert"
    assert own.as_bytes().isascii()
    human = own.get_payload()[0].get_content().replace("\r\n", "\n")
    assert human.startswith("far@example.org: connection refused\nvon mx.example[192.0.2.1]\n")
    assert "bis " + own.get_payload()[1].get_payload()[1]["Will-Retry-Until"] in human
    assert own.get_payload()[1].as_string() == plain.get_payload()[1].as_string()
    assert own.get_payload()[2].as_string() == plain.get_payload()[2].as_string()


def test_without_a_template_the_text_is_masqs_own():
    msg = report(None, action="failed")
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    human = msg.get_payload()[0]
    assert human.get_content_type() == "text/plain"
    assert human.get_param("charset") == "us-ascii"
    assert human.get_content().splitlines()[:3] == [
        "This is the mail system at host test.example.", "",
        "Your message could not be delivered to one or more recipients."]
