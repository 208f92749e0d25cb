"""Shared fixtures: a scratch spool on disk (not tmpfs); the one hypothesis profile.

Hypothesis runs without a deadline (profile "masq", loaded for every test): on a loaded
machine a slow example is not a failure. Tests set only how many examples they want."""

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

settings.register_profile("masq", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("masq")


@pytest.fixture
def spool(tmp_path):
    """Return a fresh spool directory path."""
    path = tmp_path / "spool"
    path.mkdir()
    return str(path)
