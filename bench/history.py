"""W11: a history of ten million runs, on SQLite and on PostgreSQL.

    python bench/history.py                      # 10 000 000 runs of 5 000 scripts, both backends
    python bench/history.py --backend sqlite     # one backend
    python bench/history.py --quick              # 200 000 runs of 500 scripts (a smoke run)

For each backend:

1. A history is generated in SQL, in bulk: ``--runs`` finished runs of ``--scripts``
   scripts in ``--groups`` groups (every tick of a group is a group run of its
   members), 3 % failed, 0.5 % timeout, 0.5 % skipped, the rest successful; their
   start times spread over a year, 90 % of them older than 90 days.  SQLite gets a
   recursive CTE ``INSERT ... SELECT``, PostgreSQL ``generate_series`` (in a database
   of its own on ``--pg-url``'s server, created and dropped here).  The indexes of
   ``runs`` and ``group_runs`` (the schema's own) are built after the rows; PostgreSQL
   is then vacuumed and analyzed, as autovacuum would after such an insert; SQLite is
   left as script-monitor leaves it (no ANALYZE).  The kept ``/metrics`` totals are
   rolled forward as the scheduler does (``Totals.roll``).
2. The commands, as real processes (``python main.py --config-dir DIR ...``), median of
   ``--reps`` runs after one untimed: ``list``, ``status``, ``history NAME --limit 50``,
   ``list-groups``.  Targets: list and status <= 300 ms, history <= 100 ms.
3. The dashboard ``/`` and ``/metrics`` on a real ``serve`` process, one client,
   ``--requests`` requests each: *uncached*, with one run recorded (another
   connection, ``Runs.start_run`` + ``finish_run``) before every request, so every
   answer is computed afresh; and *cached*, nothing written in between (the server
   answers from its cache, keyed by the history's data version).  Target: p99 <=
   250 ms, judged on the uncached figures.
4. ``history prune`` (the CLI, default retention: 90 days, the newest 100 of each
   script and group kept), while another process records group runs in a loop as
   ``run-group`` does (``start_group``, ``start_run``, ``finish_run``,
   ``finish_group``), timing every write.  Reported: the prune's wall time and rows
   deleted, the writer's longest single write during the prune (and before it, for
   comparison).  Target: no write waits more than 100 ms.

Results are printed as Markdown tables and written to bench/results-history.json
(``--json PATH``; with --quick, script-monitor-bench-history-quick.json in the temp
directory).  See bench/HISTORY.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from script_monitor.store import RunEnd

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MAIN = ROOT / "main.py"
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(BENCH))

FULL = {"runs": 10_000_000, "scripts": 5000, "groups": 500, "reps": 7, "requests": 50}
QUICK = {"runs": 200_000, "scripts": 500, "groups": 50, "reps": 3, "requests": 20}
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = "script_monitor_bench_history"
DAY = 86400.0
CHUNK = 500_000  # rows per INSERT ... SELECT (one transaction each)
WRITER = "bench-writer"  # the concurrent writer's group and script
TARGETS_MS = {"list": 300, "status": 300, "history": 100}
WEB_P99_MS = 250
WRITE_WAIT_MS = 100


# ---------------------------------------------------------------- the configuration


def script_name(i: int) -> str:
    return f"script-{i:05d}"


def group_name(g: int) -> str:
    return f"group-{g:04d}"


def members(scripts: int, groups: int) -> list[list[int]]:
    """Script indexes of each group: script i is in group i * groups // scripts."""
    out: list[list[int]] = [[] for _ in range(groups)]
    for i in range(scripts):
        out[i * groups // scripts].append(i)
    return out


def make_config(root: Path, scripts: int, groups: int, url: str | None) -> None:
    """``scripts`` scripts in ``groups`` groups (every other one scheduled), plus the
    concurrent writer's one-script group."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    lines = ["scripts:"]
    for i in range(scripts):
        lines += [
            f"  - name: {script_name(i)}",
            f"    command: echo job {i}",
            f"    description: nightly job number {i}",
        ]
    lines += [f"  - name: {WRITER}", "    command: 'true'"]
    (root / "scripts.yaml").write_text("\n".join(lines) + "\n")
    out = ["groups:"]
    for g, idx in enumerate(members(scripts, groups)):
        out += [f"  - name: {group_name(g)}", "    execution: parallel"]
        if g % 2 == 0:
            out.append(f'    schedule: "{g % 60} * * * *"')
        out.append(f"    scripts: [{', '.join(script_name(i) for i in idx)}]")
    out += [f"  - name: {WRITER}", f"    scripts: [{WRITER}]"]
    (root / "groups.yaml").write_text("\n".join(out) + "\n")
    config = "validation:\n  warn_unused_scripts: false\n"
    if url:
        config += f"store:\n  url: {json.dumps(url)}\n"
    (root / "config.yaml").write_text(config)


# ---------------------------------------------------------------- the history

# Placeholders filled in per backend: {name} the script name of integer expression i,
# {group} a group name, {float} a cast to floating point, {seq} the row numbers.
# Runs: row n (0-based) is tick n / S of script n % S; its group run is
# tick * G + group + 1.  Start times: the first 90 % of rows spread over the
# 275 days before the last 90, the last 10 % over the last 90 days.
_STARTED = (
    "CASE WHEN {x} < 0.9 THEN :t0 + {x} / 0.9 * (275 * 86400.0)"
    " ELSE :t1 + ({x} - 0.9) / 0.1 * (90 * 86400.0 - 600) END"
)


def _sql(dialect: str) -> dict[str, str]:
    """The two INSERT ... SELECT statements for a range of rows, for one backend."""
    if dialect == "sqlite":
        name = "printf('script-%05d', {i})"
        group = "printf('group-%04d', {g})"
        seq = "WITH RECURSIVE seq(n) AS (SELECT :a UNION ALL SELECT n + 1 FROM seq WHERE n < :b)"
        src = "FROM seq"
        fl = "(1.0 * {v})"
        prefix = seq
    else:
        name = "'script-' || lpad(({i})::text, 5, '0')"
        group = "'group-' || lpad(({g})::text, 4, '0')"
        src = "FROM generate_series(:a::bigint, :b::bigint) AS seq(n)"
        fl = "(({v})::double precision)"
        prefix = ""
    # Hashes of the row number, taken modulo a prime first: the plain product modulo
    # 1000 would repeat every 5 000 rows, giving every run of a script the same status.
    h = "(((n * 2654435761) % 1000003) % 1000)"
    x_run = fl.format(v="n") + " / :N"
    started = _STARTED.format(x=x_run)
    status = (
        f"CASE WHEN {h} < 30 THEN 'failed' WHEN {h} < 35 THEN 'timeout'"
        f" WHEN {h} < 40 THEN 'skipped' ELSE 'success' END"
    )
    took = (
        f"CASE WHEN {h} < 35 AND {h} >= 30 THEN 300.0 WHEN {h} < 40 AND {h} >= 35 THEN 0.0"
        " ELSE (((n * 40503) % 600011) % 6000) / 100.0 END"
    )
    runs = (
        f"{prefix} INSERT INTO runs (id, script, group_run_id, group_name, trigger, status,"
        " started, ended, duration, exit_code, owner, log_path, log_state, host)"
        " SELECT n + 1, {name}, (n / :S) * :G + ((n % :S) * :G / :S) + 1, {group},"
        " CASE WHEN ((n % :S) * :G / :S) % 2 = 0 THEN 'schedule' ELSE 'manual' END,"
        " {status}, {started}, {started} + {took}, {took},"
        f" CASE WHEN {h} < 30 THEN 1 WHEN {h} < 40 THEN NULL ELSE 0 END,"
        " 'bench|x|1|1', {name} || '/' || n || '.log',"
        " CASE WHEN n >= :N - 10 * :S THEN 'ok' ELSE 'rotated' END, 'bench'"
        " {src}"
    ).format(
        name=name.format(i="n % :S"),
        group=group.format(g="(n % :S) * :G / :S"),
        status=status,
        started=started,
        took=took,
        src=src,
    )
    # Group runs: row n is tick n / G of group n % G, started with its tick's first run.
    x_group = "(" + fl.format(v="(n / :G) * :S") + " / :N)"
    gh = h
    groups = (
        f"{prefix} INSERT INTO group_runs (id, group_name, trigger, status, started, ended,"
        " owner) SELECT n + 1, {group},"
        " CASE WHEN (n % :G) % 2 = 0 THEN 'schedule' ELSE 'manual' END,"
        f" CASE WHEN {gh} < 30 THEN 'failed' ELSE 'success' END, {{started}}, {{started}} + 60,"
        " 'bench|x|1|1' {src}"
    ).format(
        group=group.format(g="n % :G"),
        started=_STARTED.format(x=x_group),
        src=src,
    )
    return {"runs": runs, "group_runs": groups}


def _bind(sql: str, values: dict[str, Any], style: str) -> tuple[str, Any]:
    """Named ``:x`` parameters in the driver's style (sqlite3 takes them as they are)."""
    if style == "sqlite":
        return sql, values
    return re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql.replace("%", "%%")), values


