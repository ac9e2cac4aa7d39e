"""`status`: the scheduler, runs in progress, the latest failures and the next runs, on
one screen or as JSON; exit 1 when the latest scheduled run of a group failed or the
scheduler is down.  Real CLI processes, a real scheduler daemon, a real history.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers import MAIN, assert_clean_error, cli, make_config, sm, wait_for
from script_monitor.store import Store


def status(conf: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("--config-dir", str(conf), "status", *extra)


def status_json(conf: Path) -> tuple[int, dict]:
    r = status(conf, "--json")
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


@pytest.fixture
def conf(config_dir: Path) -> Path:
    return make_config(
        config_dir,
        {"ok": "true", "bad": "echo broken; exit 3", "other": "exit 4"},
        [
            {"name": "nightly", "schedule": "30 2 * * *", "scripts": ["ok", "bad"]},
            {"name": "hourly", "schedule": "@hourly", "timezone": "UTC", "scripts": ["ok"]},
            {"name": "manual", "scripts": ["other"]},
        ],
    )


def test_a_quiet_setup_says_so_and_exits_0(config_dir):
    make_config(config_dir, {"ok": "true"})
    r = status(config_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "Scheduler: not running (no group has a schedule)",
        "Running now: nothing",
        "Failures in the last 24 h: none",
        "Next runs: no group has a schedule",
    ]


def test_next_runs_are_listed_soonest_first(conf):
    r = status(conf)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Scheduler: not running (never started here;")
    at = lines.index("Next runs:")
    code, data = status_json(conf)
    assert code == 0 and data["ok"] is True and data["problems"] == []
    # nightly (02:30) comes before hourly between 02:00 and 02:30: the order is the times'
    names = [g["name"] for g in data["next_runs"]]
    assert sorted(names) == ["hourly", "nightly"]
    first, second = (datetime.fromisoformat(g["next_run"]) for g in data["next_runs"])
    assert datetime.now(UTC) < first <= second
    assert [ln.split()[0] for ln in lines[at + 1 : at + 3]] == names
    hourly = lines[at + 1 + names.index("hourly")]
    assert hourly.endswith("@hourly (UTC)") and " in " in hourly


def test_a_failed_scheduled_run_makes_exit_1_until_one_succeeds(conf):
    assert sm(conf, "run-group", "nightly").returncode == 1  # manual: not a scheduled run
    assert status(conf).returncode == 0
    assert sm(conf, "run-group", "nightly", "--trigger", "schedule").returncode == 1
    r = status(conf)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[-2] == "Problems:"
    assert lines[-1].startswith("  ✗ the latest scheduled run of group 'nightly' failed (group run")
    failures = lines[lines.index("Latest failures (24 h):") + 1 :]
    assert failures[0].split()[:6] == ["bad", "run", "4", "failed", "(exit", "3)"]
    assert failures[0].split()[-1] == "nightly"
    # a tick the scheduler skipped or recorded as missed did not run: it changes nothing
    store = Store(conf / ".script-monitor")
    for state in ("skipped", "missed"):
        tick = store.runs.start_group("nightly", "schedule")
        store.runs.finish_group(tick, state, detail="recorded tick")
    assert status(conf).returncode == 1
    # the next scheduled run succeeds: all is well again
    make_config(
        conf,
        {"ok": "true", "bad": "true", "other": "exit 4"},
        [
            {"name": "nightly", "schedule": "30 2 * * *", "scripts": ["ok", "bad"]},
            {"name": "manual", "scripts": ["other"]},
        ],
    )
    assert sm(conf, "run-group", "nightly", "--trigger", "schedule").returncode == 0
    code, data = status_json(conf)
    assert code == 0 and data["problems"] == []
    assert [f["script"] for f in data["failures"]] == ["bad", "bad"]  # still listed, newest first


def test_failures_are_the_five_newest_of_the_last_day(conf):
    for _ in range(3):
        assert sm(conf, "run", "bad").returncode == 1
        assert sm(conf, "run", "other").returncode == 1
    assert sm(conf, "run", "ok").returncode == 0
    code, data = status_json(conf)
    assert code == 0  # manual failures are shown, but they are not a scheduled run's
    assert [f["script"] for f in data["failures"]] == ["other", "bad", "other", "bad", "other"]
    ids = [f["id"] for f in data["failures"]]
    assert ids == sorted(ids, reverse=True)
    with sqlite3.connect(conf / ".script-monitor" / "history.db") as db:  # age every run a day
        db.execute("UPDATE runs SET started = started - 86500, ended = ended - 86500")
    assert sm(conf, "run", "other").returncode == 1
    code, data = status_json(conf)
    assert [f["script"] for f in data["failures"]] == ["other"]


def test_runs_in_progress_show_their_elapsed_time_and_become_lost(conf, marker):
    make_config(
        conf,
        {"slow": f"sleep 60 # {marker}", "ok": "true"},
        [{"name": "g", "scripts": ["slow", "ok"]}],
    )
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "run-group", "g"],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "MARK": marker},
    )
    try:
        assert wait_for(lambda: status_json(conf)[1]["running"] != [])
        time.sleep(1.1)
        code, data = status_json(conf)
        [run] = data["running"]
        assert (run["script"], run["group"], run["status"]) == ("slow", "g", "running")
        assert 1 <= run["elapsed"] < 60
        r = status(conf)
        row = r.stdout.splitlines()[r.stdout.splitlines().index("Running now (1):") + 1]
        assert row.split()[:4] == ["slow", "run", str(run["id"]), "g"]
        shown = re.search(r" for (\d+)\.\ds", row)  # seconds so far, however slow the machine
        assert shown and 1 <= int(shown[1]) < 60, row
        proc.send_signal(signal.SIGKILL)  # the recording process dies: the run is lost
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    code, data = status_json(conf)
    assert code == 0 and data["running"] == []  # a lost manual run: shown, not a problem
    assert [(f["script"], f["status"]) for f in data["failures"]] == [("slow", "lost")]


# ---------------------------------------------------------------- the scheduler


@pytest.fixture
def scheduler(conf: Path, marker: str):
    """Start the real scheduler on ``conf``; stop it with SIGTERM."""
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(MAIN), "--config-dir", str(conf), "scheduler"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MARK": marker},
        )
        procs.append(proc)
        assert wait_for(lambda: status_json(conf)[1]["scheduler"]["running"])
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


def test_a_running_scheduler_is_shown_and_a_stopped_one_is_a_problem(conf, scheduler):
    proc = scheduler()
    r = status(conf)
    assert r.returncode == 0, r.stdout
    assert r.stdout.startswith(f"Scheduler: running (pid {proc.pid}), heartbeat ")
    code, data = status_json(conf)
    assert code == 0 and data["ok"] is True
    assert data["scheduler"]["pid"] == proc.pid and data["scheduler"]["stale"] is False
    assert 0 <= data["scheduler"]["heartbeat_age"] < 30
    proc.terminate()
    assert proc.wait(timeout=60) == 0
    r = status(conf)
    assert r.returncode == 1
    assert r.stdout.splitlines()[0] == "Scheduler: not running"
    assert r.stdout.splitlines()[-1] == "  ✗ the scheduler is not running"
    # paused: nothing is expected to run, so a stopped scheduler is no problem
    with open(conf / "config.yaml", "w") as f:
        f.write("scheduling:\n  enabled: false\n")
    r = status(conf)
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == (
        "Scheduler: not running; scheduling is paused (scheduling.enabled: false)"
    )
    assert "Next runs (if scheduling were on):" in r.stdout.splitlines()


def test_a_hung_scheduler_is_a_problem(conf, marker):
    """A process holds the scheduler's lock but its heartbeat is a minute old."""
    state = conf / ".script-monitor"
    state.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from script_monitor.heartbeat import SchedulerLock\n"
            "SchedulerLock(__import__('pathlib').Path(sys.argv[1])).acquire()\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n",
            str(state),
            marker,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        beat = {"pid": holder.pid, "updated": time.time() - 65}
        (state / "scheduler.heartbeat").write_text(json.dumps(beat))
        r = status(conf)
        assert r.returncode == 1
        first = r.stdout.splitlines()[0]  # 65 s, or a second more on a busy machine
        assert re.fullmatch(
            rf"Scheduler: running \(pid {holder.pid}\), but no heartbeat for 6[5-7]s:"
            " it may be hung",
            first,
        ), first
        assert "  ✗ the scheduler's heartbeat is stale: it may be hung" in r.stdout
        code, data = status_json(conf)
        assert code == 1 and data["problems"] == [
            "the scheduler's heartbeat is stale: it may be hung"
        ]
        assert data["scheduler"]["stale"] is True and 64 < data["scheduler"]["heartbeat_age"] < 90
    finally:
        holder.kill()
        holder.wait()


def test_status_refuses_an_invalid_configuration(conf):
    (conf / "groups.yaml").write_text("groups:\n  - name: g\n    execution: sideways\n")
    r = status(conf)
    assert_clean_error(r)
    assert "groups.yaml:3" in r.stderr
