"""SMTP delivery agent against real peers on loopback: smtp-sink, aiosmtpd, scripted sockets.

Each docs/FAULTS.md 4.4 row 62-70 has a test named after it. A real masq.base.loop.Loop runs until
every job has reported; a fake resolver answers from tables; timeouts are shortened.
"""

import ast
import base64
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

import pytest

from helpers import free_port, wait_port
from masq.base.loop import Loop
from masq.outbound import tls as tls_contexts
from masq.outbound.job import Job
from masq.outbound.outcome import OK, PERMFAIL, TEMPFAIL
from masq.outbound.smtp import SMTPAgent, SMTPSettings, split_host_port

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
from aiosmtpd.smtp import AuthResult  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINK = "/usr/sbin/smtp-sink"
# Bounds on peers that answer (a loaded machine can be slow); a test of a timeout sets
# its own short one for the stage it stalls.
TIMEOUTS = {"connect": 30.0, "greeting": 30.0, "command": 30.0, "mail": 30.0, "rcpt": 30.0,
        "data": 30.0, "block": 30.0, "final": 30.0, "quit": 1.0}
BODY = b"Subject: test\r\n\r\nhello\r\n.dot line\r\n..two dots\r\n"


# Plumbing: resolver, jobs, running the loop


class FakeResolver:
    """Canned DNS answers, delivered in the next loop turn like a real resolver's."""

    def __init__(self, mx=None, hosts=None):
        self.mx, self.hosts, self.loop, self.asked = mx or {}, hosts or {}, None, []

    def resolve_mx(self, domain, callback):
        self.asked.append(domain)
        result = self.mx.get(domain) or dns_error(False, "5.1.2", "NXDOMAIN " + domain)
        self.loop.call_soon(lambda: callback(result))

    def resolve_host(self, name, callback):
        self.asked.append(name)
        result = self.hosts.get(name) or dns_error(False, "5.1.2", "NXDOMAIN " + name)
        self.loop.call_soon(lambda: callback(result))


def mx(*hosts):
    return SimpleNamespace(error=None, hosts=list(hosts))


def addresses(*ips):
    return SimpleNamespace(error=None, addresses=list(ips))


def dns_error(temporary, status, text):
    error = SimpleNamespace(temporary=temporary, status=status, text=text)
    return SimpleNamespace(error=error, hosts=[], addresses=[])


def job(*recipients, body=BODY, sender="a@me.example", **kw):
    return Job("id-" + (recipients[0] if recipients else ""), sender,
               recipients or ("b@dest.example",), lambda: iter([body]), size=len(body), **kw)


def deliver(jobs, resolver=None, timeout=120, **settings):
    """Run an SMTPAgent in a real loop until every job reported; return their outcomes."""
    if not isinstance(jobs, list):
        return deliver([jobs], resolver, timeout, **settings)[0]
    settings.setdefault("timeouts", TIMEOUTS)
    settings.setdefault("helo", "client.example")
    resolver = resolver or FakeResolver()
    loop = Loop()
    resolver.loop = loop
    results = {}
    agent = SMTPAgent(loop, SMTPSettings(**settings), resolver)
    agent.deliver_many(jobs, lambda j, outcomes: results.__setitem__(id(j), outcomes))
    try:
        assert loop.run_until(lambda: len(results) == len(jobs), timeout), \
            "agent did not finish"
        loop.run_until(lambda: not loop.selector.get_map(), 2)      # QUIT, close
    finally:
        loop.close()
    return [results[id(j)] for j in jobs]


def kinds(outcomes):
    return [o.kind for o in outcomes]


# smtp-sink


@pytest.fixture
def sink():
    """Start smtp-sink processes: sink(*options, ip=, port=) -> namespace(port, dump)."""
    if not os.access(SINK, os.X_OK):
        pytest.skip("smtp-sink missing (tools/install-test-deps installs postfix)")
    procs, top = [], pathlib.Path(tempfile.mkdtemp(prefix="masq-sink-"))
    os.chmod(top, 0o755)                        # smtp-sink may run as nobody

    def start(*options, ip="127.0.0.1", port=None):
        port = port or free_port()
        dump = top / ("dump-%s-%d" % (ip, port))
        dump.mkdir()
        os.chmod(dump, 0o777)
        argv = [SINK] + (["-u", "nobody"] if os.geteuid() == 0 else [])
        argv += ["-d", str(dump) + "/"] + list(options) + ["%s:%d" % (ip, port), "16"]
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_port(port, ip, proc=procs[-1])
        return SimpleNamespace(port=port, ip=ip, dump=dump)

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
    shutil.rmtree(top, ignore_errors=True)


