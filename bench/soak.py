"""Chaos soak of a cluster: schedulers, workers, a broker and a store, under faults.

A private PostgreSQL (initdb in a temp dir; needs root and PostgreSQL's binaries) and a
private redis-server (nothing kept on disk) are started; then ``--schedulers``
schedulers and ``--workers`` Celery workers, each with a config directory of its own
and the same YAML: ``--groups`` groups scheduled every minute, on a clock sped up
``--speed`` times (a minute every 60 / speed real seconds), each of one script that
appends its run id to a marker file.  Beside them, ``--callers`` ``run-group`` callers
at a time run unscheduled groups of three scripts each (a new caller starts as soon as
one ends).  Every script fails (exit 1) when its run id is a multiple of
``--fail-every``; failures notify a ``json://`` channel whose messages a small HTTP
receiver in this process counts.  While it runs, a driver kills a random worker,
scheduler or caller with SIGKILL every ``--chaos`` seconds (a random time between it
and twice it), starts a worker or scheduler again a second later (a killed caller's
group run is left to a scheduler to carry on), and restarts the broker and the store
once each.  At the end every process is stopped, pending notifications are delivered,
and the invariants are checked:

- each due tick of each group was handled exactly once (fired, or recorded skipped or
  missed with its reason), with no gap between the first and the last;
- no run executed twice (marker files), and every fired tick has one group run;
- every group run of a caller ended (carried on by a scheduler when its caller was
  killed) with one run of each of its scripts;
- no run and no group run is left ``running``;
- every failed run (``failed``, ``timeout``, ``lost``) was notified exactly once, and
  no other run was.

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
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class Receiver:
    """An HTTP endpoint for Apprise's ``json://``: keeps the message of every POST."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        lock = threading.Lock()
        messages = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    text = json.loads(body).get("message", "")
                except ValueError:
                    text = body.decode(errors="replace")
                with lock:
                    messages.append(text)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


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
        if self.proc is None:
            return None
        if self.proc.poll() is not None:  # it ended by itself: say how
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


class Callers:
    """``count`` ``run-group`` callers at a time, each of a group of its own; a new one
    starts as soon as one has ended."""

    def __init__(self, conf: Path, env: dict[str, str], groups: list[str], count: int):
        self.conf, self.env, self.groups = conf, env, groups
        self.slots: list[subprocess.Popen | None] = [None] * count
        self.codes: Counter = Counter()
        self.started = 0
        self.log = open(conf / "callers.log", "a")  # noqa: SIM115

    def refill(self) -> None:
        for i, proc in enumerate(self.slots):
            if proc is not None and proc.poll() is None:
                continue
            if proc is not None:
                self.codes[proc.returncode] += 1
            group = self.groups[i]  # one caller per group: no two orchestrate one group
            self.started += 1
            argv = [sys.executable, str(MAIN), "--config-dir", str(self.conf)]
            self.slots[i] = subprocess.Popen(
                [*argv, "run-group", group],
                stdout=self.log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            )  # fmt: skip

    def running(self) -> list[subprocess.Popen]:
        return [p for p in self.slots if p is not None and p.poll() is None]

    def wait(self, timeout: float) -> None:
        for proc in self.slots:
            if proc is None:
                continue
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.codes[proc.returncode] += 1
        self.slots = []


