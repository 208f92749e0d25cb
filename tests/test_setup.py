"""`masq setup PRESET`: every preset writes a file `masq check-config` accepts, an existing
file is never replaced without --force, and board profiles give routes their detectors."""

import os
import stat

import pytest

from helpers import ROOT, masq
from masq.base import exits
from masq.config import schema as config, presets as setup, uci

BOARD_DIR = os.path.join(ROOT, "board")
BOARDS = sorted(n[:-5] for n in os.listdir(BOARD_DIR) if n.endswith(".conf"))

PRESETS = {
    "local": [],
    "smarthost": ["--host", "mail.example.net", "--user", "me", "--password", "s3'cret"],
    "dialup": [],
    "mobile": ["--board", "quectel-ec2x"],
    "lan-relay": ["--lan", "192.168.1.0/24", "--listen", "192.168.1.1", "--host",
                  "smtp.example.net:25", "--tls", "opportunistic"],
}


def _setup(tmp_path, *args, name="masq.conf", input=None, env=None):
    conf = str(tmp_path / name)
    done = masq("setup", *args, "-C", conf, input=input, env=env, text=True)
    return done, conf


def _load(conf):
    with open(conf) as f:
        return config.loads(f.read(), conf)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_passes_check_config(tmp_path, preset):
    done, conf = _setup(tmp_path, preset, *PRESETS[preset])
    assert done.returncode == 0, done.stderr
    assert conf in done.stdout
    checked = masq("check-config", "-C", conf, text=True)
    assert checked.returncode == 0, checked.stderr
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600      # it may hold a password


def test_local_has_no_route(tmp_path):
    _, conf = _setup(tmp_path, "local", "--local-domain", "router.lan", "--mailbox",
                     "maildir:/srv/mail/%u")
    cfg = _load(conf)
    assert cfg.routes == []
    assert cfg.main.listen == ["smtp://127.0.0.1:25"]
    assert cfg.main.local_domain == ["router.lan"]
    assert cfg.main.mailbox == "maildir:/srv/mail/%u"


def test_smarthost_route(tmp_path):
    _, conf = _setup(tmp_path, "smarthost", *PRESETS["smarthost"])
    route = _load(conf).route("smarthost")
    assert route.online == "always"
    assert route.smarthost == "mail.example.net:587"          # STARTTLS: submission port
    assert route.tls == "starttls"
    assert (route.auth_user, route.auth_pass) == ("me", "s3'cret")


def test_smarthost_implicit_tls_port(tmp_path):
    _, conf = _setup(tmp_path, "smarthost", "--host", "[2001:db8::1]", "--tls", "tls")
    route = _load(conf).route("smarthost")
    assert (route.smarthost, route.tls) == ("[2001:db8::1]:465", "tls")


def test_password_from_standard_input(tmp_path):
    done, conf = _setup(tmp_path, "smarthost", "--host", "h.example", "--user", "u",
                        "--password", "-", input="from stdin\n")
    assert done.returncode == 0, done.stderr
    assert _load(conf).route("smarthost").auth_pass == "from stdin"


def test_dialup_defaults_to_ppp0(tmp_path):
    _, conf = _setup(tmp_path, "dialup")
    route = _load(conf).route("dialup")
    assert route.online == "iface:ppp0"
    assert route.smarthost is None                            # straight to the MX hosts


def test_lan_relay_listens_and_relays(tmp_path):
    _, conf = _setup(tmp_path, "lan-relay", *PRESETS["lan-relay"])
    cfg = _load(conf)
    assert cfg.main.listen == ["smtp://127.0.0.1:25", "smtp://192.168.1.1:25"]
    assert cfg.main.relay_net == ["127.0.0.0/8", "::1/128", "192.168.1.0/24"]
    assert cfg.route("smarthost").smarthost == "smtp.example.net:25"


def test_lan_relay_warns_about_an_address_outside_the_lan(tmp_path):
    done, _ = _setup(tmp_path, "lan-relay", "--lan", "192.168.1.0/24", "--listen",
                     "10.0.0.1:2525", "--host", "smtp.example.net")
    assert done.returncode == 0, done.stderr
    assert "warning" in done.stderr and "10.0.0.1" in done.stderr