def dumped(server):
    """Return the messages smtp-sink captured, as text."""
    time.sleep(0.05)
    return [p.read_text(errors="replace") for p in sorted(server.dump.iterdir())]


# aiosmtpd


class Recorder:
    """aiosmtpd handler: records messages and sessions, answers RCPT from a table."""

    def __init__(self, rcpt_replies=None):
        self.rcpt_replies = rcpt_replies or {}
        self.messages, self.logins = [], []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(SimpleNamespace(
            sender=envelope.mail_from, rcpts=list(envelope.rcpt_tos),
            content=envelope.original_content or envelope.content, session=id(session),
            tls=session.ssl is not None, auth=session.authenticated))
        return "250 2.0.0 accepted"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((mechanism, auth_data.login, auth_data.password))
        ok = (auth_data.login, auth_data.password) == (b"user", b"secret")
        return AuthResult(success=ok)


@pytest.fixture
def aiosmtp():
    """Start aiosmtpd servers: aiosmtp(recorder, **SMTP kwargs) -> port."""
    controllers = []

    def start(recorder, **kw):
        port = free_port()
        kw.setdefault("auth_require_tls", False)
        controller = aiosmtpd_controller.Controller(
            recorder, hostname="127.0.0.1", port=port, authenticator=recorder.authenticate,
            **kw)
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Make a CA, a CA-signed localhost cert, a self-signed one, an expired one, another CA."""
    if not shutil.which("openssl"):
        pytest.skip("openssl missing")
    d = tmp_path_factory.mktemp("certs")
    san = d / "san.ext"
    san.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        run("req", "-x509", *key, "-subj", "/CN=%s" % ca, "-days", "2",
            "-keyout", ca + ".key", "-out", ca + ".pem")
    run("req", *key, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    run("req", "-x509", *key, "-subj", "/CN=localhost", "-days", "2",
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout", "self.key", "-out", "self.pem")
    run("x509", "-req", "-in", "server.csr", "-signkey", "server.key", "-days", "-1",
        "-extfile", "san.ext", "-out", "expired.pem")
    return SimpleNamespace(**{name: str(d / (name + ".pem"))
                              for name in ("ca", "other-ca", "server", "self", "expired")},
                           dir=d)


def server_context(certs, cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, os.path.join(certs.dir, key))
    return context


# Scripted peers for what real servers will not do on request


class ScriptServer:
    """A TCP listener in a thread; `script(peer, n)` plays connection number n."""

    def __init__(self, script):
        self.script, self.commands, self.connections = script, [], 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            peer = Peer(conn, self)
            try:
                self.script(peer, self.connections)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self):
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


class Peer:
    """One scripted connection: readline() records commands; send() writes bytes."""

    def __init__(self, conn, server):
        self.conn, self.server, self.buf = conn, server, b""
        conn.settimeout(5)

    def send(self, data):
        self.conn.sendall(data)

    def readline(self):
        while b"\n" not in self.buf:
            data = self.conn.recv(65536)
            if not data:
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        self.server.commands.append(line.rstrip(b"\r"))
        return line.rstrip(b"\r")


def play(peer, ehlo=(b"PIPELINING",), on=None):
    """Play a plain SMTP server; on = {VERB: function(peer, line)}, False ends the session."""
    peer.send(b"220 script ESMTP\r\n")
    while True:
        line = peer.readline()
        if line is None:
            return
        verb = line.split(b":")[0].split(b" ")[0].upper()
        if on and verb in on:
            if on[verb](peer, line) is False:
                return
        elif verb == b"EHLO":
            lines = (b"script",) + tuple(ehlo)
            peer.send(b"".join(b"250-" + e + b"\r\n" for e in lines[:-1])
                      + b"250 " + lines[-1] + b"\r\n")
        elif verb == b"DATA":
            peer.send(b"354 go\r\n")
            while peer.readline() not in (b".", None):
                pass
            peer.send(b"250 2.0.0 taken\r\n")
        elif verb == b"QUIT":
            return peer.send(b"221 bye\r\n")
        else:
            peer.send(b"250 ok\r\n")


@pytest.fixture
def script():
    servers = []

    def start(function):
        servers.append(ScriptServer(function))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def verbs(server):
    return [c.split(b" ")[0].split(b":")[0].upper() for c in server.commands]


# Delivery that works


def test_smarthost_delivery_to_smtp_sink_with_pipelining_and_dot_stuffing(sink):
    server = sink()
    outcomes = deliver(job("b@dest.example", "c@dest.example", body8bit=True),
                       smarthost="127.0.0.1:%d" % server.port, tls="none")
    assert kinds(outcomes) == [OK, OK] and outcomes[0].status == "2.0.0", outcomes
    [message] = dumped(server)
    assert "X-Mail-Args: <a@me.example> BODY=8BITMIME" in message
    assert "X-Rcpt-Args: <b@dest.example>" in message and "X-Helo-Args: client.example" in message
    assert message.endswith("hello\n.dot line\n..two dots\n\n")


def test_several_jobs_share_one_connection_with_rset_between(aiosmtp):
    recorder = Recorder()
    port = aiosmtp(recorder)
    jobs = [job("b%d@dest.example" % i, body=BODY + b"%d\r\n" % i) for i in range(3)]
    results = deliver(jobs, smarthost="127.0.0.1:%d" % port, tls="none")
    assert [kinds(r) for r in results] == [[OK]] * 3
    assert [m.rcpts for m in recorder.messages] == [["b0@dest.example"], ["b1@dest.example"],
                                                     ["b2@dest.example"]]
    assert len({m.session for m in recorder.messages}) == 1


def test_mx_delivery_groups_recipients_by_domain(aiosmtp):
    recorder = Recorder()
    port = aiosmtp(recorder)
    resolver = FakeResolver(mx={"one.example": mx(("mx.one.example", ["127.0.0.1"])),
                                "two.example": mx(("mx.two.example", ["127.0.0.1"]))})
    outcomes = deliver(job("b@one.example", "c@two.example", "d@One.Example"), resolver,
                       port=port, tls="none")
    assert kinds(outcomes) == [OK, OK, OK]
    assert sorted(m.rcpts for m in recorder.messages) == [["b@one.example", "d@One.Example"],
                                                          ["c@two.example"]]
    assert sorted(resolver.asked) == ["one.example", "two.example"]


def test_domain_literal_recipients_need_no_resolver(aiosmtp):
    recorder = Recorder()
    port = aiosmtp(recorder)
    resolver = FakeResolver()
    outcomes = deliver(job("b@[127.0.0.1]", "c@[IPv6:::1]"), resolver, port=port, tls="none",
                       timeouts=dict(TIMEOUTS, connect=0.5))
    assert kinds(outcomes)[0] == OK and resolver.asked == []
    assert recorder.messages[0].rcpts == ["b@[127.0.0.1]"]


def test_smarthost_name_is_resolved_and_the_port_comes_from_it(aiosmtp):
    recorder = Recorder()
    port = aiosmtp(recorder)
    resolver = FakeResolver(hosts={"relay.example": addresses("127.0.0.1")})
    outcomes = deliver(job(), resolver, smarthost="relay.example:%d" % port, tls="none")
    assert kinds(outcomes) == [OK] and resolver.asked == ["relay.example"]


def test_starttls_with_auth_plain_under_tls(aiosmtp, certs):
    recorder = Recorder()
    port = aiosmtp(recorder, tls_context=server_context(certs, certs.server, "server.key"),
                   require_starttls=True, auth_require_tls=True)
    resolver = FakeResolver(hosts={"localhost": addresses("127.0.0.1")})
    outcomes = deliver(job(), resolver, smarthost="localhost:%d" % port, tls="starttls",
                       tls_ca=certs.ca, auth_user="user", auth_pass="secret")
    assert kinds(outcomes) == [OK]
    assert recorder.logins == [("PLAIN", b"user", b"secret")]
    assert recorder.messages[0].tls and recorder.messages[0].auth


def test_wrong_password_defers_and_tls_none_allows_plain_on_a_plain_link(script):
    server = script(lambda peer, n: play(peer, ehlo=(b"AUTH PLAIN LOGIN",), on={
        b"AUTH": lambda peer, line: peer.send(b"535 5.7.8 bad credentials\r\n")}))
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % server.port, tls="none",
                       auth_user="user", auth_pass="wrong")
    assert kinds(outcomes) == [TEMPFAIL] and "authentication failed" in outcomes[0].text
    assert outcomes[0].status == "4.7.8" and verbs(server) == [b"EHLO", b"AUTH", b"QUIT"]
    assert server.commands[1].startswith(b"AUTH PLAIN ")


def test_implicit_tls(aiosmtp, certs):
    recorder = Recorder()
    port = aiosmtp(recorder, ssl_context=server_context(certs, certs.server, "server.key"))
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % port, tls="tls", tls_ca=certs.ca,
                       auth_user="user", auth_pass="secret")
    assert kinds(outcomes) == [OK] and recorder.messages[0].auth
    assert recorder.logins[0][0] == "PLAIN"


def test_wrapper_speaks_smtp_through_openssl_s_client(aiosmtp, certs):
    if not shutil.which("openssl"):
        pytest.skip("openssl missing")
    recorder = Recorder()
    port = aiosmtp(recorder, ssl_context=server_context(certs, certs.server, "server.key"))
    wrapper = "openssl s_client -quiet -verify_return_error -CAfile %s -connect 127.0.0.1:%d" % (
        certs.ca, port)
    outcomes = deliver(job(), wrapper=wrapper, tls="tls", auth_user="user",
                       auth_pass="secret")
    assert kinds(outcomes) == [OK] and recorder.messages[0].auth


def test_wrapper_that_cannot_run_defers():
    outcomes = deliver(job(), wrapper="/nonexistent/wrapper --flag", tls="none")
    assert kinds(outcomes) == [TEMPFAIL] and "wrapper" in outcomes[0].text


def test_size_over_the_servers_limit_bounces_without_sending(aiosmtp):
    recorder = Recorder()
    port = aiosmtp(recorder, data_size_limit=20)
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % port, tls="none")
    assert kinds(outcomes) == [PERMFAIL] and outcomes[0].status == "5.3.4"
    assert recorder.messages == []


def test_smtputf8_needed_but_not_offered_bounces_5_6_7(sink):
    server = sink()
    outcomes = deliver(job("ü@dest.example"), smarthost="127.0.0.1:%d" % server.port,
                       tls="none")
    assert kinds(outcomes) == [PERMFAIL] and outcomes[0].status == "5.6.7"


def test_dsn_parameters_reach_a_server_that_offers_dsn(sink):
    server = sink()
    outcomes = deliver(job("b@dest.example", envid="env 1", ret="HDRS",
                           notify=[("SUCCESS", "DELAY")], orcpt=[("rfc822", "b@dest.example")]),
                       smarthost="127.0.0.1:%d" % server.port, tls="none")
    assert kinds(outcomes) == [OK]
    [message] = dumped(server)
    assert "RET=HDRS ENVID=env+201" in message
    assert "X-Rcpt-Args: <b@dest.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b@dest.example" \
        in message


def test_dns_failures_map_to_temp_and_perm():
    resolver = FakeResolver(mx={"slow.example": dns_error(True, "4.4.3", "SERVFAIL"),
                                "empty.example": mx(("mx.empty.example", []))})
    outcomes = deliver(job("b@slow.example", "c@gone.example", "d@empty.example", "nodomain"),
                       resolver, tls="none")
    assert kinds(outcomes) == [TEMPFAIL, PERMFAIL, TEMPFAIL, PERMFAIL]
    assert outcomes[0].status == "4.4.3" and "SERVFAIL" in outcomes[0].text


def test_connect_error_fail_bounces_when_nothing_answers():
    port = free_port()
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % port, tls="none")
    assert kinds(outcomes) == [TEMPFAIL] and outcomes[0].status == "4.4.1"
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % port, tls="none",
                       connect_error_fail=True)
    assert kinds(outcomes) == [PERMFAIL]


def test_settings_from_a_route_section():
    from masq.config import schema as config
    route = SimpleNamespace(smarthost="[::1]:2525", port=25, tls="tls", tls_verify=True,
                            tls_ca=None, auth_user="u", auth_pass="p", helo=None,
                            wrapper=None, connect_error_fail=False, timeout=60.0,
                            is_set=lambda name: name == "timeout")
    settings = SMTPSettings.from_route(route, hostname="router.lan")
    assert settings.port == 465 and settings.helo == "router.lan"
    assert settings.timeouts["final"] == 60.0 and settings.timeouts["connect"] == 30.0
    assert split_host_port(settings.smarthost, 25) == ("::1", 2525)
    assert split_host_port("mail.example", 587) == ("mail.example", 587)
    assert SMTPSettings(helo="192.0.2.1").helo == "[192.0.2.1]"
    assert {"smarthost", "tls", "tls_verify", "tls_ca", "auth_user", "auth_pass", "helo",
            "wrapper", "timeout", "port"} <= set(config.SCHEMA["route"])
    with pytest.raises(TypeError):
        SMTPSettings(smarthost_typo="x")


# docs/FAULTS.md 4.4


def test_fault_62_drop_mid_data_defers_and_nothing_is_delivered(script):
    def drop_in_data(peer, n):
        def data(peer, line):
            peer.send(b"354 go\r\n")
            peer.conn.recv(1000)
            return False                            # close with the text half sent
        play(peer, on={b"DATA": data})

    server = script(drop_in_data)
    # 15 MB: more than the client's socket send buffer (at most 4 MB on Linux) and the
    # server's unread receive window together, so the client cannot have handed the whole
    # text and the final dot to the kernel before the server's close resets the connection
    big = b"".join(b"%07d " % i + b"x" * 90 + b"\r\n" for i in range(150000))
    outcomes = deliver(job("b@dest.example", "c@dest.example", body=BODY + big),
                       smarthost="127.0.0.1:%d" % server.port, tls="none")
    assert kinds(outcomes) == [TEMPFAIL, TEMPFAIL]
    assert outcomes[0].status.startswith("4.") and "not delivered" in outcomes[0].text


def test_fault_62_smtp_sink_aborting_after_354_defers(sink):
    server = sink("-A", "0")
    big = b"".join(b"%07d " % i + b"y" * 90 + b"\r\n" for i in range(40000))
    outcomes = deliver(job(body=BODY + big), smarthost="127.0.0.1:%d" % server.port,
                       tls="none")
    assert kinds(outcomes) == [TEMPFAIL] and dumped(server) == []


def test_fault_63_drop_after_the_final_dot_defers_with_a_duplicate_warning(sink):
    server = sink("-q", ".")
    outcomes = deliver(job("b@dest.example", "c@dest.example"),
                       smarthost="127.0.0.1:%d" % server.port, tls="none")
    assert kinds(outcomes) == [TEMPFAIL, TEMPFAIL]
    assert "may have been delivered" in outcomes[0].text
    assert "delivered twice" in outcomes[1].text


def test_fault_64_per_recipient_mix(aiosmtp):
    recorder = Recorder({"c@dest.example": "450 4.2.1 try again later",
                         "d@dest.example": "550 5.1.1 no such user"})
    port = aiosmtp(recorder)
    outcomes = deliver(job("b@dest.example", "c@dest.example", "d@dest.example"),
                       smarthost="127.0.0.1:%d" % port, tls="none")
    assert kinds(outcomes) == [OK, TEMPFAIL, PERMFAIL]
    assert [o.status for o in outcomes] == ["2.0.0", "4.2.1", "5.1.1"]
    assert "no such user" in outcomes[2].text and "RCPT" in outcomes[2].text
    assert [m.rcpts for m in recorder.messages] == [["b@dest.example"]]


@pytest.mark.parametrize("option, command, expected", [
    ("-Q", "CONNECT", TEMPFAIL),    # 421 greeting
    ("-r", "CONNECT", TEMPFAIL),    # 4xx greeting
    ("-f", "CONNECT", TEMPFAIL),    # 5xx greeting: treated as 4xx, next MX
    ("-Q", "MAIL", TEMPFAIL),
    ("-r", "MAIL", TEMPFAIL),
    ("-f", "MAIL", PERMFAIL),
    ("-r", "DATA", TEMPFAIL),
    ("-f", "DATA", PERMFAIL),
    ("-r", ".", TEMPFAIL),
    ("-f", ".", PERMFAIL),
    ("-Q", ".", TEMPFAIL),
])
def test_fault_65_replies_at_each_stage(sink, option, command, expected):
    server = sink(option, command)
    outcomes = deliver(job("b@dest.example", "c@dest.example"),
                       smarthost="127.0.0.1:%d" % server.port, tls="none")
    assert kinds(outcomes) == [expected, expected]
    assert outcomes[0].status[0] == ("4" if expected == TEMPFAIL else "5")


def test_fault_65_next_mx_after_refused_connect_and_421_greeting(sink):
    port = free_port()
    busy = sink("-Q", "CONNECT", ip="127.0.0.2", port=port)
    good = sink(ip="127.0.0.1", port=port)
    resolver = FakeResolver(mx={"dest.example": mx(("mx1.dest.example", ["127.0.0.3"]),
                                                   ("mx2.dest.example", ["127.0.0.2"]),
                                                   ("mx3.dest.example", ["127.0.0.1"]))})
    outcomes = deliver(job(), resolver, port=port, tls="none")
    assert kinds(outcomes) == [OK]
    assert len(dumped(good)) == 1 and dumped(busy) == []


def test_fault_65_all_mx_refuse_defers_with_the_last_error(sink):
    port = free_port()
    sink("-Q", "CONNECT", ip="127.0.0.2", port=port)
    resolver = FakeResolver(mx={"dest.example": mx(("mx1.dest.example", ["127.0.0.3"]),
                                                   ("mx2.dest.example", ["127.0.0.2"]))})
    outcomes = deliver(job(), resolver, port=port, tls="none")
    assert kinds(outcomes) == [TEMPFAIL] and "421" in outcomes[0].text


def test_fault_67_silent_server_times_out(script):
    server = script(lambda peer, n: peer.readline())
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % server.port, tls="none",
                       timeouts=dict(TIMEOUTS, greeting=0.5))
    assert kinds(outcomes) == [TEMPFAIL] and "timeout" in outcomes[0].text


def test_fault_67_slow_drip_greeting_times_out(script):
    def drip(peer, n):
        for byte in b"220 a very slow greeting\r\n":
            if server.stopped.wait(0.15):
                return
            peer.send(bytes([byte]))

    server = script(drip)
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % server.port, tls="none",
                       timeouts=dict(TIMEOUTS, greeting=0.8))
    assert kinds(outcomes) == [TEMPFAIL] and "timeout" in outcomes[0].text


@pytest.mark.parametrize("options, stage, command", [
    (("-p", "-W", "MAIL:5"), "mail", "MAIL"),
    (("-p", "-W", "RCPT:5"), "rcpt", "RCPT"),
    (("-p", "-w", "5"), "data", "DATA"),
    (("-W", ".:5"), "final", "DOT"),
])
def test_fault_67_stalled_replies_time_out(sink, options, stage, command):
    server = sink(*options)
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % server.port, tls="none",
                       timeouts=dict(TIMEOUTS, **{stage: 0.5}))
    assert kinds(outcomes) == [TEMPFAIL] and "reply to " + command in outcomes[0].text


def test_fault_68_starttls_not_offered_defers_without_credentials(script):
    server = script(lambda peer, n: play(peer, ehlo=(b"PIPELINING", b"AUTH PLAIN LOGIN")))
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % server.port, tls="starttls",
                       auth_user="user", auth_pass="secret")
    assert kinds(outcomes) == [TEMPFAIL] and outcomes[0].status.startswith("4.7.")
    assert verbs(server) == [b"EHLO", b"QUIT"]


def test_fault_68_starttls_454_defers_without_fallback(script):
    server = script(lambda peer, n: play(peer, ehlo=(b"STARTTLS", b"AUTH PLAIN"), on={
        b"STARTTLS": lambda peer, line: peer.send(b"454 4.7.0 TLS not available\r\n")}))
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % server.port, tls="starttls",
                       auth_user="user", auth_pass="secret")
    assert kinds(outcomes) == [TEMPFAIL] and outcomes[0].status.startswith("4.7.")
    assert verbs(server) == [b"EHLO", b"STARTTLS", b"QUIT"] and server.connections == 1


def _broken_tls(peer, line):
    peer.send(b"220 2.0.0 go ahead\r\n")
    peer.conn.recv(4096)                        # the ClientHello
    peer.send(b"this is not TLS at all\r\n" * 10)
    return False


def test_fault_68_handshake_failure_defers_without_fallback(script):
    server = script(lambda peer, n: play(peer, ehlo=(b"STARTTLS", b"AUTH PLAIN"),
                                         on={b"STARTTLS": _broken_tls}))
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % server.port, tls="starttls",
                       auth_user="user", auth_pass="secret")
    assert kinds(outcomes) == [TEMPFAIL] and outcomes[0].status == "4.7.5"
    assert server.connections == 1 and b"AUTH" not in verbs(server)


@pytest.mark.parametrize("cert, key, ca, host, why", [
    ("self", "self.key", None, "localhost", "self-signed"),
    ("expired", "server.key", "expired", "localhost", "expired"),
    ("server", "server.key", "ca", "wrong.example", "Hostname mismatch"),
    ("server", "server.key", "other-ca", "localhost", "unable to get local issuer"),
])
def test_fault_69_verification_failure_defers_with_a_clear_text(aiosmtp, certs, cert, key, ca,
                                                                  host, why):
    recorder = Recorder()
    port = aiosmtp(recorder, tls_context=server_context(certs, getattr(certs, cert), key))
    resolver = FakeResolver(hosts={host: addresses("127.0.0.1")})
    outcomes = deliver(job(), resolver, smarthost="%s:%d" % (host, port), tls="starttls",
                       tls_ca=getattr(certs, ca) if ca else None)
    assert kinds(outcomes) == [TEMPFAIL] and outcomes[0].status == "4.7.5"
    assert "not trusted" in outcomes[0].text and why.lower() in outcomes[0].text.lower()
    assert recorder.messages == []


def test_fault_69_trusted_ca_passes_and_verify_off_accepts_self_signed(aiosmtp, certs):
    recorder = Recorder()
    port = aiosmtp(recorder, tls_context=server_context(certs, certs.self, "self.key"))
    assert kinds(deliver(job(), smarthost="127.0.0.1:%d" % port, tls="starttls",
                         tls_ca=certs.self)) == [OK]
    assert kinds(deliver(job(), smarthost="127.0.0.1:%d" % port, tls="starttls",
                         tls_verify=False)) == [OK]
    assert [m.tls for m in recorder.messages] == [True, True]
    assert tls_contexts.context(True, "/nonexistent/ca.pem")[0] is None


def test_fault_70_opportunistic_falls_back_to_plaintext_without_auth(aiosmtp, certs):
    recorder = Recorder()
    port = aiosmtp(recorder, tls_context=server_context(certs, certs.self, "self.key"))
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % port, tls="opportunistic")
    assert kinds(outcomes) == [OK] and recorder.messages[0].tls is False
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % port, tls="opportunistic",
                       auth_user="user", auth_pass="secret")
    assert kinds(outcomes) == [TEMPFAIL] and "credentials" in outcomes[0].text
    assert recorder.logins == [] and len(recorder.messages) == 1


def test_fault_70_broken_handshake_is_retried_in_plaintext_and_never_auth(script):
    server = script(lambda peer, n: play(
        peer, ehlo=(b"STARTTLS", b"AUTH PLAIN LOGIN CRAM-MD5", b"PIPELINING"),
        on={b"STARTTLS": _broken_tls}))
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % server.port, tls="opportunistic",
                       auth_user="user", auth_pass="secret")
    assert kinds(outcomes) == [TEMPFAIL] and server.connections == 2
    assert verbs(server) == [b"EHLO", b"STARTTLS", b"EHLO", b"QUIT"]
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % server.port, tls="opportunistic")
    assert kinds(outcomes) == [OK] and server.connections == 4


def test_plain_link_auth_uses_cram_md5_only(script):
    def cram(peer, line):
        peer.send(b"334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n")
        peer.readline()
        peer.send(b"235 2.7.0 ok\r\n")

    server = script(lambda peer, n: play(peer, ehlo=(b"AUTH PLAIN LOGIN CRAM-MD5",),
                                         on={b"AUTH": cram}))
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % server.port, tls="opportunistic",
                       auth_user="tim", auth_pass="tanstaaftanstaaf")
    assert kinds(outcomes) == [OK]
    assert server.commands[1] == b"AUTH CRAM-MD5"
    assert base64.b64decode(server.commands[2]) == b"tim b913a602c7eda7a495b4e6e7334d3890"


def test_garbage_reply_is_a_temporary_failure(script):
    server = script(lambda peer, n: play(peer, on={
        b"MAIL": lambda peer, line: peer.send(b"2x0 what\r\n")}))
    outcomes = deliver(job(), smarthost="127.0.0.1:%d" % server.port, tls="none")
    assert kinds(outcomes) == [TEMPFAIL] and "protocol error" in outcomes[0].text
    assert outcomes[0].status == "4.5.0" and outcomes[0].text.startswith("[127.0.0.1]: ")


# Runtime rules: python3-light (no idna codec, no email/logging/asyncio...), ssl lazily


LIGHT = '''
import sys
for name in ("email", "logging", "asyncio", "http", "urllib", "xml", "unicodedata", "uuid",
             "smtplib", "stringprep", "encodings.idna"):
    sys.modules[name] = None
from types import SimpleNamespace
from masq.base.loop import Loop
from masq.outbound.job import Job
from masq.outbound.smtp import SMTPAgent, SMTPSettings
assert "ssl" not in sys.modules

class Resolver:
    def resolve_host(self, name, callback):
        answer = SimpleNamespace(error=None, addresses=["127.0.0.1"])
        loop.call_soon(lambda: callback(answer))

loop, out = Loop(), []
settings = SMTPSettings(smarthost="localhost:%d", tls="starttls", tls_ca=%r, helo="me.example")
job = Job("x", "a@me.example", ["b@dest.example"], lambda: iter([b"Subject: x\\r\\n\\r\\nhi\\r\\n"]))
SMTPAgent(loop, settings, Resolver()).deliver(job, out.append)
while not out:
    loop.run_once()
assert out[0][0].kind == "ok", out
print("delivered")
'''


def test_starttls_delivery_with_idna_and_heavy_modules_blocked(aiosmtp, certs):
    recorder = Recorder()
    port = aiosmtp(recorder, tls_context=server_context(certs, certs.server, "server.key"),
                   require_starttls=True)
    done = subprocess.run([sys.executable, "-c", LIGHT % (port, certs.ca)], cwd=ROOT,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"delivered\n" and recorder.messages[0].tls


def test_imports_are_python3_light_only():
    allowed = {"base64", "hmac", "re", "collections", "dataclasses", "os", "shlex", "signal",
               "socket", "errno", "ssl", "selectors", "heapq", "time", "masq"}
    for path in ("masq/proto/smtp_client.py", "masq/outbound/smtp.py", "masq/outbound/tls.py",
                 "masq/base/net.py"):
        tree = ast.parse(open(os.path.join(ROOT, path)).read())
        names = {alias.name.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module.split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.level == 0}
        assert names <= allowed, (path, names - allowed)
        top = {alias.name for node in tree.body if isinstance(node, ast.Import)
               for alias in node.names}
        assert "ssl" not in top, path


# Bare line ends in a queued body (issue 12 case 5): what leaves masq carries CRLF only


def test_a_body_ending_in_a_bare_lf_still_ends_with_crlf_dot_crlf(aiosmtp):
    recorder = Recorder()
    port = aiosmtp(recorder)
    body = b"Subject: bare\r\n\r\none\ntwo\rthree\r\nbefore\r.\rMAIL FROM:<s@bank.example>\n"
    outcomes = deliver(job("b@dest.example", body=body), smarthost="127.0.0.1:%d" % port,
                       tls="none")
    assert kinds(outcomes) == [OK], outcomes
    [message] = recorder.messages
    assert message.content == (b"Subject: bare\r\n\r\none\r\ntwo\r\nthree\r\nbefore\r\n"
                               b".\r\nMAIL FROM:<s@bank.example>\r\n")


def test_bare_line_ends_are_crlf_whatever_the_chunking(aiosmtp):
    recorder = Recorder()
    port = aiosmtp(recorder)
    text = b"a\r\n.b\r\r\n\n.\r.c\rd\n"
    pieces = [text[i:i + 1] for i in range(len(text))]     # every CR and LF split apart
    bare = Job("id-split", "a@me.example", ("b@dest.example",), lambda: iter(pieces),
               size=len(text))
    outcomes = deliver(bare, smarthost="127.0.0.1:%d" % port, tls="none")
    assert kinds(outcomes) == [OK], outcomes
    # the rule of masq.mail.message: a run of CRs before an LF is one line end
    assert recorder.messages[0].content == b"a\r\n.b\r\n\r\n.\r\n.c\r\nd\r\n"


def test_a_hostile_reply_of_100_long_lines_makes_a_bounded_outcome_text(script):
    """Issue 12 case 2's class from the other side: the text of one reply goes into the
    queue's RESULT record, the log, the status page's last deliveries and a bounce."""
    long_reply = b"".join(b"550-5.1.1 " + b"%03d" % i + b"x" * 2000 + b"\r\n"
                          for i in range(99)) + b"550 5.1.1 the end\r\n"

    def refuse_rcpt(peer, n):
        play(peer, on={b"RCPT": lambda peer, line: peer.send(long_reply)})

    server = script(refuse_rcpt)
    [outcome] = deliver(job("b@dest.example"), smarthost="127.0.0.1:%d" % server.port,
                        tls="none")
    assert outcome.kind == PERMFAIL and outcome.status == "5.1.1"
    assert len(outcome.text) <= 1100, len(outcome.text)
    assert "000xxx" in outcome.text and outcome.text.endswith("the end")


def test_smtputf8_needed_and_no_8bitmime_bounces_5_6_7_not_5_6_3(script):
    server = script(lambda peer, n: play(peer))         # neither 8BITMIME nor SMTPUTF8
    body = "Subject: caf\u00e9\r\n\r\nna\u00efve\r\n".encode()
    outcomes = deliver(job("b@dest.example", body=body, smtputf8=True),
                       smarthost="127.0.0.1:%d" % server.port, tls="none")
    assert kinds(outcomes) == [PERMFAIL] and outcomes[0].status == "5.6.7"
    assert b"MAIL" not in verbs(server)
