"""Distributed execution on this machine: throughput through 1, 2 and 4 Celery workers,
and what dispatching a run through Celery costs against the local engine.

    python bench/distributed.py            # 400 x `sleep 0.5`, 200 and 1 000 x `true` (~4 min)
    python bench/distributed.py --quick    # tiny sizes: a smoke run (tests/test_bench_smoke.py)
    python bench/distributed.py --only burst --before /other/checkout/main.py --reps 3

Needs PostgreSQL (trust auth, user postgres) and Redis on loopback, as the tests do
(``SCRIPT_MONITOR_TEST_PG``, ``SCRIPT_MONITOR_BENCH_REDIS`` override the URLs).  Makes
a database ``sm_bench_<pid>`` of its own (dropped at the end) and queues named
``smbench-<random>`` on Redis db 10 (deleted at the end); starts its own workers
(``script-monitor worker --concurrency 4``, each in its own session, killed by pid).

Throughput: one parallel group of N members running ``sleep 0.5`` through W workers
of concurrency 4, the group's worker cap ``4 W`` (so the caller keeps every worker
slot busy); runs/s = N / the wall time of ``run-group``.  Dispatch overhead: a serial
group of ``true`` of M members and one of 10 members; ms/run = (wall(M) - wall(10)) /
(M - 10), which leaves out the command's start-up; once through one Celery worker,
once with the local engine (SQLite, the same machine).  Every run is checked in the
history (M or N rows, all ``success``).

Burst: one parallel group of B x ``true`` through 4 workers of concurrency 4, group cap
16, on a PostgreSQL and a Redis of the benchmark's own (``initdb`` in a temp dir run as
the ``postgres`` user, ``redis-server`` on a free port: needs root), so that every CPU
second the servers spend is this workload's.  runs/s = B / (the last run's recorded end
- the group run's start), beside the same group run by the local engine (SQLite) in the
same repetition.  CPU per run = the CPU time (user + system) over the ``run-group``
command of the caller (``wait4``), the workers (each worker's process tree: its threads,
its guardian, its reaped scripts), the PostgreSQL cluster (the postmaster's tree: every
backend, the WAL writer, the checkpointer, autovacuum) and ``redis-server``, divided by
B; the local engine's is its caller's (its scripts included).  With ``--before``, the
same through another checkout's workers and caller (with its own ``.venv`` if it has one),
alternating within a repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
PG_ADMIN = os.environ.get("SCRIPT_MONITOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("SCRIPT_MONITOR_BENCH_REDIS", "redis://127.0.0.1:6379/10")
CONCURRENCY = 4

FULL = {"n": 400, "sleep": 0.5, "workers": [1, 2, 4], "m": 200, "burst": 1000, "reps": 3}
QUICK = {"n": 24, "sleep": 0.1, "workers": [1, 2], "m": 20, "burst": 40, "reps": 1}
BURST_WORKERS, BURST_CAP = 4, 16
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def sm(conf: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(MAIN), "--config-dir", str(conf), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=1800,
    )


def write_config(conf: Path, members: dict[str, tuple[str, int, str]], settings: dict) -> None:
    """``members``: group -> (command, count, execution); one script per group."""
    conf.mkdir(parents=True, exist_ok=True)
    scripts = [{"name": f"{g}_s", "command": cmd} for g, (cmd, _, _) in members.items()]
    groups = [
        {"name": g, "execution": ex, "scripts": [f"{g}_s"] * n} for g, (_, n, ex) in members.items()
    ]
    (conf / "scripts.yaml").write_text(yaml.safe_dump({"scripts": scripts}))
    (conf / "groups.yaml").write_text(yaml.safe_dump({"groups": groups}))
    (conf / "config.yaml").write_text(yaml.safe_dump(settings))


def set_cap(conf: Path, group: str, cap: int) -> None:
    """The group's own ``max_parallel_workers``."""
    doc = yaml.safe_load((conf / "groups.yaml").read_text())
    for g in doc["groups"]:
        if g["name"] == group:
            g["max_parallel_workers"] = cap
    (conf / "groups.yaml").write_text(yaml.safe_dump(doc))


