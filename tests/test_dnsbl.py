"""DNS lists, HELO and sender checks against real peers: dnsmasq serves the test lists
(`2.0.0.127.bl.test` A 127.0.0.2 with a TXT record ...) on a loopback port, swaks speaks
from loopback source addresses (127.0.0.2, 127.0.0.3 ...: all of 127/8 is the loopback
interface's) and from ::1, and a raw socket talks before the greeting.

The lists: `bl.test=127.0.0.[2..11]*2`, `small.test*1`, allow list `wl.test`,
threshold 2. Clients: 127.0.0.2 on bl.test (blocked, the TXT in the reply), 127.0.0.3 on
bl.test and wl.test (allowed), 127.0.0.4 on small.test only (score 1: accepted),
127.0.0.5 answered 127.0.0.12 by bl.test (outside its filter: accepted), 127.0.0.6 and
127.0.0.8 on no list, 127.0.0.7 on bl.test but in relay_net, ::1 on bl.test (nibbles).
"""

import subprocess

import pytest

from helpers import Daemon, free_port, wait_for, write_config
from masq.policy.passwords import hash_password
from sinks import Dnsmasq

NIBBLES_1 = ".".join("1" + "0" * 31) + ".bl.test"
TXT = "Listed by bl.test: see http://bl.test/lookup?127.0.0.2"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("dnsbl")
    dns = Dnsmasq(free_port(), query_log=str(base / "queries.log"),
                  mx=[("mx.test", "mail.mx.test", 10), ("nullmx.test", ".", 0)],
                  hosts=[("2.0.0.127.bl.test", "127.0.0.2"), ("3.0.0.127.bl.test", "127.0.0.2"),
                         ("3.0.0.127.wl.test", "127.0.0.2"), ("4.0.0.127.small.test", "127.0.0.2"),
                         ("5.0.0.127.bl.test", "127.0.0.12"), ("7.0.0.127.bl.test", "127.0.0.2"),
                         (NIBBLES_1, "127.0.0.2"), ("mail.mx.test", "192.0.2.25"),
                         ("aonly.test", "192.0.2.26")],
                  txt=[("2.0.0.127.bl.test", TXT)])
    ports = {"smtp": free_port(), "auth": free_port(), "v6": free_port(), "slow": free_port()}
    extra = ("\toption do_queue '1'\n"
             "\tlist relay_net '127.0.0.7/32'\n"
             "\tlist local_users 'alice'\n"
             "\toption dns_server '127.0.0.1:%d'\n"
             "\tlist dnsbl 'bl.test=127.0.0.[2..11]*2'\n"
             "\tlist dnsbl 'small.test*1'\n"
             "\tlist dnswl 'wl.test'\n"
             "\toption dnsbl_threshold '2'\n"
             "\toption check_helo '1'\n"
             "\toption check_sender_domain '1'\n"
             "\tlist listen 'smtp://127.0.0.1:%d'\n"
             "\tlist listen 'smtp://127.0.0.1:%d?auth=plain'\n"
             "\tlist listen 'smtp://[::1]:%d'\n"
             % (dns.port, ports["smtp"], ports["auth"], ports["v6"]))
    users = "config user 'carol'\n\toption password '%s'\n" % hash_password("s3cret pass")
    conf = write_config(str(base / "masq.conf"), str(base / "spool"), extra=extra,
                        routes=users)
    with dns:
        daemon = Daemon(conf, wait_port=ports["smtp"]).start()
        yield {"ports": ports, "dns": dns, "daemon": daemon, "base": base}
        log = daemon.stop()
    assert "Traceback" not in log and "internal error" not in log, log


def swaks(server, source, to="alice@test.example", sender="bob@mx.test", port="smtp",
          helo="client.example", more=()):
    host = "::1" if port == "v6" else "127.0.0.1"
    args = ["swaks", "--server", host, "--port", str(server["ports"][port]),
            "--local-interface", source, "--helo", helo, "--from", sender, "--to", to,
            "--body", "dnsbl test", "--timeout", "60"] + list(more)
    return subprocess.run(args, capture_output=True, text=True, timeout=120).stdout


