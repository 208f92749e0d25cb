"""A `config user` section without a password is no SMTP AUTH account: it may only give a
local user a mailbox (`option mailbox`, as `masq import-masqmail` writes for masqmail's
mbox_users/mda_users). A listener whose users all lack a password offered AUTH anyway
(every attempt then failed); it must not offer it at all."""

import smtplib

from helpers import Daemon, free_port, write_config


def test_users_without_password_do_not_make_the_listener_offer_auth(tmp_path):
    port = free_port()
    users = ("config user 'bob'\n\toption mailbox 'mbox:%s/mail/%%u'\n" % tmp_path)
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=(
        "\tlist listen 'smtp://127.0.0.1:%d?auth=plain'\n" % port), routes=users)
    daemon = Daemon(conf, wait_port=port).start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
            code, _ = client.ehlo("client.example")
            assert code == 250
            assert not client.has_extn("auth")
            assert client.has_extn("size")          # the EHLO reply was read whole
    finally:
        daemon.stop()