def timed_group(conf: Path, group: str) -> float:
    t0 = time.perf_counter()
    r = sm(conf, "run-group", group)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"run-group {group} failed ({r.returncode}): {r.stderr[-2000:]}")
    return wall


def check_runs(conf: Path, script: str, want: int) -> None:
    r = sm(conf, "history", script, "--json", "-n", str(want + 1))
    runs = json.loads(r.stdout)
    ok = [x for x in runs if x["status"] == "success"]
    if len(runs) != want or len(ok) != want:
        raise SystemExit(f"{script}: {len(ok)} of {len(runs)} runs succeeded, {want} expected")


def stop_workers(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each worker's own session (started here), then wait; SIGKILL after 30 s."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class Workers:
    """``script-monitor worker`` processes of this benchmark, each in its own session."""

    def __init__(self, conf: Path):
        self.conf = conf
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int) -> None:
        for _ in range(n):
            i = len(self.procs)
            err = open(self.conf / f"worker-{i}.err", "w")  # noqa: SIM115
            p = subprocess.Popen(
                [
                    sys.executable, str(MAIN), "--config-dir", str(self.conf), "worker",
                    "--hostname", f"bench{i}@{os.uname().nodename}",
                    "--concurrency", str(CONCURRENCY),
                ],
                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
            )  # fmt: skip
            self.procs.append(p)
        deadline = time.monotonic() + 60
        for i, p in enumerate(self.procs):
            path = self.conf / f"worker-{i}.err"
            while "ready" not in path.read_text():
                if p.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"worker {i} did not start: {path.read_text()[-2000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        stop_workers(self.procs)
        self.procs = []


def run(sizes: dict, work: Path) -> dict:
    from script_monitor.store.postgres import PgDb

    db = f"sm_bench_{os.getpid()}"
    queue = f"smbench-{uuid.uuid4().hex[:8]}"
    admin = PgDb(f"{PG_ADMIN}/postgres", 10_000, connect_timeout=5)
    admin.execute(f"DROP DATABASE IF EXISTS {db}")
    admin.execute(f"CREATE DATABASE {db}")
    url = f"{PG_ADMIN}/{db}"
    n, m = sizes["n"], sizes["m"]
    members = {
        "sleeps": (f"sleep {sizes['sleep']}", n, "parallel"),
        "trues": ("true", m, "serial"),
        "few": ("true", 10, "serial"),
    }
    celery = {
        "store": {"url": url},
        "execution": {"backend": "celery", "lost_after": 30},
        "celery": {"broker_url": REDIS, "queue": queue},
    }
    result: dict = {
        "sizes": sizes,
        "cpus": os.cpu_count(),
        "load_before": loadavg(),
        "throughput": [],
    }
    try:
        conf = work / "celery"
        write_config(conf, members, celery)
        r = sm(conf, "store", "migrate")
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        workers = Workers(conf)
        try:
            for w in sizes["workers"]:
                workers.start(w - len(workers.procs))
                set_cap(conf, "sleeps", CONCURRENCY * w)
                before = loadavg()
                wall = timed_group(conf, "sleeps")
                span = check_runs_since(url, "sleeps_s", n)
                result["throughput"].append(
                    {
                        "workers": w,
                        "wall_s": wall,
                        "runs_per_s": n / wall,
                        "span_s": span,
                        "load": before,
                    }
                )
            workers.stop()
            workers.start(1)
            timed_group(conf, "few")  # warm-up
            few = timed_group(conf, "few")
            many = timed_group(conf, "trues")
            check_runs(conf, "trues_s", m)
            result["celery_ms_per_run"] = (many - few) / (m - 10) * 1000
        finally:
            workers.stop()
        local = work / "local"
        write_config(local, members, {})
        timed_group(local, "few")
        few = timed_group(local, "few")
        many = timed_group(local, "trues")
        check_runs(local, "trues_s", m)
        result["local_ms_per_run"] = (many - few) / (m - 10) * 1000
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()
        _delete_queue(queue)
    one = result["throughput"][0]["runs_per_s"]
    for row in result["throughput"]:
        row["vs_one"] = row["runs_per_s"] / one
    result["load_after"] = loadavg()
    return result


