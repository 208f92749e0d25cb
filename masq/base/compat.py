"""JSON through one door: ujson where present (micropython-lib, small devices), else json.

Owns only the choice of JSON module; callers use `dumps` and `loads` from here.

`json` is imported when first needed, not here: it imports `re`, which costs `sendmail`
about 5 ms. Until something has imported it (the daemon has, for its first control
request), `dumps` writes JSON itself, byte for byte what `json.dumps` with compact
separators and `ensure_ascii` writes, for the small objects `sendmail` encodes (an envelope,
a control request).

Hostile input: `loads` reads outside bytes (the control socket, ubus output). Any text
becomes an object or a ValueError: nesting too deep for the decoder's recursion (a few
thousand `[`) is a ValueError too, never a RecursionError.
"""

import sys

try:  # pragma: no cover - ujson is not installed in the test environment
    import ujson as _ujson
except ImportError:
    _ujson = None

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
            "\f": "\\f"}


def dumps(obj):
    """Return obj as compact JSON text."""
    if _ujson is not None:
        try:
            return _ujson.dumps(obj, separators=(",", ":"), ensure_ascii=True)
        except TypeError:  # ujson has no separators argument
            return _ujson.dumps(obj)
    json = sys.modules.get("json")
    if json is not None:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)
    out = []
    _encode(obj, out.append)
    return "".join(out)


def loads(text):
    """Return the object that the JSON text encodes; ValueError on bad input."""
    try:
        if _ujson is not None:
            return _ujson.loads(text)
        import json
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _encode(obj, write):
    if obj is None:
        write("null")
    elif obj is True:
        write("true")
    elif obj is False:
        write("false")
    elif isinstance(obj, str):
        write(_string(obj))
    elif isinstance(obj, int):
        write(int.__repr__(obj))
    elif isinstance(obj, float):
        write(_float(obj))
    elif isinstance(obj, (list, tuple)):
        write("[")
        for i, item in enumerate(obj):
            if i:
                write(",")
            _encode(item, write)
        write("]")
    elif isinstance(obj, dict):
        write("{")
        for i, (key, value) in enumerate(obj.items()):
            if i:
                write(",")
            write(_string(_key(key)))
            write(":")
            _encode(value, write)
        write("}")
    else:
        raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def _key(key):
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return {None: "null", True: "true", False: "false"}[key]
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return _float(key)
    raise TypeError("keys must be str, int, float, bool or None, not %s" % type(key).__name__)


def _float(value):
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _string(text):
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'
    out = ['"']
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif " " <= char <= "~":
            out.append(char)
        elif char <= "\uffff":
            out.append("\\u%04x" % ord(char))
        else:
            code = ord(char) - 0x10000
            out.append("\\u%04x\\u%04x" % (0xd800 | (code >> 10), 0xdc00 | (code & 0x3ff)))
    out.append('"')
    return "".join(out)
