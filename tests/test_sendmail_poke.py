"""`sendmail` pokes a running daemon and leaves without waiting for its answer (issue 10,
"A fast sendmail"): the message is synced before the poke, so the answer adds nothing but
the daemon's latency (and a hung daemon held every `sendmail` for the 5 s timeout).

The "daemon" here is a Unix socket at the spool's control.sock that takes connections
(the kernel's backlog) but answers nothing until sendmail has exited; then it reads what
sendmail sent. A daemon that handles the poke after sendmail has gone must not be hurt by
the closed connection: a real one then answers the next request (`masq status`).
"""

import socket

from helpers import Daemon, free_port, masq, status, write_config


def submit(conf, *args):
    return masq("-C", conf, "-t", "-oi", "-v", *args,
                input=b"To: a@example.org\nSubject: x\n\nhi\n", text=False)


def test_sendmail_does_not_wait_for_the_daemons_answer(tmp_path):
    spool = tmp_path / "spool"
    conf = write_config(str(tmp_path / "masq.conf"), str(spool),
                        extra="\toption do_queue '1'\n")
    spool.mkdir()
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        silent.bind(str(spool / "control.sock"))
        silent.listen(8)
        done = submit(conf)
        assert done.returncode == 0, done.stderr
        # it took the connection for a running daemon, and did not wait for it to answer
        assert b"queued for a@example.org\n" in done.stderr, done.stderr
        assert b"no daemon" not in done.stderr
        conn, _ = silent.accept()
        with conn:
            conn.settimeout(30)
            assert conn.recv(1024) == b'{"cmd":"new"}\n'
    finally:
        silent.close()


def test_a_daemon_poked_by_a_sendmail_that_left_takes_the_message(tmp_path):
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"),
                        extra="\tlist listen 'smtp://127.0.0.1:%d'\n\toption do_queue '1'\n"
                        % free_port())
    daemon = Daemon(conf).start()
    try:
        for _ in range(3):
            done = submit(conf)
            assert done.returncode == 0 and b"no daemon" not in done.stderr, done.stderr
        doc = status(conf)          # asked after the pokes: answered after them
    finally:
        daemon.stop()
    assert doc["counters"]["accepted"] == 3 and len(doc["queue"]) == 3
