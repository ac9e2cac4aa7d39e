"""Chaos soak of a cluster: schedulers, workers, a broker and a store, under faults.

A private PostgreSQL (initdb in a temp dir; needs root and PostgreSQL's binaries) and a
private redis-server (nothing kept on disk) are started; then ``--schedulers``
schedulers and ``--workers`` Celery workers, each with a config directory of its own
and the same YAML: ``--groups`` groups scheduled every minute, on a clock sped up
``--speed`` times (a minute every 60 / speed real seconds), each of one script that
appends its run id to a marker file.  While it runs, a driver kills a random worker or
scheduler with SIGKILL every ``--chaos`` seconds (a random time between it and twice
it) and starts it again a second later, and restarts the broker and the store once
each.  At the end every process is stopped and the invariants are checked:

- each due tick of each group was handled exactly once (fired, or recorded skipped or
  missed with its reason), with no gap between the first and the last;
- no run executed twice (marker files), and every fired tick has one group run;
- no run and no group run is left ``running``.

    sudo .venv/bin/python bench/soak.py --minutes 2          # the short version
    sudo .venv/bin/python bench/soak.py --minutes 24         # a compressed day at 60x

It prints the counts and exits 1 if an invariant does not hold.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=120
    )


class Postgres:
    def __init__(self, root: Path):
        self.root, self.port, self.data = root, free_port(), root / "data"
        root.mkdir(parents=True, exist_ok=True)
        shutil.chown(root, "postgres", "postgres")
        r = as_postgres(
            str(PG_BIN / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(self.data)
        )
        if r.returncode:
            sys.exit(f"initdb failed: {r.stderr}")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        r = as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-w", "-l",
            str(self.root / "log"), "start",
        )  # fmt: skip
        if r.returncode:
            sys.exit(f"pg_ctl start failed: {r.stderr}")

    def stop(self) -> None:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


class Redis:
    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)

    def crash(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Part:
    """A scheduler or a worker: a process that can be killed and started again."""

    def __init__(self, kind: str, conf: Path, env: dict[str, str], name: str):
        self.kind, self.conf, self.env, self.name = kind, conf, env, name
        self.proc: subprocess.Popen | None = None
        self.log = open(conf / f"{kind}-{name}.log", "a")  # noqa: SIM115

    def start(self) -> None:
        extra = ["--hostname", f"{self.name}@soak", "--concurrency", "4"]
        argv = [sys.executable, str(MAIN), "--config-dir", str(self.conf), self.kind]
        self.proc = subprocess.Popen(
            argv + (extra if self.kind == "worker" else []),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # the process alone, as a crash would
            self.proc.wait()

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


def sql(url: str, text: str) -> list:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        return con.execute(text).fetchall()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=2.0, help="real minutes of chaos")
    p.add_argument("--speed", type=float, default=60.0, help="the schedulers' clock speed")
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--schedulers", type=int, default=2)
    p.add_argument("--chaos", type=float, default=20.0, help="seconds between kills (to 2x)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args()
    if os.geteuid() != 0 or not (PG_BIN / "initdb").exists() or not shutil.which("redis-server"):
        sys.exit("needs root, PostgreSQL 15's binaries and redis-server")
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="sm-soak-"))
    work.chmod(0o755)  # the postgres user enters it to reach its data folder
    pg, redis = Postgres(work / "pg"), Redis(work)
    pg.start()
    redis.start()
    marks = work / "marks"
    marks.mkdir()
    import yaml

    names = [f"g{i}" for i in range(args.groups)]
    settings = {
        "store": {"url": pg.url, "retry_for": 90},
        "execution": {"backend": "celery", "lost_after": 5, "claim_timeout": 15},
        "celery": {"broker_url": redis.url, "queue": "soak"},
        "scheduling": {"lease_ttl": 3, "timezone": "UTC", "shutdown_grace": 30},
    }
    scripts = [
        {"name": f"s{i}", "command": f'echo "$SCRIPT_MONITOR_RUN_ID" >> {marks}/s{i}'}
        for i in range(args.groups)
    ]
    groups = [
        {"name": n, "schedule": "* * * * *", "scripts": [f"s{i}"], "overlap": "allow"}
        for i, n in enumerate(names)
    ]
    anchor = time.time() + 3
    start_sim = 1893456000.0 - 30  # 2029-12-31 23:59:30 UTC at the anchor
    env = {**os.environ, "SCRIPT_MONITOR_CLOCK": f"{start_sim}x{args.speed}@{anchor}"}
    parts: list[Part] = []
    for kind, count in (("worker", args.workers), ("scheduler", args.schedulers)):
        for i in range(count):
            conf = work / f"{kind}{i}"
            conf.mkdir()
            (conf / "config.yaml").write_text(yaml.safe_dump(settings))
            (conf / "scripts.yaml").write_text(yaml.safe_dump({"scripts": scripts}))
            (conf / "groups.yaml").write_text(yaml.safe_dump({"groups": groups}))
            parts.append(Part(kind, conf, env, f"{kind[0]}{i}"))
    r = subprocess.run(
        [sys.executable, str(MAIN), "--config-dir", str(parts[0].conf), "store", "migrate"],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode:
        sys.exit(r.stderr)
    for part in parts:
        part.start()
    began = time.monotonic()
    end = began + args.minutes * 60
    events: list[str] = []
    faults = ["broker", "store"]
    next_fault = began + rng.uniform(args.chaos, 2 * args.chaos)
    while time.monotonic() < end:
        time.sleep(0.2)
        if time.monotonic() < next_fault:
            continue
        next_fault = time.monotonic() + rng.uniform(args.chaos, 2 * args.chaos)
        at = f"{time.monotonic() - began:6.1f}s"
        if faults and rng.random() < 0.3:
            what = faults.pop(rng.randrange(len(faults)))
            if what == "broker":
                redis.crash()
                time.sleep(2)
                redis.start()
                events.append(f"{at} broker crashed (nothing kept) and started again 2 s later")
            else:
                pg.stop()
                time.sleep(5)
                pg.start()
                events.append(f"{at} store stopped for 5 s")
            continue
        victim = rng.choice(parts)
        victim.kill()
        events.append(f"{at} SIGKILL {victim.kind} {victim.name}")
        time.sleep(1)
        victim.start()
    for what in faults:  # the broker and the store restart once each, whatever the dice said
        if what == "broker":
            redis.crash()
            time.sleep(2)
            redis.start()
        else:
            pg.stop()
            time.sleep(5)
            pg.start()
        events.append(f"{time.monotonic() - began:6.1f}s {what} restarted (end of the run)")
    codes = {}
    for part in [p for p in parts if p.kind == "scheduler"]:  # first: they stop firing
        codes[part.name] = part.stop()
    time.sleep(20)  # lost_after, claim_timeout: every run ends one way or another
    for part in [p for p in parts if p.kind == "worker"]:
        codes[part.name] = part.stop()
    wall = time.monotonic() - began
    ok = check(pg.url, marks, names, events, codes, wall)
    pg.stop()
    redis.crash()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder: {work}")
    return 0 if ok else 1


def check(url: str, marks: Path, names: list[str], events, codes, wall: float) -> bool:
    problems = []
    ticks = sql(url, "SELECT group_name, due, outcome FROM ticks ORDER BY group_name, due")
    by_group: dict[str, list] = {}
    for g, due, outcome in ticks:
        by_group.setdefault(g, []).append((due, outcome))
    outcomes = Counter(o for _, _, o in ticks)
    for g in names:
        dues = [d for d, _ in by_group.get(g, [])]
        if not dues:
            problems.append(f"group {g}: no tick handled")
            continue
        gaps = [(a, b) for a, b in itertools.pairwise(dues) if b - a != 60]
        if gaps:
            problems.append(f"group {g}: ticks not handled: {gaps[:3]}")
    executed = Counter()
    for f in marks.iterdir():
        executed.update(int(x) for x in f.read_text().split())
    twice = [i for i, n in executed.items() if n > 1]
    if twice:
        problems.append(f"runs executed twice: {twice[:10]}")
    runs = dict(sql(url, "SELECT status, COUNT(*) FROM runs GROUP BY status"))
    groups = dict(sql(url, "SELECT status, COUNT(*) FROM group_runs GROUP BY status"))
    ran = sql(
        url,
        "SELECT COUNT(*) FROM group_runs WHERE trigger = 'schedule'"
        " AND status NOT IN ('skipped', 'missed')",
    )[0][0]
    if ran != outcomes.get("fired", 0):
        problems.append(f"{outcomes.get('fired', 0)} ticks fired, {ran} group runs")
    if runs.get("running") or groups.get("running"):
        problems.append(f"left running: {runs.get('running', 0)} runs, "
                        f"{groups.get('running', 0)} group runs")  # fmt: skip
    notrun = sql(url, "SELECT id FROM runs WHERE status = 'success'")
    missing = [i for (i,) in notrun if i not in executed]
    if missing:
        problems.append(f"success without an execution: {missing[:10]}")
    report = {
        "wall_s": round(wall, 1),
        "ticks": dict(outcomes),
        "runs": runs,
        "group_runs": groups,
        "executions": sum(executed.values()),
        "executed_twice": len(twice),
        "faults": events,
        "exit_codes": codes,
        "problems": problems,
    }
    print(json.dumps(report, indent=1))
    return not problems


if __name__ == "__main__":
    sys.exit(main())