def _indexes(dialect: Any) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of the schema's indexes on runs and group_runs."""
    from script_monitor.store import schema

    out = []
    for statement in schema.statements(dialect, 0):
        found = re.search(r"CREATE INDEX IF NOT EXISTS (\w+)\s+ON (runs|group_runs)\b", statement)
        if found:
            out.append((found.group(1), statement))
    return out


class Backend:
    """One history: its configuration folder, its store URL, a raw connection."""

    def __init__(self, kind: str, work: Path, pg_url: str, pg_db: str = PG_DB):
        self.kind = kind
        self.root = work / f"conf-{kind}"
        self.url: str | None = None
        self.admin_url = pg_url
        self.db_name = pg_db
        if kind == "postgresql":
            self.url = _with_db(pg_url, pg_db)

    def create(self, size: dict) -> None:
        from script_monitor.store import Store

        make_config(self.root, size["scripts"], size["groups"], self.url)
        if self.kind == "postgresql":
            self._admin(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")
            self._admin(f"CREATE DATABASE {self.db_name}")
        store = Store(self.root / ".script-monitor", self.url)
        store.migrate()
        store.close()

    def holds(self, size: dict) -> bool:
        """Whether the history is already there at ``size`` (a run with --keep made it)."""
        try:
            db = self.connect()
        except Exception:  # no such database or file: make it
            return False
        try:
            found = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        except Exception:
            return False
        finally:
            db.close()
        return found >= size["runs"]

    def drop(self) -> None:
        if self.kind == "postgresql":
            self._admin(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")
        else:
            shutil.rmtree(self.root / ".script-monitor", ignore_errors=True)

    def _admin(self, sql: str) -> None:
        from script_monitor.store.postgres import PgDb

        with PgDb(self.admin_url, 10_000) as db:
            db.execute(sql)

    def connect(self) -> Any:
        if self.kind == "postgresql":
            from script_monitor.store.postgres import PgDb

            return PgDb(self.url, 10_000)
        import sqlite3

        db = sqlite3.connect(self.root / ".script-monitor" / "history.db", isolation_level=None)
        db.execute("PRAGMA cache_size = -1000000")  # 1 GB while the indexes are built
        return db

    def generate(self, size: dict, log) -> dict:
        """Fill the history in bulk; return the times taken."""
        from script_monitor.store.dialect import PostgresDialect, SqliteDialect

        n_runs, s, g = size["runs"], size["scripts"], size["groups"]
        ticks = n_runs // s
        n_runs = ticks * s
        n_groups = ticks * g
        now = time.time()
        values = {"N": n_runs, "S": s, "G": g, "t0": now - 365 * DAY, "t1": now - 90 * DAY}
        dialect = SqliteDialect if self.kind == "sqlite" else PostgresDialect
        indexes = _indexes(dialect("bench", 1000))
        sql = _sql(self.kind)
        db = self.connect()
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        for name, _ in indexes:
            db.execute(f"DROP INDEX IF EXISTS {name}")
        for table, total in (("group_runs", n_groups), ("runs", n_runs)):
            for a in range(0, total, CHUNK):
                b = min(total, a + CHUNK) - 1
                text, args = _bind(sql[table], {**values, "a": a, "b": b}, self.kind)
                db.execute("BEGIN")
                db.execute(text, args)
                db.execute("COMMIT")
                log(f"  {table}: {b + 1:,} of {total:,} ({time.perf_counter() - t0:.0f} s)")
        times["insert_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        if self.kind == "postgresql":
            db.execute("SET maintenance_work_mem = '512MB'")
        for name, statement in indexes:
            db.execute(statement)
            log(f"  index {name} ({time.perf_counter() - t0:.0f} s)")
        times["indexes_s"] = time.perf_counter() - t1
        if self.kind == "postgresql":
            for table in ("runs", "group_runs"):
                db.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT MAX(id) FROM {table}))"
                )
            t2 = time.perf_counter()
            db.execute("VACUUM ANALYZE")
            times["vacuum_analyze_s"] = time.perf_counter() - t2
        else:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        times["runs"] = n_runs
        times["group_runs"] = n_groups
        return times

    def roll_totals(self) -> float:
        """Bring the kept /metrics totals up to the newest finished run, as the scheduler
        and ``history prune`` do (``Totals.roll``), in large steps."""
        from script_monitor.store import Store

        store = Store(self.root / ".script-monitor", self.url)
        t0 = time.perf_counter()
        while True:
            with store.core.write() as tx:
                before = store.totals.upto(tx)
                after = store.totals.roll(tx, batch=1_000_000)
            if after == before:
                break
        store.close()
        return time.perf_counter() - t0

    def count(self, table: str) -> int:
        db = self.connect()
        try:
            return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        finally:
            db.close()

    def size_bytes(self) -> int:
        if self.kind == "postgresql":
            db = self.connect()
            try:
                return db.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            finally:
                db.close()
        state = self.root / ".script-monitor"
        return sum(p.stat().st_size for p in state.glob("history.db*"))


