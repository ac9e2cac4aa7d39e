"""Shared fixtures: real config directories in tmp_path, clean-up of stray processes.

The helpers themselves are in helpers.py (one module, imported by every test file).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import kill_marked


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    """Never touch the real home or a real SCRIPT_MONITOR_HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SCRIPT_MONITOR_HOME", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "conf"
    d.mkdir()
    return d


@pytest.fixture
def marker():
    """A unique string carried by every process a test starts; they are all killed after."""
    import uuid

    token = f"smtest-{uuid.uuid4().hex}"
    yield token
    kill_marked(token)
