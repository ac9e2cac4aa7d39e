"""Shared fixtures: real config directories in tmp_path, the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
GUIDE = ROOT.parent / "shared" / "seed" / "EXECUTION_MODES.md"


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    """Never touch the real home or a real SCRIPT_MONITOR_HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SCRIPT_MONITOR_HOME", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def cli(
    *args: str,
    cwd: Path | None = None,
    env: dict | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python main.py ARGS`` as a user would; capture text output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(MAIN), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def popen(*args: str, **kwargs) -> subprocess.Popen:
    """Start ``python main.py ARGS`` in the background (for signal tests)."""
    return subprocess.Popen(
        [sys.executable, str(MAIN), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "conf"
    d.mkdir()
    return d
