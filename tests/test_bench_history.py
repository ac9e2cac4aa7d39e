"""The history benchmark (W11) still works: `bench/history.py --quick` on SQLite at tiny
sizes.

No timing is asserted (figures belong to bench/HISTORY.md): only that it completes,
prints a table per backend, every command and page answered, and the prune deleted
what the generated history holds beyond the retention period.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.slow
def test_the_quick_history_benchmark_answers_everything(tmp_path):
    out = tmp_path / "history.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "history.py"),
            "--quick",
            "--backend",
            "sqlite",
            *("--runs", "12000", "--scripts", "40", "--groups", "4"),
            *("--reps", "1", "--requests", "3"),
            *("--json", str(out), "--work", str(tmp_path / "w")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| measured | value | target | met |" in done.stdout
    assert "### sqlite" in done.stdout
    report = json.loads(out.read_text())
    (sqlite,) = report["backends"]
    assert sqlite["generate"]["runs"] == 12000
    assert [c["key"] for c in sqlite["commands"]] == [
        "config",
        "list",
        "status",
        "history",
        "list-groups",
    ]
    assert all(c["problem"] is None for c in sqlite["commands"])
    assert {(r["path"], r["kind"]) for r in sqlite["web"]} == {
        ("/", "uncached"),
        ("/", "cached"),
        ("/metrics", "uncached"),
        ("/metrics", "cached"),
    }
    assert all(t["answered"] for t in sqlite["targets"])
    prune = sqlite["prune"]
    assert prune["rc"] == 0
    # 300 runs of each script, 270 older than 90 days; the newest 100 are kept (as are
    # the newest 100 group runs of each group, and the concurrent writer's new ones)
    assert (prune["deleted_runs"], prune["deleted_group_runs"]) == (40 * 200, 4 * 200)
    assert prune["writes_during"] > 0
