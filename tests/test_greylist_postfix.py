"""Greylisting against a real retrying client (issue 15): a private Postfix (its own
configuration and queue directory, master(8) started by the test: tests/postfix_peer.py's
PostfixMaster) relays a message to masq; masq answers its first RCPT `450 4.7.1` and
logs it; Postfix queues the message and retries (its retry times shortened to a second
or two), and the retry after masq's `greylist_delay` (shortened to a few seconds: the one
place a real delay is needed, since Postfix's retry runs on the wall clock) is accepted
and delivered to a local mailbox, read back with Python's mailbox module. There is no
timing assertion: the waits below only bound a hang."""

import mailbox
import os
import shutil

import pytest

from helpers import Daemon, absent_users, free_port, wait_for, write_config
from masq.policy import greylist_state
from postfix_peer import PostfixMaster

absent_users("mqgrey")
pytestmark = [pytest.mark.skipif(not os.path.exists("/usr/lib/postfix/sbin/master")
                                 or not shutil.which("postfix"),
                                 reason="postfix is not installed"),
              pytest.mark.skipif(os.geteuid() != 0, reason="postfix's master needs root")]


def test_postfix_retries_after_the_greylist_delay_and_the_message_arrives(tmp_path):
    port = free_port()
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=(
        "\tlist listen 'smtp://127.0.0.1:%d'\n"
        "\tlist relay_net '10.255.255.0/24'\n"        # loopback is a stranger here
        "\tlist local_users 'mqgrey'\n"
        "\toption greylist '1'\n\toption greylist_delay '3s'\n" % port))
    mbox = tmp_path / "mail" / "mqgrey"
    daemon = Daemon(conf, wait_port=port).start()
    try:
        with PostfixMaster(port, minimal_backoff_time="1s", maximal_backoff_time="2s",
                           queue_run_delay="1s") as postfix:
            done = postfix.sendmail("sender@postfix.test.example", ["mqgrey@test.example"],
                                    b"Subject: greylisted\n\nlet me in\n")
            assert done.returncode == 0, done.stderr
            arrived = wait_for(lambda: mbox.exists() and len(mailbox.mbox(str(mbox))), 120)
            postfix_log = postfix.log()
    finally:
        log = daemon.stop()
    assert arrived == 1, (log, postfix_log)
    [msg] = mailbox.mbox(str(mbox))
    assert msg["Subject"] == "greylisted" and "let me in" in msg.get_payload()
    grey = log.index("greylisted: client=127.0.0.1 from=<sender@postfix.test.example> "
                     "to=<mqgrey@test.example>")
    assert grey < log.index("from=<sender@postfix.test.example>, size=")   # 450, then 250
    assert "450 4.7.1" in postfix_log and "status=deferred" in postfix_log
    assert "status=sent" in postfix_log
    state = greylist_state.State(str(tmp_path / "spool" / greylist_state.NAME), 10)
    state.load()                                    # saved when the daemon stopped
    assert [v & 1 for v in state.triplets.values()] == [1]