def _with_db(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


# ---------------------------------------------------------------- the commands


def cli(
    root: Path, python: str, argv: list[str], timeout: float = 600
) -> tuple[float, subprocess.CompletedProcess]:
    """One command, timed.  Byte-code is cached, as on an installed system (a sandbox's
    PYTHONDONTWRITEBYTECODE would have every start compile the sources again); the
    untimed first run writes the cache."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(root.parent / "pycache")
    t0 = time.perf_counter()
    done = subprocess.run(
        [python, str(MAIN), "--config-dir", str(root), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return time.perf_counter() - t0, done


def commands(backend: Backend, size: dict, python: str) -> list[dict]:
    """Each command's median wall time over ``reps`` runs, after one untimed."""
    scripts = size["scripts"]
    busiest = script_name(scripts // 2)

    def lists_all(out: str) -> str | None:
        firsts = {line.split()[0] for line in out.splitlines() if line.strip()}
        missing = sum(1 for i in range(scripts) if script_name(i) not in firsts)
        return f"{missing} scripts missing" if missing else None

    def fifty(out: str) -> str | None:
        rows = sum(1 for line in out.splitlines()[1:] if line.strip())
        return None if rows == 50 else f"{rows} runs shown, not 50"

    def groups(out: str) -> str | None:
        last = out.count("Last run: ") - out.count("Last run: never")
        return None if last >= size["groups"] else f"{last} groups with a last run"

    def status(out: str) -> str | None:
        return None if "Next runs:" in out else "no 'Next runs:' section"

    def setting(out: str) -> str | None:
        return None if out.strip() == "5" else f"unexpected output {out.strip()!r}"

    cases = [
        ("config", ["get-setting", "execution.max_parallel_workers"], setting, (0,)),
        ("list", ["list"], lists_all, (0,)),
        ("status", ["status"], status, (0, 1)),  # exit 1: a scheduled group's run failed
        ("history", ["history", busiest, "--limit", "50"], fifty, (0,)),
        ("list-groups", ["list-groups"], groups, (0,)),
    ]
    out = []
    for label, argv, check, codes in cases:
        walls, problem = [], None
        for rep in range(size["reps"] + 1):
            wall, done = cli(backend.root, python, argv)
            if done.returncode not in codes:
                problem = f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
            else:
                problem = problem or check(done.stdout)
            if rep:
                walls.append(wall)
        out.append(
            {
                "what": " ".join(["script-monitor", *argv]),
                "key": label,
                "median_ms": statistics.median(walls) * 1000,
                "min_ms": min(walls) * 1000,
                "max_ms": max(walls) * 1000,
                "samples_ms": [w * 1000 for w in walls],
                "problem": problem,
            }
        )
    return out


def queries(backend: Backend, size: dict) -> dict[str, float]:
    """The history's share of each command: what it asks of the store (as the command
    does, from a new connection), median of ``reps``, in ms."""
    from script_monitor.states import FAILURES
    from script_monitor.store import Store

    state = backend.root / ".script-monitor"
    busiest = script_name(size["scripts"] // 2)

    def status(store) -> None:
        store.runs.reap_lost()
        store.reads.last_group_runs()
        store.reads.last_ended_group_runs("schedule")
        store.reads.running_runs()
        store.reads.recent_runs(sorted(FAILURES), time.time() - DAY, 5)

    names = [script_name(i) for i in range(size["scripts"])]  # list asks for its scripts'
    cases = {
        "list": lambda store: (store.runs.reap_lost(), store.reads.last_runs(names)),
        "status": status,
        "history": lambda store: (store.runs.reap_lost(), store.runs.history(busiest, 50)),
        "list-groups": lambda store: (store.runs.reap_lost(), store.reads.last_group_runs()),
    }
    out = {}
    for key, fn in cases.items():
        walls = []
        for _ in range(size["reps"] + 1):
            t0 = time.perf_counter()
            store = Store(state, backend.url)
            fn(store)
            store.close()
            walls.append(time.perf_counter() - t0)
        out[key] = statistics.median(walls[1:]) * 1000
    return out


def baseline(python: str) -> float:
    """The interpreter's own start-up (python -c pass), median of 5, in ms."""
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls) * 1000


# ---------------------------------------------------------------- the dashboard


def dashboard(backend: Backend, size: dict, python: str, log) -> list[dict]:
    from script_monitor.states import RunStatus
    from script_monitor.store import Store
    from web import Server, request

    store = Store(backend.root / ".script-monitor", backend.url)

    def record() -> None:
        now = time.time()
        run = store.runs.start_run(WRITER, "manual", now)
        store.runs.finish_run(run, RunEnd(RunStatus.SUCCESS, time.time(), 0.01, exit_code=0))

    results = []
    t0 = time.perf_counter()
    server = Server(backend.root, python)
    started = time.perf_counter() - t0
    try:

        async def series(path: str, n: int, write: bool) -> tuple[list[float], int]:
            reader, writer = await asyncio.open_connection(server.host, server.port)
            times, body = [], 0
            try:
                for _ in range(n):
                    if write:
                        record()
                    t = time.perf_counter()
                    status, data = await request(
                        reader, writer, f"{server.host}:{server.port}", path
                    )
                    times.append(time.perf_counter() - t)
                    if status != 200:
                        raise SystemExit(f"{path}: HTTP {status}: {data[:300]!r}")
                    body = len(data)
            finally:
                writer.close()
            return times, body

        first = {}
        pages = size.get("pages", ("/", "/metrics"))
        for path in pages:
            first[path] = asyncio.run(series(path, 1, False))[0][0]
        for path in pages:
            asyncio.run(series(path, 3, True))  # warm-up
            for label, write in (("uncached", True), ("cached", False)):
                times, body = asyncio.run(series(path, size["requests"], write))
                q = statistics.quantiles(times, n=100, method="inclusive")
                results.append(
                    {
                        "path": path,
                        "kind": label,
                        "requests": len(times),
                        "p50_ms": q[49] * 1000,
                        "p90_ms": q[89] * 1000,
                        "p99_ms": q[98] * 1000,
                        "max_ms": max(times) * 1000,
                        "first_ms": first[path] * 1000,
                        "body_bytes": body,
                    }
                )
                r = results[-1]
                log(f"  {path} {label}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms")
        for r in results:
            r["server_start_s"] = started
            r["server_rss_kib"] = server.status("VmHWM")
    finally:
        server.stop()
        store.close()
    return results


# ---------------------------------------------------------------- prune under a writer

WRITER_CODE = """
import json, signal, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from script_monitor.states import GroupStatus, RunStatus
from script_monitor.store import RunEnd, Store

store = Store(Path(sys.argv[2]), sys.argv[3] or None)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
samples = []  # (when, seconds) of every write


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    samples.append((time.time(), time.perf_counter() - t))
    return out


print("ready", flush=True)
while not stop:
    g = timed(store.runs.start_group, "{writer}", "manual")
    r = timed(store.runs.start_run, "{writer}", "manual", time.time(), g, "{writer}")
    timed(store.runs.finish_run, r, RunEnd(RunStatus.SUCCESS, time.time(), 0.001, 0))
    timed(store.runs.finish_group, g, GroupStatus.SUCCESS)
    time.sleep(0.02)
store.close()
json.dump(samples, sys.stdout)
""".replace("{writer}", WRITER)


def prune(backend: Backend, python: str, log) -> dict:
    """``history prune`` while another process records group runs; the writer's waits."""
    writer = subprocess.Popen(
        [python, "-c", WRITER_CODE, str(SRC), str(backend.root / ".script-monitor"),
         backend.url or ""],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert writer.stdout is not None
        if writer.stdout.readline().strip() != "ready":
            raise SystemExit("the writer did not start")
        time.sleep(3)  # the writer alone: its waits without a prune
        before_rows = backend.count("runs")
        begin = time.time()
        wall, done = cli(backend.root, python, ["history", "prune"], timeout=6 * 3600)
        end = time.time()
        time.sleep(1)
    finally:
        writer.send_signal(signal.SIGTERM)
        out, _ = writer.communicate(timeout=120)
    samples = json.loads(out)
    during = [s for w, s in samples if begin <= w <= end]
    alone = [s for w, s in samples[4:] if w < begin]  # after the first group run (connecting)
    found = re.search(r"deleted (\d+) runs, (\d+) group runs", done.stdout)
    result = {
        "wall_s": wall,
        "rc": done.returncode,
        "output": (done.stdout + done.stderr).strip()[-500:],
        "runs_before": before_rows,
        "runs_after": backend.count("runs"),
        "deleted_runs": int(found.group(1)) if found else None,
        "deleted_group_runs": int(found.group(2)) if found else None,
        "writes_during": len(during),
        "rows_per_s": int(found.group(1)) / wall if found else None,
        "longest_wait_ms": max(during, default=0.0) * 1000,
        "p99_wait_ms": _p99(during) * 1000,
        "waits_over_100ms": sum(1 for s in during if s > WRITE_WAIT_MS / 1000),
        "writes_alone": len(alone),
        "longest_wait_alone_ms": max(alone, default=0.0) * 1000,
    }
    log(
        f"  prune: {wall:.1f} s, {result['deleted_runs']} runs deleted; writer's longest wait"
        f" {result['longest_wait_ms']:.1f} ms over {len(during)} writes"
    )
    return result


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return max(values, default=0.0)
    return statistics.quantiles(values, n=100, method="inclusive")[98]


# ---------------------------------------------------------------- one backend


def bench_backend(kind: str, size: dict, work: Path, args: argparse.Namespace) -> dict:
    def log(text: str) -> None:
        print(f"[{kind}] {text}", flush=True)

    backend = Backend(kind, work, args.pg_url, args.pg_db)
    report: dict[str, Any] = {"backend": kind}
    try:
        if args.reuse and backend.holds(size):
            log("using the history a run with --keep left")
            if not (backend.root / "scripts.yaml").exists():
                make_config(backend.root, size["scripts"], size["groups"], backend.url)
            report["size_bytes"] = backend.size_bytes()
        else:
            backend.create(size)
            log(f"generating {size['runs']:,} runs of {size['scripts']:,} scripts")
            report["generate"] = backend.generate(size, log)
            report["roll_totals_s"] = backend.roll_totals()
            report["size_bytes"] = backend.size_bytes()
            gen = report["generate"]
            log(
                f"generated in {gen['insert_s'] + gen['indexes_s']:.0f} s, totals rolled in"
                f" {report['roll_totals_s']:.1f} s, {report['size_bytes'] / 2**30:.2f} GiB"
            )
        report["load"] = {}
        if "commands" in args.parts:
            report["load"]["commands"] = os.getloadavg()[0]
            report["commands"] = commands(backend, size, args.python)
            report["queries"] = queries(backend, size)
        for c in report.get("commands", []):
            share = report["queries"].get(c["key"])
            log(
                f"  {c['what']}: median {c['median_ms']:.0f} ms"
                + (f" (the history's share {share:.0f} ms)" if share is not None else "")
                + f" {c['problem'] or ''}"
            )
        if "web" in args.parts:
            report["load"]["web"] = os.getloadavg()[0]
            report["web"] = dashboard(backend, size, args.python, log)
        if "prune" in args.parts:
            report["load"]["prune"] = os.getloadavg()[0]
            report["prune"] = prune(backend, args.python, log)
    finally:
        if not args.keep:
            backend.drop()
    report["targets"] = targets(report)
    return report


def targets(report: dict) -> list[dict]:
    out = []
    for c in report.get("commands", []):
        if c["key"] == "config":
            continue
        limit = TARGETS_MS.get(c["key"])
        out.append(
            {"what": f"`{c['what']}` median", "value": c["median_ms"], "limit": limit,
             "unit": "ms", "answered": c["problem"] is None}
        )  # fmt: skip
    for r in report.get("web", []):
        judged = r["kind"] == "uncached"
        out.append(
            {"what": f"`{r['path']}` p99, {r['kind']}", "value": r["p99_ms"],
             "limit": WEB_P99_MS if judged else None, "unit": "ms", "answered": True}
        )  # fmt: skip
    p = report.get("prune")
    if p is not None:
        out.append(
            {"what": "writer's longest wait during `history prune`",
             "value": p["longest_wait_ms"], "limit": WRITE_WAIT_MS, "unit": "ms",
             "answered": p["rc"] == 0 and p["deleted_runs"] is not None}
        )  # fmt: skip
    for t in out:
        t["met"] = t["answered"] and (t["limit"] is None or t["value"] <= t["limit"])
    return out


# ---------------------------------------------------------------- output


def render(report: dict) -> str:
    s = report["sizes"]
    lines = [
        f"## W11: a history of {s['runs']:,} runs of {s['scripts']:,} scripts"
        f" in {s['groups']:,} groups",
        "",
        f"Python start-up alone (`python -c pass`): {report['python_startup_ms']:.0f} ms.",
    ]
    for b in report["backends"]:
        g = b.get("generate")
        load = ", ".join(f"{k} {v:.1f}" for k, v in b["load"].items())
        made = (
            f"Generated {g['runs']:,} runs and {g['group_runs']:,} group runs:"
            f" rows {g['insert_s']:.0f} s, indexes {g['indexes_s']:.0f} s"
            + (f", VACUUM ANALYZE {g['vacuum_analyze_s']:.0f} s" if "vacuum_analyze_s" in g else "")
            + f"; totals rolled {b['roll_totals_s']:.1f} s"
            if g
            else "The history a run with `--keep` left (`--reuse`)"
        )
        lines += [
            "",
            f"### {b['backend']}",
            "",
            f"{made}; {b['size_bytes'] / 2**30:.2f} GiB."
            + f"  Load average (1 min) as each part began: {load}.",
            "",
            "| measured | value | target | met |",
            "|---|---:|---:|---|",
        ]
        for t in b["targets"]:
            limit = f"≤ {t['limit']} {t['unit']}" if t["limit"] is not None else "-"
            met = ("yes" if t["met"] else "NO") if t["limit"] is not None else ""
            if not t["answered"]:
                met = "NO (not answered)"
            lines.append(f"| {t['what']} | {t['value']:.1f} {t['unit']} | {limit} | {met} |")
        if "commands" in b:
            lines += [
                "",
                "| command | median ms | min ms | max ms | its queries ms |",
                "|---|---:|---:|---:|---:|",
            ]
        for c in b.get("commands", []):
            share = b["queries"].get(c["key"])
            lines.append(
                f"| `{c['what']}` | {c['median_ms']:.0f} | {c['min_ms']:.0f} |"
                f" {c['max_ms']:.0f} | {'-' if share is None else f'{share:.1f}'} |"
            )
        if "web" in b:
            lines += [
                "",
                "| page | requests | p50 ms | p90 ms | p99 ms | max ms | first ms | bytes |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
        for r in b.get("web", []):
            lines.append(
                f"| `{r['path']}` {r['kind']} | {r['requests']} | {r['p50_ms']:.1f} |"
                f" {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |"
                f" {r['first_ms']:.0f} | {r['body_bytes']:,} |"
            )
        p = b.get("prune")
        if p is None:
            continue
        lines += [
            "",
            f"`history prune`: {p['wall_s']:.1f} s, deleted {p['deleted_runs']:,} runs and"
            f" {p['deleted_group_runs']:,} group runs ({p['runs_before']:,} → {p['runs_after']:,}"
            " rows in `runs`).  The concurrent writer: "
            f"{p['writes_during']:,} writes during the prune,"
            f" longest {p['longest_wait_ms']:.1f} ms,"
            f" p99 {p['p99_wait_ms']:.1f} ms, {p['waits_over_100ms']} over {WRITE_WAIT_MS} ms;"
            f" alone before it, longest {p['longest_wait_alone_ms']:.1f} ms"
            f" over {p['writes_alone']} writes.",
        ]
    return "\n".join(lines)


def machine(pg_url: str, kinds: list[str]) -> dict:
    import sqlite3

    out: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "load_average": os.getloadavg(),
    }
    if "postgresql" in kinds:
        from script_monitor.store.postgres import PgDb

        with PgDb(pg_url, 10_000) as db:
            out["postgresql"] = db.execute("SHOW server_version").fetchone()[0]
            out["shared_buffers"] = db.execute("SHOW shared_buffers").fetchone()[0]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 000 runs of 500 scripts")
    parser.add_argument("--runs", type=int, help="runs in the history (default 10 000 000)")
    parser.add_argument("--scripts", type=int, help="scripts (default 5 000)")
    parser.add_argument("--groups", type=int, help="groups (default 500)")
    parser.add_argument("--reps", type=int, help="timed runs of each command (default 7)")
    parser.add_argument("--requests", type=int, help="requests per page and kind (default 50)")
    parser.add_argument(
        "--pages", default="/,/metrics", help="the dashboard's pages measured (default /,/metrics)"
    )
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql", "both"), default="both", help="which"
    )
    parser.add_argument(
        "--pg-url", default=PG_URL, help="a PostgreSQL server to create a database on"
    )
    parser.add_argument("--pg-db", default=PG_DB, help="the database created (and dropped)")
    parser.add_argument(
        "--parts",
        type=lambda text: set(text.split(",")),
        default={"commands", "web", "prune"},
        help="what to measure after generating: commands,web,prune (default: all three)",
    )
    parser.add_argument("--json", type=Path, help="results file")
    parser.add_argument("--work", type=Path, help="work directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the histories")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="use the history a run with --keep left (same --work, --pg-db and sizes)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for every process")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = dict(QUICK if args.quick else FULL)
    for key in ("runs", "scripts", "groups", "reps", "requests"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    size["pages"] = tuple(p for p in args.pages.split(",") if p)
    if size["scripts"] < size["groups"] or size["runs"] < size["scripts"]:
        raise SystemExit("need runs >= scripts >= groups")
    kinds = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    work = args.work or Path(tempfile.mkdtemp(prefix="sm-history-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "quick": args.quick,
        "sizes": size,
        "machine": machine(args.pg_url, kinds),
        "python_startup_ms": baseline(args.python),
        "backends": [],
    }
    try:
        for kind in kinds:
            report["backends"].append(bench_backend(kind, size, work, args))
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(render(report))
    quick_json = Path(tempfile.gettempdir()) / "script-monitor-bench-history-quick.json"
    out = args.json or (quick_json if args.quick else BENCH / "results-history.json")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nresults written to {out}")
    answered = all(t["answered"] for b in report["backends"] for t in b["targets"])
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(main())
