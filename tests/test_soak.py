"""The chaos soak's short version (docs/DISTRIBUTED.md, bench/SOAK.md): two schedulers,
three workers, a private broker and store, a process killed every 10–20 s, the broker
crashed and the store restarted once; every tick handled once, no run executed twice,
nothing left running.  The long version is ``bench/soak.py --minutes 24``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import need_server

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.timeout(420)
def test_a_short_chaos_soak_keeps_every_invariant() -> None:
    if os.geteuid() != 0 or not shutil.which("redis-server"):
        need_server("a private PostgreSQL and Redis", "the soak needs root and redis-server")
    done = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "1.5", "--chaos", "10"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(done.stdout[done.stdout.index("{") :])
    assert report["problems"] == [] and report["executed_twice"] == 0
    assert report["executions"] > 50 and report["runs"].get("running", 0) == 0
    assert any("SIGKILL scheduler" in f for f in report["faults"])
    assert any("SIGKILL worker" in f for f in report["faults"])
    assert set(report["exit_codes"].values()) == {0}
