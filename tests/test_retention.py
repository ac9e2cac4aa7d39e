"""Retention: ``history prune`` and the scheduler's hourly prune delete old finished
runs and what hangs off them, keep the newest of each script and group, and lose
nothing they should keep, even when killed half-way; /metrics totals do not go down."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import MAIN, assert_clean_error, cli, direct_sql, make_config
from script_monitor.store import NewMessage, RunEnd, Store

DAY = 86400.0


def _finished(store: Store, script: str, started: float, status: str = "success", **kw) -> int:
    rid = store.runs.start_run(script, "manual", started, **kw)
    store.runs.finish_run(rid, RunEnd(status, started + 1, 1.0, 0))
    return rid


def test_prune_keeps_the_newest_and_the_recent_and_deletes_the_rest(backend_store, tmp_path):
    store = backend_store
    now = time.time()
    old = [_finished(store, "a", now - 200 * DAY + i) for i in range(6)]
    recent = _finished(store, "a", now - DAY)
    still_running = store.runs.start_run("a", "manual", now - 300 * DAY)
    lonely = _finished(store, "b", now - 400 * DAY)  # among b's newest: kept
    g_old = store.runs.start_group("g", "schedule", now - 300 * DAY)
    store.runs.finish_group(g_old, "success")
    direct_sql(store, "UPDATE group_runs SET started = ? WHERE id = ?", (now - 300 * DAY, g_old))
    g_member = store.runs.start_group("g", "schedule", now - 250 * DAY)
    store.runs.finish_group(g_member, "success")
    kept_member = store.runs.start_run("c", "schedule", now - 250 * DAY, g_member, "g")
    store.runs.finish_run(kept_member, RunEnd("success", now, 1.0, 0))
    store.runs.start_group("g", "schedule", now)
    store.alerts.add(old[0], "a", [(1, "ERROR x", "error", "ERROR", False)], 2)
    store.outbox.add([NewMessage("k1", "failure", "a", "r1", "ops", "t", "b", old[0])])
    direct_sql(store, "UPDATE notifications SET state = 'sent', created = ?", (now - 300 * DAY,))

    dry = store.retention.prune(now - 90 * DAY, keep=2, dry_run=True)
    assert (dry.runs, dry.group_runs, dry.messages) == (6, 1, 1)
    assert len(store.runs.history("a")) == 8  # a dry run deletes nothing

    report = store.retention.prune(now - 90 * DAY, keep=2)
    assert (report.runs, report.group_runs, report.messages) == (6, 1, 1)
    left = {r.id for r in store.runs.history("a")}
    assert left == {recent, still_running}  # the newest 2 (a running one is never pruned)
    assert [r.id for r in store.runs.history("b")] == [lonely]
    assert store.runs.group_run(g_old) is None
    assert store.runs.group_run(g_member) is not None  # one of its runs is kept
    assert store.alerts.matches("a") == [] and store.alerts.dropped([old[0]]) == {}
    assert store.outbox.messages() == []
    again = store.retention.prune(now - 90 * DAY, keep=2)
    assert (again.runs, again.group_runs, again.messages) == (0, 0, 0)


def test_metrics_totals_do_not_go_down_when_runs_are_pruned(backend_store):
    store = backend_store
    now = time.time()
    for i in range(30):
        _finished(store, "a", now - 100 * DAY + i, "success" if i % 3 else "failed")
    for i, kind in enumerate(("slow", "fast", None)):  # measured runs, two of them marked
        rid = store.runs.start_run("a", "manual", now - 100 * DAY + 40 + i)
        usage = (0.5 * i, 0.25, (1 << 20) * (i + 1))
        store.runs.finish_run(
            rid, RunEnd("success", now - 100 * DAY + 41, 1.0, 0, usage=usage, anomaly=kind)
        )
    store.runs.start_run("a", "manual", now)  # running: neither counted nor pruned

    def counts() -> dict[tuple[str, str], tuple[int, int]]:
        data = store.totals.since(0, [])
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for script, status, n, *_rest in data["groups"]:
            if status != "running":
                old = out.get((script, status), (0, 0))
                out[(script, status)] = (old[0] + n, old[1] + sum(_rest[5:]))
        return out

    def usage() -> list[float]:  # slow, fast, CPU and memory sums, counts and buckets
        from script_monitor.store.totals import DURATION_BUCKETS

        rows = [r for r in store.totals.since(0, [])["groups"] if r[1] == "success"]
        return [sum(float(r[8 + len(DURATION_BUCKETS) + i] or 0) for r in rows) for i in range(4)]

    before, used = counts(), usage()
    assert before[("a", "success")][0] == 23 and before[("a", "failed")][0] == 10
    assert used == [1, 1, 2.25, 3]  # one slow, one fast; CPU 0.25 + 0.75 + 1.25 s of 3 runs
    assert store.retention.prune(now - 90 * DAY, keep=5).runs == 29  # 4 kept, 1 running
    assert counts() == before  # counts and histogram buckets alike
    assert usage() == used


def _big_history(state: Path, runs: int) -> float:
    """A history of ``runs`` old finished runs of 50 scripts, written in one go."""
    store = Store(state)
    store.runs.history("x")  # creates the schema
    store.close()
    old = time.time() - 400 * DAY
    with sqlite3.connect(state / "history.db") as con:
        con.executemany(
            "INSERT INTO runs (script, trigger, status, started, ended, duration, owner,"
            " log_state) VALUES (?, 'manual', 'success', ?, ?, 1.0, 'x', 'none')",
            ((f"s{i % 50}", old + i, old + i + 1) for i in range(runs)),
        )
    con.close()
    return old


def test_a_killed_prune_loses_nothing_it_should_keep(tmp_path):
    conf = make_config(
        tmp_path / "c",
        {f"s{i}": "true" for i in range(50)},
        settings={"history": {"retention": {"days": 90, "keep_last": 10}}},
    )
    state = conf / ".script-monitor"
    state.mkdir()
    _big_history(state, 60_000)
    newest = {
        s: ids
        for s, ids in _ids_by_script(state).items()  # each script's 10 newest: always kept
        for ids in [ids[-10:]]
    }
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "history", "prune"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while time.time() < deadline and _count(state) == 60_000:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    half = _count(state)
    assert 500 <= half < 60_000 or proc.returncode == 0
    by_script = _ids_by_script(state)
    for s, ids in newest.items():
        assert set(ids) <= set(by_script[s]), s
    integrity = sqlite3.connect(state / "history.db").execute("PRAGMA integrity_check")
    assert integrity.fetchone()[0] == "ok"
    r = cli("--config-dir", str(conf), "history", "prune")
    assert r.returncode == 0, r.stderr
    assert "deleted" in r.stdout
    assert _ids_by_script(state) == newest


def _count(state: Path) -> int:
    with sqlite3.connect(state / "history.db", timeout=30) as con:
        return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def _ids_by_script(state: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    with sqlite3.connect(state / "history.db", timeout=30) as con:
        for script, rid in con.execute("SELECT script, id FROM runs ORDER BY id"):
            out.setdefault(script, []).append(rid)
    return out


def test_history_prune_on_the_command_line(tmp_path):
    conf = make_config(tmp_path / "c", {"a": "echo hi"})
    for _ in range(3):
        assert cli("--config-dir", str(conf), "run", "a", "-q").returncode == 0
    logs = sorted((conf / "logs" / "a").glob("*.log"))
    assert len(logs) == 3
    tomorrow = time.strftime("%Y-%m-%d", time.localtime(time.time() + DAY))
    r = cli("--config-dir", str(conf), "history", "prune", "--dry-run", "--before", tomorrow)
    assert r.returncode == 0 and "would delete 0 runs" in r.stdout  # keep_last: 100
    conf.joinpath("config.yaml").write_text("history:\n  retention: {keep_last: 1}\n")
    r = cli("--config-dir", str(conf), "history", "prune", "--dry-run", "--before", tomorrow)
    assert "would delete 2 runs" in r.stdout, r.stdout
    r = cli(
        "--config-dir", str(conf), "history", "prune", "--dry-run", "--before", tomorrow, "--json"
    )
    report = __import__("json").loads(r.stdout)
    assert (report["dry_run"], report["runs"], report["keep_last"]) == (True, 2, 1)
    assert len(list((conf / "logs" / "a").glob("*.log"))) == 3
    r = cli("--config-dir", str(conf), "store", "prune", "--before", tomorrow)
    assert r.returncode == 0 and "deleted 2 runs" in r.stdout, r.stdout + r.stderr
    assert sorted((conf / "logs" / "a").glob("*.log")) == logs[-1:]  # their logs went too
    r = cli("--config-dir", str(conf), "history", "a", "--json")
    assert len(__import__("json").loads(r.stdout)) == 1
    # Without --before, history.retention decides: nothing here is 90 days old.
    r = cli("--config-dir", str(conf), "history", "prune")
    assert "deleted 0 runs" in r.stdout


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["history", "prune", "--before", "yesterday"], "--before 'yesterday': not a date"),
        (["history", "a", "--dry-run"], "go with `history prune`"),
    ],
)
def test_bad_prune_arguments_exit_2(tmp_path, args, text):
    conf = make_config(tmp_path / "c", {"a": "true"})
    r = cli("--config-dir", str(conf), *args)
    assert_clean_error(r, 2)
    assert text in r.stderr


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("history:\n  retention: -3\n", 2),
        ("history:\n  retention:\n    days: 30\n    keep_last: -1\n", 4),
        ("history:\n  retention: {weeks: 3}\n", 2),
        ("history:\n  keep_runs: 3\n", 2),
    ],
)
def test_a_bad_retention_setting_names_the_file_and_line(tmp_path, text, line):
    conf = make_config(tmp_path / "c", {"a": "true"})
    conf.joinpath("config.yaml").write_text(text)
    r = cli("--config-dir", str(conf), "list")
    assert_clean_error(r, 2)
    assert f"config.yaml:{line}" in r.stderr, r.stderr


def test_retention_as_days_or_as_a_rule() -> None:
    from script_monitor.config import HistorySettings, Retention

    assert HistorySettings().rule == Retention(days=90, keep_last=100)
    assert HistorySettings(retention=7).rule == Retention(days=7, keep_last=100)
    assert HistorySettings(retention=Retention(0, 3)).rule.days == 0
