"""`masq import-masqmail` (issue 14, point 1): masqmail's grammar, the conversion of every
masqmail option and route option, and the corpus in tests/data/masqmail/ (masqmail's
documented examples and the presets' equivalents): each converts, and `masq check-config`
passes the result."""

import os
import shutil

import pytest

from helpers import ROOT, masq
from masq.config import masqmail, schema
from masq.config.uci import ConfigError
from masq.online import probe

CORPUS = os.path.join(ROOT, "tests", "data", "masqmail")
CASES = sorted(name for name in os.listdir(CORPUS)
               if os.path.isdir(os.path.join(CORPUS, name)))


def copy_case(name, tmp_path):
    """Copy corpus folder name into tmp_path with @DIR@ replaced; return its path."""
    folder = tmp_path / name
    shutil.copytree(os.path.join(CORPUS, name), folder)
    for entry in folder.iterdir():
        entry.write_text(entry.read_text().replace("@DIR@", str(folder)))
    return folder


def convert(name, tmp_path):
    """Convert corpus folder name; return (Config, stderr lines, folder)."""
    folder = copy_case(name, tmp_path)
    out = folder / "masq.conf"
    done = masq("import-masqmail", str(folder / "masqmail.conf"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.decode().splitlines()
    assert lines[-1].startswith("masq: wrote %s" % out)
    return schema.load(str(out)), lines[:-1], folder


# the grammar

def test_grammar_reads_quotes_escapes_comments_and_lines():
    text = ('# comment\n'
            'host_name=plain.example   # trailing comment\n'
            '  spaced  =  "quoted # not a comment"\n'
            'escaped = "a \\"b\\" c\\\\d"\n'
            'multi = "one;\n'
            'two"\n'
            'query_routes.my-isp = "/etc/a.route;/etc/b.route"\n'
            'empty =\n')
    settings = masqmail.parse(text, "m.conf")
    assert [(s.name, s.value, s.line) for s in settings] == [
        ("host_name", "plain.example", 2),
        ("spaced", "quoted # not a comment", 3),
        ("escaped", 'a "b" c\\d', 4),
        ("multi", "one;\ntwo", 5),
        ("query_routes.my-isp", "/etc/a.route;/etc/b.route", 7),
        ("empty", "", 8)]
    assert [i for i, _, _ in masqmail.items(settings[3])] == ["one", "two"]


@pytest.mark.parametrize("text, line, words", [
    ("a = 1\nb = two words\n", 2, "b: unexpected 'w'"),
    ("a = 1\n\nmda = /usr/bin/procmail ${x}\n", 3, "double quotes"),
    ("a = 1\nb = \"never\nclosed\n", 2, "never closed"),
    ("a = 1\n= 2\n", 2, "expected an option name"),
    ("x\n", 1, "expected `=`"),
])
def test_grammar_errors_name_file_and_line(text, line, words):
    with pytest.raises(ConfigError) as caught:
        masqmail.parse(text, "/etc/masqmail/masqmail.conf")
    assert caught.value.line == line
    assert str(caught.value).startswith("/etc/masqmail/masqmail.conf:%d: " % line)
    assert words in caught.value.message


@pytest.mark.parametrize("value, expected", [
    ("yes", True), ("On", True), ("TRUE", True), ("yesss", True),
    ("no", False), ("off", False), ("False", False)])
def test_booleans_are_matched_as_masqmail_does(value, expected):
    assert masqmail.boolean(masqmail.Setting("x", value, "f", 1)) is expected


def test_a_bad_boolean_is_an_error_at_its_line():
    with pytest.raises(ConfigError) as caught:
        masqmail.boolean(masqmail.Setting("do_queue", "maybe", "m.conf", 7))
    assert str(caught.value).startswith("m.conf:7: do_queue: expected")


def test_list_files_are_spliced_with_their_own_lines(tmp_path):
    listed = tmp_path / "more"
    listed.write_text("# header\nb@x.example\n\nc@x.example   # boss\n")
    setting = masqmail.Setting("local_addresses", "a@x.example;%s" % listed, "m.conf", 3)
    assert masqmail.spliced(setting) == [("a@x.example", "m.conf", 3),
                                         ("b@x.example", str(listed), 2),
                                         ("c@x.example", str(listed), 4)]
    missing = masqmail.Setting("local_addresses", "/nonexistent/list", "m.conf", 3)
    with pytest.raises(ConfigError) as caught:
        masqmail.spliced(missing)
    assert str(caught.value).startswith("m.conf:3: local_addresses: the list file")


# the corpus: every case converts and passes check-config

@pytest.mark.parametrize("name", CASES)
def test_corpus_converts_and_passes_check_config(name, tmp_path):
    cfg, lines, folder = convert(name, tmp_path)
    for line in lines:
        assert line.startswith("masq: %s" % folder), line      # FILE:LINE: first
    done = masq("-C", str(folder / "masq.conf"), "check-config")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[-1] == "# ok: %s is valid" % (folder / "masq.conf")


def test_every_corpus_folder_is_tested():
    assert len(CASES) >= 14 and "everything" in CASES


# specific mappings

def test_example_conf_routes_detectors_delivery(tmp_path):
    cfg, lines, folder = convert("example", tmp_path)
    main = cfg.main
    assert main.hostname == "striped.patchwork.net"
    assert main.local_domain == ["localhost", "striped", "striped.patchwork.net"]
    assert main.listen == ["smtp://127.0.0.1:25", "smtp://192.168.7.1:25"]
    assert main.mailbox == "mda:/usr/bin/procmail -Y -d %u"
    assert main.warn_intervals == [3600, 4 * 3600, 8 * 3600, 86400, 2 * 86400, 3 * 86400]
    assert main.queue_lifetime == 4 * 86400
    # local_net_route first (always), then the connections' routes in order
    assert [r.name for r in cfg.routes] == ["local", "other_lan", "example", "foobar",
                                            "foobar_2"]
    local, other, example, foo, bar = cfg.routes
    assert local.online == "always" and local.connect_error_fail
    assert local.allowed_recipient == ["*@*.patchwork.net", "*@blue", "*@striped"]
    assert other.smarthost == "gw.other.lan"
    assert example.online == "file:/var/run/masqmail/masqmail-route"
    assert example.allowed_sender == ["okurth"]
    assert example.denied_recipient == ["*@cpwright.com"]
    assert example.smarthost == "mail.isp.com"
    assert example.map_sender == ["okurth: kurth@innominate.de"]
    assert example.map_from == ["okurth: Oliver Kurth <kurth@innominate.de>"]
    assert (example.auth_user, example.auth_pass) == ("yourname", "dontTellAnyBody")
    assert (foo.online_name, bar.online_name) == (None, "foobar")
    assert foo.smarthost == "smtp.foo.example:587" and bar.smarthost is None
    said = "\n".join(lines)
    assert "example.route:13: do_correct_helo: not carried:" in said
    assert main.is_set("caseless_matching") and main.caseless_matching is False


def test_tls_wrappers_become_native_tls(tmp_path):
    cfg, lines, _ = convert("smtps", tmp_path)
    smtps, gnutls = cfg.routes
    assert (smtps.smarthost, smtps.tls, smtps.tls_verify) == ("mail.smtps.example:465",
                                                               "tls", True)
    assert smtps.auth_pass == 'secret with spaces and a "quote"'
    assert (gnutls.smarthost, gnutls.tls) == ("mail.gnutls.example:587", "starttls")
    assert smtps.wrapper is None and gnutls.wrapper is None
    assert lines == []                       # instant_helo belonged to the wrapper
    cfg, lines, _ = convert("openssl", tmp_path)
    (gmx,) = cfg.routes
    assert (gmx.name, gmx.online) == ("gmx", "file:/var/run/masqmail/route")
    assert (gmx.smarthost, gmx.tls) == ("mail.gmx.net:25", "starttls")
    assert gmx.allowed_sender == ["*@gmx.de", "*@gmx.net"]


def test_old_option_names_are_carried(tmp_path):
    cfg, lines, _ = convert("direct", tmp_path)
    argon, gwdg = cfg.routes
    assert argon.online == gwdg.online == "pipe:/usr/local/bin/which-isp"
    assert argon.allowed_sender == ["okurth"]
    assert argon.denied_recipient == ["*@cpwright.com"]
    assert argon.map_sender == argon.map_from == ["*: *@uni-sw.gwdg.de"]
    assert argon.smarthost is None and gwdg.smarthost == "mail.gwdg.de"
    assert cfg.main.local_domain == ["localhost", "sw", "sw.example.de"]
    assert len(lines) == 1 and ":9: remote_port: not carried:" in lines[0]


def test_pipe_route_variables_become_placeholders(tmp_path):
    cfg, lines, _ = convert("uucp", tmp_path)
    (uucp,) = cfg.routes
    assert uucp.pipe == "/usr/bin/uux - -r -z -a%s gateway!rmail (%r)"


def test_mserver_and_pop3_get_files(tmp_path):
    cfg, lines, _ = convert("get", tmp_path)
    (isp,) = cfg.routes
    assert isp.online == "pipe:/usr/bin/mservdetect localhost 224"
    (fetch,) = cfg.fetches
    assert (fetch.server, fetch.user, fetch.password) == ("pop.example.org", "okurth",
                                                           "keepInMind")
    assert (fetch.route, fetch.deliver_to, fetch.keep, fetch.tls) == (
        "isp", "okurth@localhost", False, "none")
    assert fetch.max_size == 50000
    assert any("mserver_iface: masq has no masqdialer client" in line for line in lines)
    cfg, lines, _ = convert("mserver", tmp_path)
    assert cfg.routes[0].online == "pipe:/usr/bin/mservdetect localhost 224"


def test_presets_equivalents(tmp_path):
    cfg, lines, _ = convert("preset-local", tmp_path)
    assert cfg.main.hostname == "router.lan"                 # read from the file it names
    assert cfg.main.caseless_matching is False               # masqmail's default
    assert cfg.main.local_domain == ["localhost", "router", "router.lan"]
    assert cfg.main.mailbox == "mbox:/var/mail/%u" and cfg.routes == []
    cfg, lines, _ = convert("preset-smarthost", tmp_path)
    (route,) = cfg.routes
    assert (route.online, route.smarthost, route.tls) == (
        "always", "smtp.provider.example:587", "starttls")
    assert (route.auth_user, route.auth_pass) == ("alice@provider.example", "s3cret")
    cfg, lines, _ = convert("preset-dialup", tmp_path)
    assert cfg.routes[0].online == "file:/var/run/masqmail-route"
    cfg, lines, _ = convert("preset-mobile", tmp_path)
    assert cfg.routes[0].online == "pipe:/usr/local/bin/lte-online --print mobile"
    assert cfg.routes[0].auth_pass == "pass;word"
    cfg, lines, _ = convert("preset-lan-relay", tmp_path)
    assert cfg.main.listen == ["smtp://127.0.0.1:25", "smtp://192.168.1.1:25"]
    assert any(":5: do_relay: not carried:" in line for line in lines)


# masq option each masqmail option of tests/data/masqmail/everything lands in, when carried
CARRIED = {
    "host_name": ("masq", "hostname"), "local_hosts": ("masq", "local_domain"),
    "listen_addresses": ("masq", "listen"), "use_syslog": ("masq", "log"),
    "debug_level": ("masq", "log_level"), "log_dir": ("masq", "log"),
    "pid_dir": ("masq", "pid_file"), "mail_dir": ("masq", "mailbox"),
    "do_save_envelope_to": ("masq", "do_save_envelope_to"),
    "do_queue": ("masq", "do_queue"), "permanent_routes": ("route", "name"),
    "query_routes.isp": ("route", "name"), "online_query": ("route", "online"),
    "alias_file": ("masq", "alias_file"), "caseless_matching": ("masq", None),
    "mbox_default": ("masq", "mailbox"), "mbox_users": ("masq", None),
    "mda_users": ("user", "mailbox"), "mda": ("user", "mailbox"),
    "warn_intervals": ("masq", "warn_intervals"), "max_defer_time": ("masq",
                                                                     "queue_lifetime"),
    "max_msg_size": ("masq", "max_message_size"), "defer_all": ("masq", "defer_all"),
    "allowed_senders": ("route", "allowed_sender"),
    "denied_senders": ("route", "denied_sender"),
    "allowed_recipients": ("route", "allowed_recipient"),
    "denied_recipients": ("route", "denied_recipient"),
    "allowed_from_hdrs": ("route", "allowed_from"),
    "denied_from_hdrs": ("route", "denied_from"),
    "last_route": ("route", "last_route"), "connect_error_fail": ("route",
                                                                   "connect_error_fail"),
    "mail_host": ("route", "smarthost"), "resolve_list": ("route", None),
    "helo_name": ("route", "helo"), "do_correct_helo": ("route", None),
    "instant_helo": ("route", None), "auth_name": ("route", "auth_user"),
    "auth_login": ("route", "auth_user"), "auth_secret": ("route", "auth_pass"),
    "smtp_port": ("route", "smarthost"), "pipe": ("route", "pipe"),
    "pipe_fromline": ("route", None), "map_h_from_addresses": ("route", "map_from"),
    "map_return_path_addresses": ("route", "map_sender"),
    # options being added for issue 14: said not carried until the schema has them
    "local_addresses": ("masq", "local_addresses"),
    "not_local_addresses": ("masq", "not_local_addresses"),
    "globalias_file": ("masq", "globalias_file"),
    "pipe_fromhack": ("masq", None), "mda_fromline": ("masq", "mda_fromline"),
    "mda_fromhack": ("masq", "mda_fromhack"), "log_user": ("masq", "log_user"),
    "map_h_reply_to_addresses": ("route", "map_reply_to"),
    "map_h_mail_followup_to_addresses": ("route", "map_followup_to"),
    "map_outgoing_addresses": ("route", "map_outgoing"),
}


def test_every_option_is_carried_or_said_not_to_be(tmp_path):
    """Each setting of the `everything` files is either set in the result or named on
    stderr with its file and line; none is dropped silently."""
    cfg, lines, folder = convert("everything", tmp_path)
    said = {line.split(": ", 2)[1] for line in lines}       # FILE:LINE of each line
    sections = {"masq": [cfg.main], "user": list(cfg.users.values()), "route": cfg.routes}
    for name in ("masqmail.conf", "lan.route", "isp.route", "pipe.route"):
        for setting in masqmail.read(str(folder / name)):
            if "%s:%d" % (setting.path, setting.line) in said:
                continue
            assert setting.name in CARRIED, "%s dropped silently" % setting.where()
            kind, option = CARRIED[setting.name]
            if option is not None:
                assert any(option == "name" or s.is_set(option) for s in sections[kind]), \
                    "%s: %s not set" % (setting.where(), option)
    assert cfg.main.local_domain == ["localhost", "all", "all.example.org",
                                     "*.sub.example.org"]
    assert cfg.main.local_addresses == ["alice@isp.example", "bob@isp.example",
                                        "carol@isp.example"]            # a file spliced in
    assert cfg.main.caseless_matching is True                           # `on`
    assert cfg.main.log == "/var/log/masqmail/masq.log"
    assert cfg.main.pid_file == "/var/run/masq.pid"
    assert cfg.main.spool_dir == "/var/spool/masq"
    assert cfg.main.mailbox == "mbox:/var/spool/mail/%u"
    assert cfg.users["alice"].mailbox == "mda:/usr/bin/maildrop -d %u -f %s"
    lan, isp, fax = cfg.routes
    assert isp.smarthost == "smtp.isp.example:25"          # smtp_port is for MX only
    assert isp.allowed_sender == ["*@all.example.org", "alice", "<>"]
    assert (fax.online, fax.online_name) == (isp.online, "isp")
    assert fax.pipe == "/usr/bin/sendfax -d %u -f %s -q %%50"


def test_online_name_lets_routes_share_one_connection(tmp_path):
    """Both routes of query_routes.foobar come online when the online file names foobar."""
    cfg, lines, folder = convert("example", tmp_path)
    online = tmp_path / "route"
    online.write_text("foobar\n")
    foo, bar = cfg.routes[3:]
    for route in (foo, bar):
        assert probe.probe(route.name, "file:%s" % online, route)
    assert not probe.probe(cfg.routes[2].name, "file:%s" % online, cfg.routes[2])
    assert probe.probe(bar.name, "pipe:/bin/echo up foobar", bar)
    assert not probe.probe(bar.name, "pipe:/bin/echo foobar_2x", bar)


# the command

def test_stdout_by_default_and_no_overwrite_without_force(tmp_path):
    folder = copy_case("preset-dialup", tmp_path)
    conf = str(folder / "masqmail.conf")
    done = masq("import-masqmail", conf)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert "config route 'dialup'" in text
    out = folder / "masq.conf"
    out.write_text("# mine\n")
    os.chmod(out, 0o640)
    refused = masq("import-masqmail", conf, "-o", str(out))
    assert refused.returncode == 73
    assert "already exists" in refused.stderr.decode()
    assert out.read_text() == "# mine\n"
    forced = masq("import-masqmail", conf, "-o", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert out.read_text() == text
    assert os.stat(out).st_mode & 0o777 == 0o640                # the file's mode is kept
    fresh = folder / "new.conf"
    assert masq("import-masqmail", conf, "-o", str(fresh)).returncode == 0
    assert os.stat(fresh).st_mode & 0o777 == 0o600              # routes hold passwords


@pytest.mark.parametrize("args, status, words", [
    (["/nonexistent/masqmail.conf"], 66, "/nonexistent/masqmail.conf: cannot read"),
    (["a.conf", "b.conf"], 64, "unexpected 'b.conf'"),
    (["-x"], 64, "unexpected '-x'"),
    (["-C", "/etc/masq.conf"], 64, "-o FILE"),
])
def test_command_errors_are_one_line_and_sysexits(args, status, words):
    done = masq("import-masqmail", *args)
    assert done.returncode == status
    err = done.stderr.decode()
    assert words in err and err.count("\n") == 1


def test_a_syntax_error_names_the_route_file_and_line(tmp_path):
    folder = copy_case("smtps", tmp_path)
    with open(folder / "gnutls.route", "a") as f:
        f.write("helo_name = two words\n")
    done = masq("import-masqmail", str(folder / "masqmail.conf"))
    assert done.returncode == 65
    assert done.stderr.decode().startswith("masq: %s:4: helo_name: unexpected"
                                           % (folder / "gnutls.route"))
    assert done.stdout == b""


def test_a_missing_route_file_is_said_not_carried(tmp_path):
    folder = copy_case("smtps", tmp_path)
    os.unlink(folder / "gnutls.route")
    done = masq("import-masqmail", str(folder / "masqmail.conf"))
    assert done.returncode == 0, done.stderr
    assert ("masqmail.conf:3: permanent_routes: not carried: route file %s"
            % (folder / "gnutls.route")) in done.stderr.decode()
    assert "config route 'smtps'" in done.stdout.decode()


def test_migrating_guide_names_every_option_of_the_corpus():
    """docs/MIGRATING.md walks through every masqmail option: each one the `everything`
    corpus sets (all of masqmail 1.0's) has its row."""
    with open(os.path.join(ROOT, "docs", "MIGRATING.md"), encoding="utf-8") as f:
        guide = f.read()
    folder = os.path.join(CORPUS, "everything")
    names = set()
    for name in os.listdir(folder):
        if name.endswith((".conf", ".route")):
            names |= {s.name for s in masqmail.read(os.path.join(folder, name))}
    names = {n.partition(".")[0] + ".NAME" if "." in n else n for n in names}
    names.discard("no_such_option")
    missing = sorted(n for n in names if "`%s`" % n not in guide)
    assert missing == []


def test_repeated_options_and_query_routes_without_a_query(tmp_path):
    """masqmail uses the last of a repeated option (the earlier ones are said not carried);
    query routes without online_query are used only when asked for (-qo), as in masqmail."""
    (tmp_path / "isp.route").write_text('mail_host = "old.example"\n'
                                        'mail_host = "new.example"\n')
    conf = tmp_path / "masqmail.conf"
    conf.write_text('host_name = a.example\nhost_name = b.example\n'
                    'query_routes.isp = "%s/isp.route"\n' % tmp_path)
    done = masq("import-masqmail", str(conf), "-o", str(tmp_path / "masq.conf"))
    assert done.returncode == 0, done.stderr
    cfg = schema.load(str(tmp_path / "masq.conf"))
    assert cfg.main.hostname == "b.example" and cfg.routes[0].smarthost == "new.example"
    (route,) = cfg.routes
    assert route.online == "file:/var/run/masq/online-route"
    err = done.stderr.decode()
    assert "masqmail.conf:1: host_name: not carried: set again at line 2" in err
    assert "isp.route:1: mail_host: not carried: set again at line 2" in err
    assert "masqmail.conf:3: query_routes.isp: no online query" in err
