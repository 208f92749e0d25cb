"""Fuzz what `ubus` prints (masq/online/ubus.py): event lines and interface status documents.

Input: `ubus listen` lines and `ubus call ... status` output from the netifd grammar (up,
l3_device, address lists, routes) with every field of every JSON type, truncated JSON,
bad UTF-8 and random bytes.
Properties: `parse_event` returns an interface name or None, `judge_output` a bool, and
neither raises.
"""

import json

from hypothesis import given, strategies as st

from fuzzing import fuzz_settings
from masq.online import ubus

_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.sampled_from(["wan", "", "0.0.0.0", "::", "pppoe-wan", "ifup"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
        st.sampled_from(["address", "mask", "target", "interface", "action", "up",
                         "l3_device", "ipv4-address", "ipv6-address", "route"]),
        inner, max_size=4)), max_leaves=12)
_status = st.fixed_dictionaries({}, optional={
    "up": st.one_of(st.just(True), _json), "l3_device": st.one_of(st.just("eth0"), _json),
    "ipv4-address": st.one_of(st.just([{"address": "192.0.2.1", "mask": 24}]), _json),
    "ipv6-address": _json,
    "route": st.one_of(st.just([{"target": "0.0.0.0", "mask": 0}]), _json)})
_event = st.one_of(_json.map(lambda v: {"network.interface": v}),
                   st.fixed_dictionaries({"network.interface": st.fixed_dictionaries(
                       {"interface": _json, "action": _json})}))


def encoded(strategy):
    return st.one_of(strategy.map(lambda v: json.dumps(v).encode()),
                     strategy.map(lambda v: json.dumps(v).encode()[:-1]), st.binary(max_size=40))


@fuzz_settings()
@given(encoded(_event), encoded(_status), st.integers(-1, 1), st.booleans())
def test_ubus_output_gives_a_name_or_none_and_a_verdict(event, status, code, need_route):
    for line in (event, event.decode("utf-8", "replace")):
        name = ubus.parse_event(line)
        assert name is None or (isinstance(name, str) and name)
    assert isinstance(ubus.judge_output(code, status, need_route), bool)
