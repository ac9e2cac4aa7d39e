"""The chaos soak's short version (docs/DISTRIBUTED.md, bench/SOAK.md): two schedulers,
three workers, two ``run-group`` callers at a time, a private broker and store; a
worker, scheduler or caller killed every 10–20 s, the broker crashed and the store
restarted once; every tenth run fails and notifies a local receiver.  Every tick
handled once, no run executed twice, every group run of a killed caller carried on
with each of its scripts once, nothing left running, every failure notified exactly
once.  The long version is ``bench/soak.py --minutes 24 --groups 7``."""

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
@pytest.mark.timeout(480)
def test_a_short_chaos_soak_keeps_every_invariant() -> None:
    if os.geteuid() != 0 or not shutil.which("redis-server"):
        need_server("a private PostgreSQL and Redis", "the soak needs root and redis-server")
    done = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "1.5", "--chaos", "10"],
        capture_output=True,
        text=True,
        timeout=460,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(done.stdout[done.stdout.index("{") :])
    assert report["problems"] == [] and report["executed_twice"] == 0
    assert report["executions"] > 50 and report["runs"].get("running", 0) == 0
    for kind in ("scheduler", "worker", "caller"):
        assert any(f"SIGKILL {kind}" in f for f in report["faults"]), kind
    assert sum(report["caller_group_runs"].values()) > 5
    assert report["failed_runs"] > 5
    assert report["notifications"]["runs_named"] == report["failed_runs"]
    codes = report["exit_codes"]
    callers = codes.pop("callers")
    assert set(codes.values()) == {0}, codes  # every scheduler and worker
    assert set(callers) <= {"0", "1", "2", "-9"}, callers  # 2: the broker was down
