"""Smarthosts named in the hosts file (issue 11 case 8), end to end: the names resolve from
`option hosts_file` before DNS (here a name server that answers nothing), as the router's
C library does, and mail reaches an aiosmtpd sink through them."""

import json

import pytest

from helpers import free_port, masq, write_config
from sinks import Sink


@pytest.mark.parametrize("name", ["localhost", "relay.hosts.test"])
def test_smarthost_named_in_the_hosts_file_delivers(tmp_path, name):
    port = free_port()
    hosts = tmp_path / "hosts"
    hosts.write_text("# a test hosts file\n127.0.0.1 localhost\n127.0.0.1 relay.hosts.test relay\n")
    extra = ("\toption hosts_file '%s'\n\toption dns_server '127.0.0.1:%d'\n"
             % (hosts, free_port()))                 # DNS: nothing listens there
    routes = ("config route 'isp'\n\toption smarthost '%s:%d'\n\toption tls 'none'\n"
              % (name, port))
    conf = write_config(str(tmp_path / "masq.conf"), str(tmp_path / "spool"), extra=extra,
                        routes=routes)
    with Sink(port) as sink:
        done = masq("-C", conf, "-f", "writer@test.example", "far@example.org",
                    input=b"Subject: via hosts\n\nhello\n")
        assert done.returncode == 0, done.stderr
        [(sender, rcpts, text)] = sink.wait(1)
    assert rcpts == ["far@example.org"] and b"via hosts" in text
    assert json.loads(masq("status", "--json", "-C", conf).stdout)["queue"] == []
