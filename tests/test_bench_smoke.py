"""The benchmark harness still works: `bench/run.py --quick` at tiny sizes.

No timing is asserted here (timings belong to bench/README.md); only that the
harness completes, that every tool really ran every script, and that the JSON
results are written with every workload in them.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from helpers import ROOT

BENCH = ROOT / "bench" / "run.py"


@pytest.mark.slow
def test_quick_benchmark_runs_every_script_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out), "--work", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert report["every_script_ran"] is True
    workloads = {w["workload"]: w for w in report["workloads"]}
    assert {"W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"} <= set(workloads)
    for key in ("W1", "W2", "W3", "W4", "W5"):
        tools = workloads[key]["tools"]
        assert {"script-monitor", "bare", "xargs -P"} <= set(tools), key
        assert all(len(t["wall_s"]) == 1 and t["wall_s"][0] > 0 for t in tools.values()), key
        assert workloads[key]["every_script_ran"] is True, workloads[key].get("problems")
        assert workloads[key]["targets"], key  # targets were evaluated, met or not
    assert set(workloads["W8"]["tools"]) == {
        "script-monitor", "bare",  # and the companions, timed in the same repetitions:
        "script-monitor, W2 shape", "bare, W2 shape",  # W8's runs without depends_on
        "script-monitor, 1 run", "bare, 1 run",  # the start-up
    }  # fmt: skip
    assert workloads["W8"]["every_script_ran"] is True
    limited = [t for t in workloads["W8"]["targets"] if t["limit"] is not None]
    assert [t["target"] for t in limited] == ["extra time per run / W2's at the same 12 runs"]
    # One quick repetition on a busy machine: the difference of two timings may even be
    # negative; the smoke run checks that it was measured, the full run judges it.
    assert limited[0]["limit"] == 1.1 and isinstance(limited[0]["value"], float)
    assert set(workloads["W6"]["tools"]) == {
        "script-monitor --help",
        "script-monitor list",
        "bare_list",
    }
    assert "### W2:" in done.stdout and "| script-monitor |" in done.stdout


def test_bench_check_notices_a_script_that_did_not_run(tmp_path):
    """The proof-of-work check fails when a log is missing: it is not a rubber stamp."""
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    bench_run = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = bench_run  # dataclasses look their module up there
    spec.loader.exec_module(bench_run)

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "s000.log").write_text("")
    check = bench_run.file_check(logs, ["s000", "s001"])
    problem = check(bench_run.Sample(0.1, 1000, 0))
    assert problem is not None and "s001.log" in problem
    (logs / "s001.log").write_text("")
    assert check(bench_run.Sample(0.1, 1000, 0)) is None


def test_bare_keeps_a_new_log_per_run_in_a_folder_per_script(tmp_path):
    """The floor does script-monitor's file work: a new file per run, one folder per script."""
    conf = tmp_path / "c"
    conf.mkdir()
    (conf / "scripts.yaml").write_text(
        "scripts:\n  - {name: a, command: 'echo a'}\n  - {name: b, command: 'echo b'}\n"
    )
    (conf / "groups.yaml").write_text(
        "groups:\n  - {name: g, execution: parallel, scripts: [a, b], depends_on: {b: [a]}}\n"
    )
    bare = BENCH.parent / "bare.py"
    for _ in range(2):
        r = subprocess.run([sys.executable, str(bare), str(conf), "g"], capture_output=True)
        assert r.returncode == 0, r.stderr
    for name in ("a", "b"):
        logs = sorted((conf / "bare-logs" / name).glob(f"{name}_*.log"))
        assert len(logs) == 2 and logs[-1].read_text() == f"{name}\n"


def test_w6_times_another_checkout_side_by_side(tmp_path):
    """`--before OTHER/main.py` adds that checkout's --help and list to W6's repetitions."""
    from helpers import MAIN

    out = tmp_path / "results.json"
    argv = [sys.executable, str(BENCH), "--quick", "--only", "W6", "--before", str(MAIN)]
    done = subprocess.run(
        [*argv, "--json", str(out), "--work", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [w6] = json.loads(out.read_text())["workloads"]
    assert list(w6["tools"]) == [
        "script-monitor --help",
        "script-monitor list",
        "before: --help",
        "before: list",
        "bare_list",
    ]
    assert [t["target"] for t in w6["targets"]][2:] == [
        "script-monitor --help / before: --help",
        "script-monitor list / before: list",
    ]


@pytest.mark.slow
def test_quick_distributed_benchmark_runs_through_real_workers(tmp_path, pg_url, redis_url):
    """bench/distributed.py --quick: workers started and stopped, every run checked (the
    harness exits non-zero otherwise), both tables printed and the JSON complete."""
    out = tmp_path / "dist.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "distributed.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert [r["workers"] for r in report["throughput"]] == [1, 2]
    assert all(r["runs_per_s"] > 0 and r["span_s"] > 0 for r in report["throughput"])
    # A difference of CPU times in one quick repetition: measured, possibly even negative.
    assert isinstance(report["celery_ms_per_run"], float) and "local_ms_per_run" in report
    assert "| workers | wall (s) |" in done.stdout and "| local (SQLite) |" in done.stdout


def test_quick_ping_benchmark_records_every_ping(tmp_path):
    """`bench/pings.py --quick`: every ping answered and in the history; figures written."""
    out = tmp_path / "pings.json"
    bench = [sys.executable, str(ROOT / "bench" / "pings.py"), "--quick"]
    done = subprocess.run(
        [*bench, "--json", str(out), "--work", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["all_recorded"] is True
    sent = report["pings"]["sent"]
    assert report["pings"]["statuses"] == {"200": sent} and report["history"]["pings"] == sent
    assert report["pings"]["p99_ms"] > 0 and report["static"]["statuses"] == {"200": sent}
    assert "| `POST /ping/{key}[/start, /0]` |" in done.stdout
