"""`sendmail` pokes a running daemon and leaves without waiting for it (issue 10, "A fast
sendmail"): the message is synced before the poke, so an answer would add nothing but the
daemon's latency (and a hung daemon held every `sendmail` for the 5 s timeout of the
control socket's request it used to make).

The poke is a byte written to the spool's `pickup` FIFO (masq.base.control); opening it
fails when no daemon holds it open, and that is how `sendmail` knows that none runs. Here
the "daemon" is the test holding the FIFO open, reading only after `sendmail` has exited;
then a real daemon takes the messages of pokes whose writers have left.
"""

import os

from helpers import Daemon, free_port, masq, status, write_config


def submit(conf, *args):
    return masq("-C", conf, "-t", "-oi", "-v", *args,
                input=b"To: a@example.org\nSubject: x\n\nhi\n", text=False)


def queue_only(tmp_path):
    spool = tmp_path / "spool"
    conf = write_config(str(tmp_path / "masq.conf"), str(spool),
                        extra="\toption do_queue '1'\n")
    spool.mkdir()
    return conf, str(spool / "pickup")


def test_sendmail_pokes_and_does_not_wait_for_the_daemon(tmp_path):
    conf, pickup = queue_only(tmp_path)
    os.mkfifo(pickup, 0o622)
    reader = os.open(pickup, os.O_RDONLY | os.O_NONBLOCK)    # a daemon that reads later
    try:
        done = submit(conf)
        assert done.returncode == 0, done.stderr
        assert b"queued for a@example.org\n" in done.stderr, done.stderr   # a daemon runs
        assert os.read(reader, 64) == b"n"
    finally:
        os.close(reader)


def test_a_pickup_nobody_reads_means_no_daemon(tmp_path):
    conf, pickup = queue_only(tmp_path)
    os.mkfifo(pickup, 0o622)                   # left by a daemon that died
    done = submit(conf)
    assert done.returncode == 0 and b"(queued only: no daemon runs)" in done.stderr


def test_a_pickup_that_is_no_fifo_is_not_written(tmp_path):
    conf, pickup = queue_only(tmp_path)
    with open(pickup, "wb"):
        pass
    done = submit(conf)
    assert done.returncode == 0 and b"(queued only: no daemon runs)" in done.stderr
    assert os.path.getsize(pickup) == 0


def test_a_daemon_takes_the_messages_of_pokes_whose_writers_left(tmp_path):
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n\toption do_queue '1'\n"
                        % free_port())
    daemon = Daemon(conf).start()
    try:
        for _ in range(3):
            done = submit(conf)
            assert done.returncode == 0 and b"no daemon" not in done.stderr, done.stderr
        doc = status(conf)          # asked after the pokes: answered after they were read
    finally:
        daemon.stop()
    assert doc["counters"]["accepted"] == 3 and len(doc["queue"]) == 3
    assert not os.path.exists(str(tmp_path / "spool" / "pickup"))    # gone with the daemon
