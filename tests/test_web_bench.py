"""The web benchmark still works: `bench/web.py --quick` at tiny sizes.

No timing is asserted (figures belong to bench/README.md): only that it completes,
every request was answered 200, every SSE follower received the whole log, and the
JSON report holds every part.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.slow
def test_the_quick_web_benchmark_runs(tmp_path):
    out = tmp_path / "web.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "web.py"),
            "--quick",
            "--json",
            str(out),
            "--work",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {(r["path"], r["gzip"]) for r in report["latency"]} == {
        ("/api/v1/scripts", False),
        ("/", False),
        ("/metrics", False),
        ("/", True),
        ("/metrics", True),
        ("/group-runs/51", False),  # 1 000 runs of 20 scripts: 50 ticks, then the big group
        ("/api/v1/group-runs/51", False),
        ("/status", False),
    }
    assert all(r["requests"] == 100 and not r["errors"] for r in report["latency"])
    assert report["followers"]["every_follower_got_it_all"] is True
    assert len(report["targets"]) == 14
