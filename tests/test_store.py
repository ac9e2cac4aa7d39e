"""The run-history store directly: a real SQLite database in a tmp dir, real processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import assert_clean_error, cli, direct_sql, make_config
from script_monitor.errors import StoreError
from script_monitor.store import Owner, RunEnd, Store


@pytest.fixture
def store(backend_store):
    """Each test with a ``store`` runs on SQLite and on PostgreSQL (conftest.backend_store)."""
    return backend_store


def _pg(url: str):
    from script_monitor.store.postgres import PgDb

    return PgDb(url, 10_000)


@pytest.fixture
def sqlite_store(tmp_path: Path):
    s = Store(tmp_path / "state")
    yield s
    s.close()


def test_a_run_is_recorded_from_start_to_finish(store):
    group = store.runs.start_group("g", "manual")
    rid = store.runs.start_run("a", "manual", 1000.0, group, "g", "a/x.log")
    row = store.runs.run(rid)
    assert (row.status, row.log_state, row.group_run_id) == ("running", "ok", group)
    store.runs.finish_run(rid, RunEnd("failed", 1002.5, 2.5, 3, None, 4242, "boom"))
    store.runs.finish_group(group, "failed")
    row = store.runs.run(rid)
    assert (row.status, row.exit_code, row.duration, row.pid, row.detail) == (
        "failed",
        3,
        2.5,
        4242,
        "boom",
    )
    assert store.runs.group_run(group).status == "failed"
    assert store.runs.runs_of_group_run(group)[0].id == rid
    assert store.runs.run(rid + 100) is None


def test_history_is_newest_first_and_limited(store):
    ids = [store.runs.start_run("a", "manual", float(i)) for i in range(5)]
    store.runs.start_run("b", "manual", 9.0)
    assert [r.id for r in store.runs.history("a")] == ids[::-1]
    assert [r.id for r in store.runs.history("a", 2)] == ids[:2:-1]
    assert store.runs.history("nobody") == []


def test_last_runs_skip_skipped_and_latest_run_with_log(store):
    ran = store.runs.start_run("a", "manual", 1.0, log_path="a/1.log")
    store.runs.finish_run(ran, RunEnd("success", 2.0, 1.0, 0))
    store.runs.add_skipped(["a", "b"], "manual", None, "g", "stop_on_error")
    last = store.reads.last_runs()
    assert last["a"].id == ran
    assert "b" not in last  # a script only ever skipped has no last run
    # for named scripts only (more than a query's worth of names), the same answer
    names = [f"n{i}" for i in range(1200)]
    for name in names[::300]:
        store.runs.start_run(name, "manual", 3.0)
    some = store.reads.last_runs(["a", "b", *names])
    assert set(some) == {"a", *names[::300]} and some["a"] == last["a"]
    assert set(store.reads.last_runs(["b", "nobody"])) == set()
    assert store.runs.latest_run("a", with_log=True).id == ran
    assert store.runs.latest_run("a").status == "skipped"
    skipped = store.runs.history("b")[0]
    assert (skipped.status, skipped.detail, skipped.group_name) == (
        "skipped",
        "stop_on_error",
        "g",
    )


def test_last_group_runs(store):
    first = store.runs.start_group("g", "manual")
    store.runs.finish_group(first, "success")
    second = store.runs.start_group("g", "schedule")
    assert store.reads.last_group_runs()["g"].id == second
    assert [g.id for g in store.runs.group_history("g")] == [second, first]


def _dead_owner() -> str:
    """The owner text of a process that has certainly exited (same host and boot)."""
    proc = subprocess.Popen(["true"])
    me = Owner.current()
    start = "123"
    proc.wait()
    return str(Owner(me.host, me.boot, proc.pid, start))


def test_reap_lost_marks_only_runs_of_dead_owners(store):
    dead = store.runs.start_run("a", "manual", 1.0)
    mine = store.runs.start_run("a", "manual", 2.0)
    foreign = store.runs.start_run("a", "manual", 3.0)
    done = store.runs.start_run("a", "manual", 4.0)
    store.runs.finish_run(done, RunEnd("success", 5.0, 1.0, 0))
    group = store.runs.start_group("g", "manual")
    me = Owner.current()
    direct_sql(store, "UPDATE runs SET owner = ? WHERE id = ?", (_dead_owner(), dead))
    direct_sql(
        store,
        "UPDATE runs SET owner = ? WHERE id = ?",
        (str(Owner("other-host", me.boot, 1, "1")), foreign),
    )
    direct_sql(store, "UPDATE group_runs SET owner = ? WHERE id = ?", (_dead_owner(), group))
    assert store.runs.reap_lost() == 1
    statuses = {r.id: r.status for r in store.runs.history("a")}
    assert statuses == {dead: "lost", mine: "running", foreign: "running", done: "success"}
    assert store.runs.run(dead).ended is not None
    assert store.runs.group_run(group).status == "lost"
    assert store.runs.reap_lost() == 0


def test_a_reused_pid_is_not_taken_for_the_owner(store):
    """Same pid, other start time: the recorder died and its pid was reused."""
    me = Owner.current()
    rid = store.runs.start_run("a", "manual", 1.0)
    impostor = Owner(me.host, me.boot, me.pid, str(int(me.start or 0) + 1))
    direct_sql(store, "UPDATE runs SET owner = ? WHERE id = ?", (str(impostor), rid))
    assert store.runs.reap_lost() == 1


def test_expire_logs_by_count_and_age(store):
    now = time.time()
    ids = []
    for i in range(5):
        rid = store.runs.start_run("a", "manual", now - (5 - i) * 86400, log_path=f"a/{i}.log")
        store.runs.finish_run(rid, RunEnd("success", now, 1.0, 0))
        ids.append(rid)
    running = store.runs.start_run("a", "manual", now - 10 * 86400, log_path="a/running.log")
    assert store.runs.expire_logs("a", keep=3, before=None) == ["a/1.log", "a/0.log"]
    assert store.runs.expire_logs("a", keep=3, before=None) == []
    assert store.runs.expire_logs("a", keep=None, before=now - 2.5 * 86400) == ["a/2.log"]
    states = {r.id: r.log_state for r in store.runs.history("a")}
    assert [states[i] for i in ids] == ["rotated"] * 3 + ["ok"] * 2
    assert states[running] == "ok"  # never the log of a run still being written


def test_mark_logs_cleared_spares_running_runs(store):
    a = store.runs.start_run("a", "manual", 1.0, log_path="a/1.log")
    store.runs.finish_run(a, RunEnd("success", 2.0, 1.0, 0))
    b = store.runs.start_run("b", "manual", 1.0, log_path="b/1.log")
    store.runs.finish_run(b, RunEnd("success", 2.0, 1.0, 0))
    live = store.runs.start_run("a", "manual", 3.0, log_path="a/2.log")
    assert store.runs.mark_logs_cleared("a") == ["a/1.log"]
    assert store.runs.run(live).log_state == "ok"
    assert store.runs.run(b).log_state == "ok"
    assert store.runs.mark_logs_cleared(None) == ["b/1.log"]
    assert store.runs.run(a).log_state == "cleared"


def test_reopening_keeps_the_history_and_the_schema_version(tmp_path):
    first = Store(tmp_path)
    rid = first.runs.start_run("a", "manual", 1.0)
    first.close()
    second = Store(tmp_path)
    assert second.runs.run(rid).script == "a"
    second.close()
    with sqlite3.connect(tmp_path / "history.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] >= 1


def _writer(state_dir: str, worker: int, count: int) -> None:
    store = Store(Path(state_dir))
    for i in range(count):
        rid = store.runs.start_run(f"w{worker}", "manual", time.time())
        store.runs.finish_run(
            rid, RunEnd("success", time.time(), 0.0, 0, None, None, f"{worker}:{i}")
        )
    store.close()


def test_concurrent_processes_lose_no_run(tmp_path):
    workers, count = 8, 40
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * workers
    with sqlite3.connect(tmp_path / "history.db") as con:
        rows = con.execute("SELECT detail, status FROM runs").fetchall()
    assert len(rows) == workers * count
    assert {d for d, _ in rows} == {f"{w}:{i}" for w in range(workers) for i in range(count)}
    assert {s for _, s in rows} == {"success"}


def test_threads_share_one_store(store):
    import threading

    def work(n: int) -> None:
        for _ in range(25):
            rid = store.runs.start_run(f"t{n}", "manual", time.time())
            store.runs.finish_run(rid, RunEnd("success", time.time(), 0.0, 0))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(store.runs.history(f"t{n}")) for n in range(6)) == 150


def test_a_corrupted_database_is_a_clear_error(tmp_path, config_dir):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "history.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="corrupted"):
        Store(tmp_path / "junk").runs.history("a")
    make_config(config_dir, {"a": "true"})
    (config_dir / ".script-monitor").mkdir()
    (config_dir / ".script-monitor" / "history.db").write_bytes(b"garbage" * 1000)
    for args in (["list"], ["history", "a"], ["run", "a"]):
        r = cli("--config-dir", str(config_dir), *args)
        assert_clean_error(r)
        assert "corrupted" in r.stderr


def test_owner_text_round_trips():
    me = Owner.current()
    assert Owner.parse(str(me)) == me
    assert me.pid == os.getpid()
    assert not me.is_gone(me)
    assert Owner.parse("garbage") is None
    assert sys.platform.startswith("linux")


def test_runs_fill_the_recorder_interface():
    """The runs repository implements every Recorder method with the same parameters
    (the engine and the executors are written against the interface)."""
    import inspect

    from script_monitor.store import Recorder
    from script_monitor.store.runs import Runs

    methods = [n for n, _ in inspect.getmembers(Recorder, inspect.isfunction) if n[0] != "_"]
    assert len(methods) >= 5
    for name in methods:
        ours = inspect.signature(getattr(Runs, name)).parameters
        assert list(ours) == list(inspect.signature(getattr(Recorder, name)).parameters), name


def test_rotation_reads_only_runs_that_still_have_a_log(sqlite_store):
    """A script run every minute has half a million rows a year: rotation must not
    walk them all.  Its queries go through the partial index of runs with a log."""
    store = sqlite_store
    now = time.time()
    for i in range(30):
        rid = store.runs.start_run("a", "manual", now, log_path=f"a/{i}.log")
        store.runs.finish_run(rid, RunEnd("success", now, 1.0, 0, expire=("a", 3, None)))
    statements: list[str] = []
    store.core.connect().set_trace_callback(statements.append)
    rid = store.runs.start_run("a", "manual", now, log_path="a/last.log")
    assert store.runs.finish_run(rid, RunEnd("success", now, 1.0, 0, expire=("a", 3, None))) == [
        "a/27.log"
    ]
    assert (
        store.runs.finish_run(rid, RunEnd("success", now, 1.0, 0, expire=("a", None, now - 60)))
        == []
    )
    store.core.connect().set_trace_callback(None)
    rotations = [s for s in statements if "RETURNING id, log_path" in s]
    assert len(rotations) == 2  # one statement each: choose, mark and return the paths
    with sqlite3.connect(store.path) as con:
        for sql in rotations:
            plan = " ".join(str(row) for row in con.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "runs_logs" in plan, plan
    assert sum(r.log_state == "ok" for r in store.runs.history("a")) == 3


def test_an_older_history_is_upgraded_in_place(tmp_path):
    from script_monitor.store import MIGRATIONS
    from script_monitor.store.dialect import SqliteDialect

    tmp_path.joinpath("state").mkdir()
    with sqlite3.connect(tmp_path / "state" / "history.db") as con:
        con.executescript(MIGRATIONS[0].format(**SqliteDialect.types))
        con.execute(
            "INSERT INTO runs (script, trigger, status, started, owner, log_path, log_state)"
            " VALUES ('old', 'manual', 'success', 1.0, 'x', 'old/1.log', 'ok')"
        )
        con.execute("PRAGMA user_version = 1")
    upgraded = Store(tmp_path / "state")
    assert upgraded.runs.history("old")[0].log_path == "old/1.log"
    upgraded.close()
    with sqlite3.connect(tmp_path / "state" / "history.db") as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        names = {r[1] for r in con.execute("PRAGMA index_list(runs)")}
        assert "runs_logs" in names


def test_a_batch_commits_its_writes_together_or_not_at_all(store):
    """The engine records a loop's ends and starts in one batch and starts the
    processes after it: another reader sees all of the batch or none of it."""
    first = store.runs.start_run("a", "manual", 1.0, log_path="a/1.log")
    other = sqlite3.connect(store.path) if store.url is None else _pg(store.url)
    try:
        with store.batch():
            store.runs.finish_run(first, RunEnd("success", 2.0, 1.0, 0))
            with store.batch():  # a nested batch joins the outer one
                second = store.runs.start_run("a", "manual", 2.0, log_path="a/2.log")
            seen = other.execute("SELECT id, status FROM runs ORDER BY id").fetchall()
            assert seen == [(first, "running")]  # nothing committed yet
        seen = other.execute("SELECT id, status FROM runs ORDER BY id").fetchall()
        assert seen == [(first, "success"), (second, "running")]
        with pytest.raises(RuntimeError), store.batch():
            store.runs.finish_run(second, RunEnd("failed", 3.0, 1.0, 1))
            store.runs.start_run("a", "manual", 3.0, log_path="a/3.log")
            raise RuntimeError("the loop failed before its commit")
        seen = other.execute("SELECT id, status FROM runs ORDER BY id").fetchall()
        assert seen == [(first, "success"), (second, "running")]  # rolled back whole
        store.runs.finish_run(second, RunEnd("success", 3.0, 1.0, 0))  # the store still works
        assert store.runs.run(second).status == "success"
    finally:
        other.close()
