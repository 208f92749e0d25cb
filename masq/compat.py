"""JSON through one door: ujson where present (micropython-lib, small devices), else json.

Owns only the choice of JSON module; callers use `dumps` and `loads` from here.
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
    return _json.loads(text)
