"""Fuzz local submission end to end: `sendmail -t` and `sendmail -bs` as real processes.

Input: messages from the message fuzzer's grammar with To/Cc/Bcc/From fields from the
address-list grammar, recipients as arguments, and the -i, -f, -F flags; SMTP dialogues
from the SMTP server fuzzer's grammar on the standard input of `sendmail -bs`.
Properties: every run exits with one of the documented sysexits codes, never 70 (internal
error), with no traceback and at most one line on stderr when it fails; `-bs` writes
well-formed SMTP replies that start with 220.
"""

import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from fuzzing import fuzz_settings
from helpers import ROOT, write_config
from test_fuzz_message import _list, _text
from test_fuzz_smtp_server import _client as smtp_clients, replies

DOCUMENTED = {0, 64, 65, 67, 69, 73, 75, 78}


@pytest.fixture(scope="module")
def conf(tmp_path_factory):
    root = tmp_path_factory.mktemp("sendmail")
    (root / "spool").mkdir()
    (root / "mail").mkdir()
    return write_config(str(root / "masq.conf"), str(root / "spool"),
                        extra="\toption mailbox 'maildir:%s/mail/%%u'\n" % root)


def sendmail(conf, args, data):
    return subprocess.run([sys.executable, "-m", "masq", "-C", conf] + args, input=data,
                          capture_output=True, cwd=ROOT, timeout=120)


_field = st.tuples(st.sampled_from([b"To: ", b"Cc: ", b"Bcc: ", b"From: ", b"Sender: ",
                                    b"Resent-To: ", b"to:"]),
                   _list.map(lambda v: v.encode("utf-8", "surrogateescape"))).map(b"".join)
_message = st.tuples(st.lists(_field, max_size=4).map(b"\r\n".join),
                     st.sampled_from([b"\r\n\r\n", b"\n", b"\r\n"]), _text).map(b"".join)
_args = st.lists(st.sampled_from(["alice", "bob@example.org", "<x@y>", "a@", "-i", "-oi",
                                  "-f", "s@example.org", "-F", "Name", "-fx@y", "@", "é"]),
                 max_size=4)


@fuzz_settings(weight=20)
@given(_message, _args)
def test_sendmail_t_exits_with_a_documented_code(conf, message, args):
    done = sendmail(conf, ["-t"] + args, message)
    assert done.returncode in DOCUMENTED, done.stderr
    assert b"Traceback" not in done.stderr
    if done.returncode:
        assert done.stderr.count(b"\n") <= 1, done.stderr


@fuzz_settings(weight=20)
@given(smtp_clients)
def test_sendmail_bs_answers_any_dialogue(conf, data):
    done = sendmail(conf, ["-bs"], data)
    assert done.returncode in DOCUMENTED and b"Traceback" not in done.stderr, done.stderr
    found = replies(done.stdout)
    assert found and found[0].code == 220