def rcpt_reply(out):
    """Return the server's reply line to RCPT TO in a swaks transcript."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "RCPT TO:" in line)
    return next(line for line in lines[at + 1:] if line.startswith("<~") or
                line.startswith("<**") or line.startswith("<-")).lstrip("<*~- ")


def test_a_listed_client_is_refused_with_the_lists_txt(server):
    out = swaks(server, "127.0.0.2")
    assert rcpt_reply(out) == ("554 5.7.1 Service unavailable; client [127.0.0.2] blocked "
                               "using bl.test; " + TXT), out
    assert "queued" not in out
    assert wait_for(lambda: "NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 554 5.7.1 Service "
                    "unavailable; client [127.0.0.2] blocked using bl.test; " + TXT +
                    "; from=<bob@mx.test> to=<alice@test.example> proto=ESMTP "
                    "helo=<client.example>" in server["daemon"].log_so_far())


def test_postmaster_gets_mail_from_a_listed_client(server):
    out = swaks(server, "127.0.0.2", to="postmaster@test.example")
    assert rcpt_reply(out).startswith("250 2.1.5"), out
    assert "250 2.0.0 Message queued" in out


@pytest.mark.parametrize("source,why", [
    ("127.0.0.3", "on the allow list"), ("127.0.0.4", "score 1 < threshold 2"),
    ("127.0.0.5", "answer outside the filter"), ("127.0.0.6", "on no list"),
    ("127.0.0.7", "relay_net")])
def test_clients_below_the_threshold_or_allowed_are_accepted(server, source, why):
    out = swaks(server, source)
    assert "250 2.0.0 Message queued" in out, (why, out)


def test_an_authenticated_client_skips_the_lists(server):
    out = swaks(server, "127.0.0.2", port="auth", to="someone@far.example",
                more=["--auth", "PLAIN", "--auth-user", "carol", "--auth-password",
                      "s3cret pass"])
    assert "235 2.7.0" in out and "250 2.0.0 Message queued" in out, out


def test_ipv6_clients_are_looked_up_by_reversed_nibbles(server):
    out = swaks(server, "::1", port="v6")
    assert rcpt_reply(out).startswith("554 5.7.1 Service unavailable; client [::1] blocked "
                                      "using bl.test"), out


def test_a_second_connection_asks_no_question(server):
    dns = server["dns"]
    assert "250 2.0.0 Message queued" in swaks(server, "127.0.0.6")
    assert wait_for(lambda: dns.queries("6.0.0.127.bl.test") == 1)
    assert "250 2.0.0 Message queued" in swaks(server, "127.0.0.6")
    # dnsmasq logs in order: once the next client's question is in, the second connection
    # would have shown one before it
    assert "250 2.0.0 Message queued" in swaks(server, "127.0.0.8")
    assert wait_for(lambda: dns.queries("8.0.0.127.bl.test") == 1)
    assert dns.queries("6.0.0.127.bl.test") == 1


@pytest.mark.parametrize("helo,why", [
    ("192.0.2.9", "an address must be given in brackets"),
    ("test.example", "that is my name"), ("[127.0.0.1]", "that is my address")])
def test_a_helo_that_is_a_bare_address_or_our_name_is_refused(server, helo, why):
    out = swaks(server, "127.0.0.6", helo=helo)
    assert rcpt_reply(out) == "550 5.7.1 <alice@test.example>: HELO %s refused: %s" % (
        helo, why), out


@pytest.mark.parametrize("sender,expected", [
    ("bob@nx.test", "550 5.1.8 Sender domain nx.test not found (no MX, no address)"),
    ("bob@nullmx.test", "550 5.7.27 Sender domain nullmx.test accepts no mail (null MX)"),
    ("bob@aonly.test", "250 2.1.0"), ("bob@mx.test", "250 2.1.0"), ("<>", "250 2.1.0")])
def test_the_sender_domain_needs_an_mx_or_an_address(server, sender, expected):
    out = swaks(server, "127.0.0.6", sender=sender)
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "MAIL FROM:" in line)
    assert lines[at + 1].lstrip("<*~- ").startswith(expected), out


def test_a_relay_net_client_is_not_checked(server):
    out = swaks(server, "127.0.0.7", helo="192.0.2.9", sender="bob@nx.test")
    assert "250 2.0.0 Message queued" in out, out


def test_an_allow_listed_client_skips_the_helo_and_sender_checks(server):
    out = swaks(server, "127.0.0.3", helo="192.0.2.9", sender="bob@nx.test")
    assert "250 2.0.0 Message queued" in out, out


@pytest.fixture(scope="module")
def greylisting(tmp_path_factory, server):
    """A second daemon with greylisting on, asking the same dnsmasq (allow list wl.test)."""
    base = tmp_path_factory.mktemp("dnswl-greylist")
    port = free_port()
    extra = ("\toption do_queue '1'\n\tlist relay_net '10.0.0.0/8'\n"
             "\tlist local_users 'alice'\n\toption dns_server '127.0.0.1:%d'\n"
             "\tlist dnswl 'wl.test'\n\toption greylist '1'\n"
             "\tlist listen 'smtp://127.0.0.1:%d'\n" % (server["dns"].port, port))
    conf = write_config(str(base / "masq.conf"), str(base / "spool"), extra=extra)
    daemon = Daemon(conf, wait_port=port).start()
    yield {"ports": {"smtp": port}}
    log = daemon.stop()
    assert "Traceback" not in log and "internal error" not in log, log


def test_an_allow_listed_client_is_not_greylisted(greylisting):
    assert "250 2.0.0 Message queued" in swaks(greylisting, "127.0.0.3")
    assert rcpt_reply(swaks(greylisting, "127.0.0.6")).startswith("450 4.7.1"), \
        "a client on no list is greylisted"
