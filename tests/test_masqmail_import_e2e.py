"""An imported masqmail configuration runs: `masq import-masqmail` on a masqmail.conf with
two route files for one connection (`query_routes.lan`, masqmail's file method as
online_query), then `masq daemon` on the result. Mail waits while the online file is
absent; once it names `lan`, each message leaves by the route whose conditions take it,
to two aiosmtpd smarthosts (both routes look for `lan`: `online_name`)."""

from helpers import Daemon, free_port, masq
from sinks import Sink


def test_imported_configuration_delivers_when_the_connection_comes_up(tmp_path):
    hop_a, hop_b, port = free_port(), free_port(), free_port()
    online = tmp_path / "online"
    (tmp_path / "a.route").write_text('allowed_recipients = "*@a.example"\n'
                                      'mail_host = "127.0.0.1:%d"\n' % hop_a)
    (tmp_path / "b.route").write_text('mail_host = "127.0.0.1:%d"\n' % hop_b)
    (tmp_path / "masqmail.conf").write_text(
        'host_name = "mm.test.example"\n'
        'listen_addresses = "127.0.0.1:%d"\n'
        'spool_dir = "%s/mmspool"\n'
        'pid_dir = "%s"\n'
        'log_dir = ""\n'
        'do_queue = true\n'
        'online_query = "/bin/cat %s"\n'
        'query_routes.lan = "%s/a.route;%s/b.route"\n'
        % (port, tmp_path, tmp_path, online, tmp_path, tmp_path))
    conf = tmp_path / "masq.conf"
    done = masq("import-masqmail", str(tmp_path / "masqmail.conf"), "-o", str(conf))
    assert done.returncode == 0, done.stderr
    text = conf.read_text()
    assert "option spool_dir '%s/masq'" % tmp_path in text
    # the test's own status file, not the machine's /var/run
    conf.write_text(text.replace("config masq 'main'\n", "config masq 'main'\n\toption "
                                 "status_file '%s/status.json'\n" % tmp_path, 1))
    with Sink(hop_a) as sink_a, Sink(hop_b) as sink_b:
        daemon = Daemon(str(conf), wait_port=port).start()
        try:
            for rcpt in ("x@a.example", "y@b.example"):
                sent = masq("-C", str(conf), "-f", "alice@mm.test.example", rcpt,
                            input=b"Subject: imported\n\nhello\n")
                assert sent.returncode == 0, sent.stderr
            assert sink_a.messages == [] and sink_b.messages == []
            online.write_text("lan\n")
            got_a, got_b = sink_a.wait(1, timeout=30), sink_b.wait(1, timeout=30)
        finally:
            output = daemon.stop()
    assert [m[1] for m in got_a] == [["x@a.example"]], output
    assert [m[1] for m in got_b] == [["y@b.example"]], output
