"""Shared fixtures: a scratch spool on disk (not tmpfs), and a config file writer."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture
def spool(tmp_path):
    """Return a fresh spool directory path."""
    path = tmp_path / "spool"
    path.mkdir()
    return str(path)
