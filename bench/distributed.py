"""Distributed execution on this machine: throughput through 1, 2 and 4 Celery workers,
and what dispatching a run through Celery costs against the local engine.

    python bench/distributed.py            # 400 x `sleep 0.5`, 200 x `true` (~3 min)
    python bench/distributed.py --quick    # tiny sizes: a smoke run (tests/test_bench_smoke.py)

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
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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

FULL = {"n": 400, "sleep": 0.5, "workers": [1, 2, 4], "m": 200}
QUICK = {"n": 24, "sleep": 0.1, "workers": [1, 2], "m": 20}


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
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)  # the worker's own session, started here
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


def run(sizes: dict, work: Path) -> dict:
    import psycopg

    db = f"sm_bench_{os.getpid()}"
    queue = f"smbench-{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(f"{PG_ADMIN}/postgres", autocommit=True, connect_timeout=5)
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
    import psycopg

    last = "SELECT status, started, ended FROM runs WHERE script = %s ORDER BY id DESC LIMIT %s"
    with psycopg.connect(url) as con:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--work", type=Path, help="working directory (default: a temporary one)")
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="sm-bench-dist-") as tmp:
        work = args.work or Path(tmp)
        res = run(sizes, work)
    res["quick"] = args.quick
    print(markdown(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
