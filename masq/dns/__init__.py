"""Name lookups: the stub resolver over the sans-IO codec (resolver.py) and MX choice (mx.py)."""
