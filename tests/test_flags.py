"""Sendmail flag parsing: glued and separate arguments, modes, names masq is called by."""

import pytest

from masq.base import exits
from masq.cli import flags


@pytest.mark.parametrize("argv,attr,value", [
    (["-t"], "extract", True),
    (["-oi"], "dot_ends", False),
    (["-i"], "dot_ends", False),
    (["-fme@x"], "sender", "me@x"),
    (["-f", "me@x"], "sender", "me@x"),
    (["-F", "Me Myself"], "fullname", "Me Myself"),
    (["-Cfile"], "config", "file"),
    (["-odq"], "queue_only", True),
    (["-odb"], "background", True),
    (["-oem"], "errors", "mail"),
    (["-v"], "verbose", True),
    (["-qo", "isp"], "route", "isp"),
    (["-qoisp"], "route", "isp"),
    (["-q30m"], "interval", 1800.0),
    (["-Mrm", "a", "b"], "ids", ["a", "b"]),
    (["-B", "8BITMIME", "x@y"], "recipients", ["x@y"]),
    (["--", "-notaflag@x"], "recipients", ["-notaflag@x"]),
])
def test_flags(argv, attr, value):
    assert getattr(flags.parse(argv), attr) == value


@pytest.mark.parametrize("name,mode", [
    ("sendmail", "bm"), ("mailq", "bp"), ("runq", "q"), ("mailrm", "Mrm"),
    ("newaliases", "bi"), ("smtpd", "bs"), ("in.smtpd", "bs"), ("rmail", "bm")])
def test_called_names_select_modes(name, mode):
    assert flags.parse([], name).mode == mode


def test_daemon_with_queue_interval_is_one_mode():
    opts = flags.parse(["-bd", "-q15m"])
    assert (opts.mode, opts.interval) == ("bd", 900.0)


@pytest.mark.parametrize("argv", [["-X"], ["-bt"], ["-bp", "-bs"], ["-f"], ["-qbad"]])
def test_usage_errors(argv):
    with pytest.raises(exits.Failure) as err:
        flags.parse(argv)
    assert err.value.status == exits.USAGE