def check_runs_since(url: str, script: str, want: int) -> float:
    """Check that every one of the last ``want`` runs of ``script`` (the group just run)
    succeeded; return the time from the first one's start on a worker to the last end."""
    from script_monitor.store.postgres import PgDb

    last = "SELECT status, started, ended FROM runs WHERE script = %s ORDER BY id DESC LIMIT %s"
    with PgDb(url, 10_000) as con:
        rows = con.execute(
            f"SELECT status, COUNT(*) FROM ({last}) r GROUP BY status", (script, want)
        ).fetchall()
        span = con.execute(
            f"SELECT MAX(ended) - MIN(started) FROM ({last}) r", (script, want)
        ).fetchone()[0]
    if dict(rows) != {"success": want}:
        raise SystemExit(f"{script}: {dict(rows)}, {want} successes expected")
    return float(span)


def _delete_queue(queue: str) -> None:
    try:
        import redis

        redis.Redis.from_url(REDIS).delete(queue)
    except Exception:
        pass


def markdown(res: dict) -> str:
    s = res["sizes"]
    lines = [
        f"{s['n']} x `sleep {s['sleep']}` (one parallel group), workers of concurrency"
        f" {CONCURRENCY}, cap 4 per worker; {res['cpus']} CPUs; load average before"
        f" {res['load_before']}, after {res['load_after']}",
        "",
        "| workers | wall (s) | runs/s | vs 1 worker | first start to last end (s)"
        " | load avg at start |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for row in res["throughput"]:
        lines.append(
            f"| {row['workers']} | {row['wall_s']:.2f} | {row['runs_per_s']:.1f}"
            f" | {row['vs_one']:.2f}x | {row['span_s']:.2f} | {row['load']} |"
        )
    lines += [
        "",
        f"Dispatch overhead, a serial group of {s['m']} x `true` (ms/run, start-up left out):",
        "",
        "| engine | ms/run |",
        "|---|---:|",
        f"| local (SQLite) | {res['local_ms_per_run']:.1f} |",
        f"| Celery (1 worker, Redis, PostgreSQL) | {res['celery_ms_per_run']:.1f} |",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- burst: 1 000 x `true`

CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, its threads, the children it reaped and
    every live descendant; 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0.0
    f = stat[stat.rfind(b")") + 2 :].split()
    total = sum(int(x) for x in f[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
    kids: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            kids.update(
                int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            )
    except OSError:
        pass
    return total + sum(tree_cpu(k) for k in kids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServices:
    """A PostgreSQL 15 cluster (``initdb``, run as ``postgres``, server defaults: fsync on)
    and a ``redis-server`` of this benchmark's own, on free loopback ports."""

    def __init__(self, sql_stats: bool = False) -> None:
        self.sql_stats = sql_stats  # pg_stat_statements loaded: statements counted per run
        self.root = Path(tempfile.mkdtemp(prefix="sm-bench-pg-"))
        self.pg_port, self.redis_port = free_port(), free_port()
        self.redis: subprocess.Popen | None = None
        self.pg_started = False

    def _as_postgres(self, *argv: str) -> None:
        r = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=120
        )
        if r.returncode != 0:
            raise SystemExit(f"{argv[0]} failed: {r.stderr[-2000:]}")

    def start(self) -> None:
        shutil.chown(self.root, "postgres", "postgres")
        data = str(self.root / "data")
        self._as_postgres(str(PG_BIN / "initdb"), "-A", "trust", "-U", "postgres", "-D", data)
        opts = f"-p {self.pg_port} -k {self.root} -c listen_addresses=127.0.0.1"
        if self.sql_stats:
            opts += " -c shared_preload_libraries=pg_stat_statements"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", data, "-o", opts, "-w", "-l", str(self.root / "log"),
            "start",
        )  # fmt: skip
        self.pg_started = True
        self.redis = subprocess.Popen(
            [
                "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.root),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.redis_port).ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise SystemExit("the private redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()
        if self.pg_started:
            data = str(self.root / "data")
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def pg_admin(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def cpu(self) -> dict[str, float]:
        pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        assert self.redis is not None
        return {"postgresql": tree_cpu(pid), "redis": tree_cpu(self.redis.pid)}


def timed_caller(py: list[str], conf: Path, group: str) -> tuple[float, float]:
    """Run ``run-group``; (wall seconds, CPU seconds of it and its reaped children)."""
    out = conf / f"run-group-{group}.out"
    t0 = time.perf_counter()
    with open(out, "w") as sink:
        p = subprocess.Popen(
            [*py, "--config-dir", str(conf), "run-group", group],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        lines = [x for x in out.read_text().splitlines() if "success" not in x]
        raise SystemExit(
            f"run-group {group} in {conf} failed ({p.returncode}):\n" + "\n".join(lines[-30:])
        )
    return wall, usage.ru_utime + usage.ru_stime


def group_span(con: object, want: int) -> tuple[float, float]:
    """(the newest group run's start, the last end of its runs), checking that all of
    its ``want`` runs succeeded."""
    q = (
        "SELECT g.started, MAX(r.ended), COUNT(*), COUNT(*) FILTER (WHERE r.status = 'success')"
        " FROM group_runs g JOIN runs r ON r.group_run_id = g.id"
        " WHERE g.id = (SELECT MAX(id) FROM group_runs) GROUP BY g.started"
    )
    started, ended, count, ok = con.execute(q).fetchone()  # type: ignore[attr-defined]
    if count != want or ok != want:
        raise SystemExit(f"burst: {ok} of {count} runs succeeded, {want} expected")
    return float(started), float(ended)


class CelerySide:
    """One checkout's caller and workers on a database and a queue of their own."""

    def __init__(self, label: str, main: Path, svc: PrivateServices, work: Path, n: int):
        self.label, self.main, self.svc, self.n = label, main, svc, n
        own = main.parent / ".venv" / "bin" / "python"  # a checkout's own dependencies
        self.py = [str(own) if own.exists() else sys.executable, str(main)]
        self.db = f"sm_burst_{label}"
        self.conf = work / f"burst-{label}"
        self.workers: list[subprocess.Popen] = []

    def url(self) -> str:
        return f"{self.svc.pg_admin}/{self.db}"

    def start(self) -> None:
        from script_monitor.store.postgres import PgDb

        with PgDb(f"{self.svc.pg_admin}/postgres", 10_000) as admin:
            admin.execute(f"CREATE DATABASE {self.db}")
        if self.svc.sql_stats:
            with PgDb(self.url(), 10_000) as con:
                con.execute("CREATE EXTENSION pg_stat_statements")
        settings = {
            "store": {"url": self.url()},
            "execution": {"backend": "celery", "lost_after": 30},
            "celery": {"broker_url": self.svc.redis_url, "queue": f"burst-{self.label}"},
        }
        members = {"burst": ("true", self.n, "parallel"), "warm": ("true", 20, "parallel")}
        write_config(self.conf, members, settings)
        set_cap(self.conf, "burst", BURST_CAP)
        set_cap(self.conf, "warm", BURST_CAP)
        r = subprocess.run([*self.py, "--config-dir", str(self.conf), "store", "migrate"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        for i in range(BURST_WORKERS):
            err = open(self.conf / f"worker-{i}.err", "w")  # noqa: SIM115
            self.workers.append(
                subprocess.Popen(
                    [
                        *self.py,
                        "--config-dir",
                        str(self.conf),
                        "worker",
                        "--hostname",
                        f"{self.label}{i}@{os.uname().nodename}",
                        "--concurrency",
                        str(CONCURRENCY),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 60
        for i, p in enumerate(self.workers):
            path = self.conf / f"worker-{i}.err"
            while "ready" not in path.read_text():
                if p.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"worker {i} did not start: {path.read_text()[-2000:]}")
                time.sleep(0.1)
        timed_caller(self.py, self.conf, "warm")  # connections, imports, caches

    def measure(self) -> dict:
        from script_monitor.store.postgres import PgDb

        if self.svc.sql_stats:
            with PgDb(self.url(), 10_000) as con:
                con.execute("SELECT pg_stat_statements_reset()")
        before = {"workers": sum(tree_cpu(p.pid) for p in self.workers), **self.svc.cpu()}
        load = loadavg()
        try:
            wall, caller = timed_caller(self.py, self.conf, "burst")
        except SystemExit as e:
            with PgDb(self.url(), 10_000) as con:
                bad = con.execute(
                    "SELECT id, status, detail, host, heartbeat - started, ended - started"
                    " FROM runs WHERE status != 'success' ORDER BY id"
                ).fetchall()
            raise SystemExit(f"{self.label}: {e}\n{bad}") from None
        after = {"workers": sum(tree_cpu(p.pid) for p in self.workers), **self.svc.cpu()}
        with PgDb(self.url(), 10_000) as con:
            started, ended = group_span(con, self.n)
        cpu = {"caller": caller, **{k: after[k] - before[k] for k in before}}
        sql = self.statements() if self.svc.sql_stats else None
        return {
            "sql": sql,
            "runs_per_s": self.n / (ended - started),
            "span_s": ended - started,
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_ms_per_run": sum(cpu.values()) / self.n * 1000,
            "load": load,
        }

    def statements(self) -> list[tuple[float, float, str]]:
        """Calls per run and server ms per run of each statement on this database."""
        from script_monitor.store.postgres import PgDb

        with PgDb(self.url(), 10_000) as con:
            rows = con.execute(
                "SELECT calls, total_exec_time, query FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
                " ORDER BY calls DESC"
            ).fetchall()
        return [(c / self.n, t / self.n, " ".join(q.split())[:150]) for c, t, q in rows]

    def stop(self) -> None:
        stop_workers(self.workers)
        self.workers = []


class LocalSide:
    """The same group through the local engine (SQLite in the config's state folder)."""

    def __init__(self, work: Path, n: int):
        self.n = n
        self.py = [sys.executable, str(MAIN)]
        self.conf = work / "burst-local"
        write_config(self.conf, {"burst": ("true", n, "parallel")}, {})
        set_cap(self.conf, "burst", BURST_CAP)

    def measure(self) -> dict:
        load = loadavg()
        wall, caller = timed_caller(self.py, self.conf, "burst")
        con = sqlite3.connect(self.conf / ".script-monitor" / "history.db")
        try:
            started, ended = group_span(con, self.n)
        finally:
            con.close()
        return {
            "runs_per_s": self.n / (ended - started),
            "span_s": ended - started,
            "wall_s": wall,
            "cpu_s": {"caller": caller},
            "cpu_ms_per_run": caller / self.n * 1000,
            "load": load,
        }


def run_burst(sizes: dict, work: Path, before: Path | None) -> dict:
    """The burst measurements, every side once per repetition, the order turned around
    every other repetition; the median repetition of each side."""
    svc = PrivateServices(sizes.get("sql_stats", False))
    sides: dict[str, CelerySide | LocalSide] = {}
    reps: dict[str, list[dict]] = {}
    try:
        svc.start()
        if before is not None:
            sides["before"] = CelerySide("before", before, svc, work, sizes["burst"])
        sides["celery"] = CelerySide("after", MAIN, svc, work, sizes["burst"])
        sides["local"] = LocalSide(work, sizes["burst"])
        for side in sides.values():
            if isinstance(side, CelerySide):
                side.start()
        sides["local"].measure()  # warm-up: the history's first rows, the page cache
        for rep in range(sizes["reps"]):
            names = list(sides) if rep % 2 == 0 else list(reversed(sides))
            for name in names:
                reps.setdefault(name, []).append(sides[name].measure())
    finally:
        for side in sides.values():
            if isinstance(side, CelerySide):
                side.stop()
        svc.stop()
    out: dict = {"size": sizes["burst"], "workers": BURST_WORKERS, "cap": BURST_CAP}
    for name, rows in reps.items():
        mid = sorted(rows, key=lambda r: r["runs_per_s"])[len(rows) // 2]
        out[name] = {
            **mid,
            "all_runs_per_s": [r["runs_per_s"] for r in rows],
            "all_cpu_ms_per_run": [r["cpu_ms_per_run"] for r in rows],
            "median_cpu_ms_per_run": statistics.median(r["cpu_ms_per_run"] for r in rows),
        }
    return out


def burst_markdown(b: dict) -> str:
    local = b["local"]
    lines = [
        f"Burst: one parallel group of {b['size']} x `true`, {b['workers']} workers of"
        f" concurrency {CONCURRENCY}, group cap {b['cap']}; private PostgreSQL and Redis;"
        " median repetition by runs/s",
        "",
        "| engine | runs/s | vs local | CPU ms/run | vs local | caller | workers"
        " | PostgreSQL | Redis | load avg at start |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in ("local", "before", "celery"):
        if name not in b:
            continue
        r = b[name]
        cpu = {k: v / b["size"] * 1000 for k, v in r["cpu_s"].items()}
        label = {"local": "local (SQLite)", "before": "Celery, before", "celery": "Celery"}[name]
        lines.append(
            f"| {label} | {r['runs_per_s']:.0f} | {r['runs_per_s'] / local['runs_per_s']:.2f}x"
            f" | {r['median_cpu_ms_per_run']:.2f}"
            f" | {r['median_cpu_ms_per_run'] / local['median_cpu_ms_per_run']:.2f}x"
            + "".join(
                f" | {cpu[k]:.2f}" if k in cpu else " | -"
                for k in ("caller", "workers", "postgresql", "redis")
            )
            + f" | {r['load']} |"
        )
    lines += [
        "",
        "CPU columns: ms per run of each part; CPU ms/run is the median repetition's sum.",
    ]
    for name in ("before", "celery"):
        sql = b.get(name, {}).get("sql")
        if sql:
            lines += [
                "",
                f"{name}: {sum(c for c, _, _ in sql):.1f} statements per run"
                " (pg_stat_statements; calls per run, server ms per run):",
                "",
            ]
            lines += [f"    {c:6.2f} {t:6.3f}  {q}" for c, t, q in sql[:14]]
    return "\n".join(lines)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    ap.add_argument("--only", choices=["tables", "burst"], help="only one part")
    ap.add_argument("--before", type=Path, help="another checkout's main.py, side by side")
    ap.add_argument("--reps", type=int, help="burst repetitions (default 3, --quick 1)")
    ap.add_argument(
        "--sql-stats",
        action="store_true",
        help="burst: count the statements per run (pg_stat_statements; costs some CPU)",
    )
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _terminated)  # stop the workers and servers started here
    sizes = dict(QUICK if args.quick else FULL)
    if args.reps:
        sizes["reps"] = args.reps
    sizes["sql_stats"] = args.sql_stats
    burst = args.only != "tables" and os.geteuid() == 0 and (PG_BIN / "initdb").exists()
    with tempfile.TemporaryDirectory(prefix="sm-bench-dist-") as tmp:
        work = args.work or Path(tmp)
        res = run(sizes, work) if args.only != "burst" else {"sizes": sizes}
        if burst:
            res["burst"] = run_burst(sizes, work, args.before)
    res["quick"] = args.quick
    if args.only != "burst":
        print(markdown(res))
    if burst:
        print("\n" + burst_markdown(res["burst"]))
    elif args.only != "tables":
        print("\nBurst left out: it needs root and PostgreSQL 15's initdb for its own servers.")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
