"""Regression (found by tests/fuzz/test_fuzz_sendmail.py): `sendmail -f nobody@LOCAL
nosuch` with no daemon running never returned. The message bounced to its unknown local
sender, that bounce bounced to the postmaster, and the one-shot queue run then waited in
the loop for ever. Now the double bounce is delivered (postmaster is root's) and sendmail
exits 0.
"""

import os

from helpers import masq, write_config


def test_sendmail_returns_after_a_double_bounce(tmp_path):
    spool, mail = tmp_path / "spool", tmp_path / "mail"
    spool.mkdir()
    mail.mkdir()
    conf = write_config(str(tmp_path / "masq.conf"), str(spool),
                        extra="\toption mailbox 'maildir:%s/%%u'\n" % mail)
    done = masq("-C", conf, "-i", "-f", "nobody-h3@test.example", "nosuch-h3",
                input=b"Subject: x\n\nhi\n", timeout=120)
    assert done.returncode == 0, done.stderr
    assert b"status=bounced" in done.stderr
    delivered = os.listdir(mail / "root" / "new")
    assert len(delivered) == 1