# ---- never overwrite ------------------------------------------------------------

def test_refuses_to_overwrite_without_force(tmp_path):
    conf = tmp_path / "masq.conf"
    conf.write_text("# mine\n")
    done, _ = _setup(tmp_path, "local")
    assert done.returncode == exits.CANTCREAT == 73
    assert len(done.stderr.splitlines()) == 1
    assert "--force" in done.stderr and str(conf) in done.stderr
    assert conf.read_text() == "# mine\n"
    done, _ = _setup(tmp_path, "local", "--force")
    assert done.returncode == 0, done.stderr
    assert "config masq 'main'" in conf.read_text()


def test_refuses_a_missing_directory(tmp_path):
    done, _ = _setup(tmp_path, "local", name="no/such/masq.conf")
    assert done.returncode == exits.CANTCREAT
    assert len(done.stderr.splitlines()) == 1


def test_default_target_honours_masq_config(tmp_path):
    conf = str(tmp_path / "env.conf")
    done = masq("setup", "local", env={"MASQ_CONFIG": conf}, text=True)
    assert done.returncode == 0, done.stderr
    assert os.path.exists(conf)


# ---- issue 18 point 9 ---------------------------------------------------------------

@pytest.mark.parametrize("host, tls", [("mail.example.com:465", "tls"),
                                       ("mail.example.com:587", "starttls"),
                                       ("mail.example.com", "starttls")])
def test_the_port_decides_implicit_tls(tmp_path, host, tls):
    done, conf = _setup(tmp_path, "smarthost", "--host", host)
    assert done.returncode == 0, done.stderr
    route = _load(conf).route("smarthost")
    assert route.tls == tls


def test_starttls_on_port_465_is_refused(tmp_path):
    done, conf = _setup(tmp_path, "smarthost", "--host", "mail.example.com:465", "--tls",
                        "starttls")
    assert done.returncode == exits.USAGE
    assert "port 465" in done.stderr and not os.path.exists(conf)


def test_help_says_what_each_preset_does_and_needs():
    done = masq("setup", "--help", text=True)
    assert done.returncode == 0
    text = done.stdout
    for preset in PRESETS:
        line = next(l for l in text.splitlines() if l.strip().startswith(preset + " "))
        assert len(line.split()) > 3, line              # a description, not just the name
    flat = " ".join(text.split())
    assert "--lan NETWORK" in flat and "--listen ADDRESS" in flat and "--board NAME" in flat


def test_lan_relay_names_every_missing_option_at_once(tmp_path):
    done, _ = _setup(tmp_path, "lan-relay")
    assert done.returncode == exits.USAGE
    assert done.stderr.strip() == ("masq: setup lan-relay: --host, --lan and --listen are "
                                   "required")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_passwd_help_is_help(tmp_path, flag):
    conf = tmp_path / "masq.conf"
    conf.write_text("config masq 'main'\n")
    done = masq("passwd", flag, "-C", str(conf), text=True, input="")
    assert done.returncode == 0 and done.stdout.startswith("usage: masq passwd USER")
    assert conf.read_text() == "config masq 'main'\n"      # no user '--help' written


def test_passwd_refuses_an_option_as_user_name(tmp_path):
    conf = tmp_path / "masq.conf"
    conf.write_text("config masq 'main'\n")
    done = masq("passwd", "--bogus", "-C", str(conf), text=True, input="pw\n")
    assert done.returncode == exits.USAGE
    assert conf.read_text() == "config masq 'main'\n"


# ---- usage errors ---------------------------------------------------------------

@pytest.mark.parametrize("args", [
    [],                                           # no preset
    ["bogus"],
    ["mobile"],                                   # which modem?
    ["smarthost"],                                # --host is required
    ["lan-relay", "--lan", "192.168.1.0/24", "--host", "h"],      # no --listen
    ["lan-relay", "--lan", "not-a-net", "--listen", "192.168.1.1", "--host", "h"],
    ["lan-relay", "--lan", "192.168.1.0/24", "--listen", "router", "--host", "h"],
    ["local", "--host", "mail.example.net"],      # not used by the preset
    ["smarthost", "--host", "h", "--user", "u"],  # --user without --password
    ["smarthost", "--host", "bad host"],
    ["smarthost", "--host", "h", "--route", "my-route"],
    ["dialup", "--online", "sometimes"],          # the schema refuses it
    ["mobile", "--board", "no-such-board"],
    ["dialup", "--board", "ppp", "--online", "modem"],     # the board has no AT port
])
def test_usage_errors(tmp_path, args):
    done, conf = _setup(tmp_path, *args)
    assert done.returncode == exits.USAGE, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not os.path.exists(conf)


