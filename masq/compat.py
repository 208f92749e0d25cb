"""JSON through one door: ujson where present (micropython-lib, small devices), else json.

Owns only the choice of JSON module; callers use `dumps` and `loads` from here.

Hostile input: `loads` reads outside bytes (the control socket, ubus output). Any text
becomes an object or a ValueError: nesting too deep for the decoder's recursion (a few
thousand `[`) is a ValueError too, never a RecursionError.
"""

try:  # pragma: no cover - ujson is not installed in the test environment
    import ujson as _json
except ImportError:
    import json as _json


def dumps(obj):
    """Return obj as compact JSON text."""
    try:
        return _json.dumps(obj, separators=(",", ":"), ensure_ascii=True)
    except TypeError:  # ujson has no separators argument
        return _json.dumps(obj)


def loads(text):
    """Return the object that the JSON text encodes; ValueError on bad input."""
    try:
        return _json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
