"""Fuzz what a modem says (masq/online/modem.py): AT responses, lock files, detector specs.

Input: responses from the AT grammar (echoes, +CREG/+CGREG/+CEREG in query and unsolicited
forms, +CSQ, OK, ERROR and its +CME/+CMS forms, NO CARRIER, URCs such as ^RSSI and RING,
huge numbers, long lines) joined with CR, LF or CRLF, mixed with random bytes and cut into
reads at random offsets; UUCP lock files of random bytes; `modem:` arguments.
Properties: the dialogue consumes anything without raising, holds at most LINE_CAP octets
of an unfinished line, completes at most one exchange per command, and its verdict is
(bool, reason); `lock_pid` returns an int or None; `parse_spec` returns its triple or
raises ValueError.
"""

from hypothesis import example, given, strategies as st

from fuzzing import fuzz_settings, mixed, splits
from masq.online import modem

_number = st.one_of(st.integers(0, 200).map(lambda n: b"%d" % n),
                    st.sampled_from([b"99", b"", b"-1", b"1.5", b"9" * 5000, b"\xb2"]))
_line = st.one_of(
    st.sampled_from([b"OK", b"ERROR", b"+CME ERROR: 3", b"+CMS ERROR: 500", b"NO CARRIER",
                     b"COMMAND NOT SUPPORT", b"RING", b"^RSSI: 12", b"^BOOT:1,2",
                     b"AT+CREG?", b"AT+CSQ", b"", b"+CREG:", b"+CSQ: ,", b"x" * 5000]),
    st.tuples(st.sampled_from([b"+CREG: ", b"+CGREG: ", b"+CEREG: ", b"+CSQ: "]),
              st.lists(_number, min_size=1, max_size=4).map(b",".join)).map(b"".join))
_response = mixed(st.tuples(_line, st.sampled_from([b"\r\n", b"\r", b"\n"])).map(b"".join))


@fuzz_settings()
@given(_response, st.lists(st.integers(0, 12000), max_size=6),
       st.one_of(st.none(), st.integers(-120, -50)))
@example(b"+CREG: 0," + b"9" * 5000 + b"\r\nOK\r\n+CGREG: 0,1\r\nOK\r\nOK\r\n+CSQ: "
         + b"9" * 5000 + b",99\r\nOK\r\n", [], -90)
def test_any_modem_response_ends_in_a_verdict(data, cuts, min_signal):
    dialogue = modem.Dialogue()
    completed = 0
    for piece in splits(data, cuts):
        completed += dialogue.feed(piece)
        assert len(dialogue.pending) <= modem.LINE_CAP
    assert completed == min(dialogue.index, len(dialogue.commands))
    assert set(dialogue.answers) <= {prefix for _, prefix in dialogue.commands}
    online, reason = dialogue.verdict(min_signal)
    assert isinstance(online, bool) and (online or isinstance(reason, str))


@fuzz_settings()
@given(st.binary(max_size=70), st.text(max_size=40))
def test_lock_files_and_specs_parse_or_fail_cleanly(tmp_path_factory, lock, spec):
    path = tmp_path_factory.mktemp("lock") / "LCK..ttyUSB0"
    path.write_bytes(lock)
    pid = modem.lock_pid(str(path))
    assert pid is None or isinstance(pid, int)
    for arg in (spec, "/dev/ttyS0?" + spec, "usb:" + spec):
        try:
            device, dcd, baud = modem.parse_spec(arg)
        except ValueError:
            continue
        assert isinstance(device, str) and isinstance(dcd, bool) and baud > 0