# ---- board profiles -------------------------------------------------------------

def test_board_profile_gives_the_detector(tmp_path):
    _, conf = _setup(tmp_path, "mobile", "--board", "quectel-ec2x")
    assert _load(conf).route("mobile").online == "ubus:wwan"
    _, conf = _setup(tmp_path, "dialup", "--board", "openwrt-ppp", name="d.conf")
    assert _load(conf).route("dialup").online == "iface:ppp-wan"
    _, conf = _setup(tmp_path, "mobile", "--board", "huawei-hilink", name="h.conf")
    assert _load(conf).route("mobile").online == "iface:eth1"


def test_board_modem_port(tmp_path):
    _, conf = _setup(tmp_path, "mobile", "--board", "sierra-mc74xx", "--online", "modem",
                     "--host", "smtp.example.net", "--route", "lte")
    route = _load(conf).route("lte")
    assert route.online == "modem:usb:1199:9071:03"           # AT port: interface 3
    assert route.smarthost == "smtp.example.net:587"
    _, conf = _setup(tmp_path, "mobile", "--board", "quectel-ec2x", "--online", "modem",
                     name="q.conf")
    assert _load(conf).route("mobile").online == "modem:usb:2c7c:0125:02"


def test_board_modem_port_without_usb_facts(tmp_path):
    profile = tmp_path / "serial.conf"
    profile.write_text("description = modem on a UART\nonline = modem:/dev/ttyS1?dcd\n"
                       "modem_port = /dev/ttyS1\n")
    _, conf = _setup(tmp_path, "dialup", "--board", str(profile), "--online", "modem")
    assert _load(conf).route("dialup").online == "modem:/dev/ttyS1"


def test_board_by_path_and_board_dir(tmp_path):
    profile = tmp_path / "myrouter.conf"
    profile.write_text("description = test router\nonline = file:/tmp/online\n")
    _, conf = _setup(tmp_path, "dialup", "--board", str(profile))
    assert _load(conf).route("dialup").online == "file:/tmp/online"
    done, conf = _setup(tmp_path, "dialup", "--board", "myrouter", name="b.conf",
                        env={"MASQ_BOARD_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert _load(conf).route("dialup").online == "file:/tmp/online"


def test_boards_lists_every_profile():
    done = masq("setup", "--boards", text=True)
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines()]
    assert listed == BOARDS


@pytest.mark.parametrize("name", BOARDS)
def test_board_profile_is_valid_and_sourced(name):
    path = os.path.join(BOARD_DIR, name + ".conf")
    with open(path) as f:
        text = f.read()
    values = setup.parse_board(text, path)
    config.loads("config route 'r'\n\toption online %s\n" % uci.quote(values["online"]))
    assert uci.is_name(values.get("route", "r"))
    assert "# source:" in text                    # every profile says where facts come from
    assert name in open(os.path.join(BOARD_DIR, "README.md")).read()


@pytest.mark.parametrize("text, where", [
    ("description = x\nonline = always\nonlne = always\n", ":3:"),       # unknown key
    ("description = x\nonline = always\nonline = iface:ppp0\n", ":3:"),  # twice
    ("description = x\nonline\n", ":2:"),                                # no =
    ("description = x\n", "no online"),
])
def test_bad_board_profile_is_a_config_error(tmp_path, text, where):
    profile = tmp_path / "bad.conf"
    profile.write_text(text)
    done, _ = _setup(tmp_path, "mobile", "--board", str(profile))
    assert done.returncode == exits.CONFIG, done.stderr
    assert where in done.stderr and len(done.stderr.splitlines()) == 1