def sql(url: str, text: str, args: tuple = ()) -> list:
    from script_monitor.store.postgres import PgDb

    with PgDb(url, 10_000) as con:
        return con.execute(text, args).fetchall()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=2.0, help="real minutes of chaos")
    p.add_argument("--speed", type=float, default=60.0, help="the schedulers' clock speed")
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--schedulers", type=int, default=2)
    p.add_argument("--callers", type=int, default=2, help="run-group callers at a time")
    p.add_argument("--fail-every", type=int, default=10, help="run ids that fail: multiples")
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
    receiver = Receiver()
    settings = {
        "store": {"url": pg.url, "retry_for": 90},
        "execution": {"backend": "celery", "lost_after": 5, "claim_timeout": 15},
        "celery": {"broker_url": redis.url, "queue": "soak"},
        "scheduling": {"lease_ttl": 3, "timezone": "UTC", "shutdown_grace": 30},
        "notifications": {
            "channels": {"hook": [f"json://127.0.0.1:{receiver.port}/"]},
            "default": {"channels": ["hook"], "on": ["failure"]},
            "timeout": 5,
        },
    }

    def command(name: str, pause: float = 0) -> str:
        wait = f"sleep {pause}; " if pause else ""
        return (
            f'echo "$SCRIPT_MONITOR_RUN_ID" >> {marks}/{name}; {wait}'
            f"[ $((SCRIPT_MONITOR_RUN_ID % {args.fail_every})) -ne 0 ]"
        )

    called = {f"c{k}": [f"c{k}s{j}" for j in range(3)] for k in range(args.callers)}
    scripts = [{"name": f"s{i}", "command": command(f"s{i}")} for i in range(args.groups)]
    scripts += [{"name": n, "command": command(n, 0.5)} for ns in called.values() for n in ns]
    groups = [
        {"name": n, "schedule": "* * * * *", "scripts": [f"s{i}"], "overlap": "allow"}
        for i, n in enumerate(names)
    ]
    groups += [{"name": g, "scripts": ns} for g, ns in called.items()]
    anchor = time.time() + 3
    start_sim = 1893456000.0 - 30  # 2029-12-31 23:59:30 UTC at the anchor
    env = {**os.environ, "SCRIPT_MONITOR_CLOCK": f"{start_sim}x{args.speed}@{anchor}"}
    parts: list[Part] = []
    for kind, count in (("worker", args.workers), ("scheduler", args.schedulers), ("caller", 1)):
        for i in range(count):
            conf = work / f"{kind}{i}"
            conf.mkdir()
            (conf / "config.yaml").write_text(yaml.safe_dump(settings))
            (conf / "scripts.yaml").write_text(yaml.safe_dump({"scripts": scripts}))
            (conf / "groups.yaml").write_text(yaml.safe_dump({"groups": groups}))
            if kind != "caller":
                parts.append(Part(kind, conf, env, f"{kind[0]}{i}"))
    callers = Callers(work / "caller0", env, list(called), args.callers)
    r = subprocess.run(
        [sys.executable, str(MAIN), "--config-dir", str(parts[0].conf), "store", "migrate"],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode:
        sys.exit(r.stderr)
    for part in parts:
        part.start()
    time.sleep(3)  # the workers' start-up, before the first caller sends its runs
    began = time.monotonic()
    end = began + args.minutes * 60
    events: list[str] = []
    faults = ["broker", "store"]
    hit: set[str] = set()
    next_fault = began + rng.uniform(args.chaos, 2 * args.chaos)
    while time.monotonic() < end:
        time.sleep(0.2)
        callers.refill()
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
        running = callers.running()
        kinds = [k for k in ("worker", "scheduler", "caller") if k != "caller" or running]
        kind = rng.choice([k for k in kinds if k not in hit] or kinds)  # each kind early on
        hit.add(kind)
        if kind == "caller":  # its group run is left to a scheduler to carry on
            caller = rng.choice(running)
            os.kill(caller.pid, signal.SIGKILL)
            caller.wait()
            events.append(f"{at} SIGKILL caller {' '.join(caller.args[-2:])}")
            continue
        victim = rng.choice([p for p in parts if p.kind == kind])
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
    callers.wait(120)
    # A killed caller's group run is carried on by a scheduler once its lease has run out.
    deadline = time.monotonic() + 120
    while (
        time.monotonic() < deadline
        and sql(
            pg.url,
            "SELECT COUNT(*) FROM group_runs WHERE trigger = 'manual' AND status = 'running'",
        )[0][0]
    ):
        time.sleep(1)
    codes: dict[str, object] = {}
    for part in [p for p in parts if p.kind == "scheduler"]:  # first: they stop firing
        codes[part.name] = part.stop()
    time.sleep(20)  # lost_after, claim_timeout: every run ends one way or another
    for part in [p for p in parts if p.kind == "worker"]:
        codes[part.name] = part.stop()
    codes["callers"] = {str(k): v for k, v in sorted(callers.codes.items())}
    # What the stopped processes had not sent yet, as the next command would.
    subprocess.run(
        [sys.executable, str(MAIN), "--config-dir", str(callers.conf), "notifications",
         "--deliver"], capture_output=True, timeout=120, env=env,
    )  # fmt: skip
    wall = time.monotonic() - began
    ok = check(pg.url, marks, names, called, receiver.messages, events, codes, wall)
    receiver.close()
    pg.stop()
    redis.crash()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder: {work}")
    return 0 if ok else 1


def check(
    url: str,
    marks: Path,
    names: list[str],
    called: dict[str, list[str]],
    messages: list[str],
    events: list[str],
    codes: dict,
    wall: float,
) -> bool:
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
    # A run that ended with an exit code was executed (a run the broker never took is
    # `failed` too, "not sent to ...", with no exit code).
    notrun = sql(url, "SELECT id FROM runs WHERE exit_code IS NOT NULL")
    missing = [i for (i,) in notrun if i not in executed]
    if missing:
        problems.append(f"an exit code without an execution: {missing[:10]}")
    problems += check_callers(url, called)
    failed = {i for (i,) in sql(url, _FAILED)}
    notified = Counter(int(x) for m in messages for x in re.findall(r"\(run (\d+)\)", m))
    wrong = sorted(i for i in failed | set(notified) if notified[i] != (i in failed))
    if wrong:
        problems.append(
            "failures not notified exactly once: "
            + ", ".join(f"run {i}: {notified[i]}x" for i in wrong[:10])
        )
        for i in wrong[:3]:  # one message sent twice, or two messages naming the run?
            named = [m for m in messages if f"(run {i})" in m]
            rows = sql(
                url,
                "SELECT id, key, state, attempts FROM notifications WHERE body LIKE %s",
                (f"%(run {i})%",),
            )
            problems.append(f"run {i}: {len(set(named))} distinct texts received; rows {rows}")
    unsent = sql(url, "SELECT state, COUNT(*) FROM notifications GROUP BY state")
    if any(state != "sent" for state, _ in unsent):
        problems.append(f"notifications not sent: {dict(unsent)}")
    manual = dict(
        sql(url, "SELECT status, COUNT(*) FROM group_runs WHERE trigger = 'manual' GROUP BY status")
    )
    adopted = sum(1 for e in events if "SIGKILL caller" in e)
    report = {
        "wall_s": round(wall, 1),
        "ticks": dict(outcomes),
        "runs": runs,
        "group_runs": groups,
        "caller_group_runs": manual,
        "callers_killed": adopted,
        "executions": sum(executed.values()),
        "executed_twice": len(twice),
        "failed_runs": len(failed),
        "notifications": {"messages": len(messages), "runs_named": sum(notified.values())},
        "faults": events,
        "exit_codes": codes,
        "problems": problems,
    }
    print(json.dumps(report, indent=1))
    return not problems


_FAILED = "SELECT id FROM runs WHERE status IN ('failed', 'timeout', 'lost')"


def check_callers(url: str, called: dict[str, list[str]]) -> list[str]:
    """Every group run of a caller ended, with one run of each of its scripts."""
    problems = []
    rows = sql(
        url,
        "SELECT g.id, g.group_name, g.status, r.script FROM group_runs g"
        " LEFT JOIN runs r ON r.group_run_id = g.id WHERE g.trigger = 'manual'",
    )
    by_run: dict[int, tuple[str, str, Counter]] = {}
    for gid, group, status, script in rows:
        seen = by_run.setdefault(gid, (group, status, Counter()))[2]
        if script is not None:
            seen[script] += 1
    for gid, (group, status, seen) in sorted(by_run.items()):
        if status not in ("success", "failed"):
            problems.append(f"caller group run {gid} ({group}) ended {status}")
        elif seen != Counter(called[group]):
            problems.append(f"caller group run {gid} ({group}): runs {dict(seen)}")
    return problems[:10]


if __name__ == "__main__":
    sys.exit(main())
