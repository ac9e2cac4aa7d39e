"""Distributed execution with real servers: PostgreSQL, Redis or RabbitMQ, and real
``script-monitor worker`` processes (docs/DISTRIBUTED.md).

Each test writes a config directory, runs it locally (SQLite) where output is
compared, then with ``execution.backend: celery`` against the session's PostgreSQL
database and workers started for the test (their process groups are killed after).
Redis uses db 9 (flushed per session); RabbitMQ queue names of the test's own.
Without the servers these tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import (
    MAIN,
    assert_clean_error,
    cli,
    direct_sql,
    events,
    make_config,
    popen,
    probe,
    sm,
)
from test_guide import doc_with_group, fenced_after, setup_guide

pytestmark = pytest.mark.slow


def runs_of(conf: Path, name: str) -> list[dict]:
    return json.loads(sm(conf, "history", name, "--json").stdout)


@pytest.mark.parametrize(
    "group,match,failing",
    [
        ("deployment", {"stop_on_error": None}, ("build_app",)),
        ("deployment", {"stop_on_error": True}, ("build_app",)),
        ("monitoring", {"execution": "parallel"}, ("check_database",)),
    ],
)
def test_the_guide_examples_print_the_same_on_two_workers(cluster, tmp_path, group, match, failing):
    local = setup_guide(tmp_path / "local", doc_with_group(group, **match), failing=failing)
    remote = setup_guide(tmp_path / "remote", doc_with_group(group, **match), failing=failing)
    here = cli("run-group", group, cwd=local)
    cluster.distribute(remote)
    cluster.worker(remote, "w1")
    cluster.worker(remote, "w2")
    there = cli("run-group", group, cwd=remote)
    assert there.returncode == here.returncode, there.stderr
    if group == "monitoring":  # parallel: the order of the ends is a race here as there
        assert sorted(there.stdout.splitlines()) == sorted(here.stdout.splitlines())
    else:
        assert there.stdout == here.stdout
    assert sorted(events(remote)) == sorted(events(local))  # the same scripts ran
    if group == "monitoring":
        assert there.stdout.endswith(fenced_after("Parallel execution shows a summary at the end:"))
    hosts = {r["host"] for s in events(remote) for r in runs_of(remote, s)}
    assert hosts <= {"w1@test", "w2@test"} and hosts


def test_depends_on_retries_and_queues_across_workers(cluster, tmp_path):
    conf = make_config(
        tmp_path / "c",
        {
            "fetch": probe("fetch", 0.3),
            "flaky": {
                "command": "test -e flaky.once || { touch flaky.once; exit 5; }; echo ok",
                "retries": {"count": 1, "delay": 0},
            },
            "report": {"command": probe("report", 0.1), "queue": f"{cluster.queue}-db"},
        },
        [
            {
                "name": "etl",
                "execution": "parallel",
                "scripts": ["fetch", "flaky", "report"],
                "depends_on": {"report": ["fetch", "flaky"]},
            }
        ],
    )
    cluster.distribute(conf)
    cluster.worker(conf, "general")
    cluster.worker(conf, "dbhost", queues="db")
    r = sm(conf, "run-group", "etl")
    assert r.returncode == 0, r.stdout + r.stderr
    ev = events(conf)
    assert ev["report"][0] >= ev["fetch"][1]  # after its dependency ended
    flaky = runs_of(conf, "flaky")
    assert [(x["attempt"], x["status"]) for x in flaky] == [(2, "success"), (1, "failed")]
    assert {x["host"] for x in runs_of(conf, "report")} == {"dbhost@test"}
    assert {x["host"] for x in runs_of(conf, "fetch")} == {"general@test"}
    # logs from the history: the worker shipped the output
    assert "ok" in sm(conf, "logs", "flaky").stdout


def test_a_killed_worker_leaves_a_lost_run_retried_elsewhere_never_twice(cluster, tmp_path, marker):
    conf = make_config(
        tmp_path / "c",
        {
            "long": {
                "command": "echo x >> starts.log; test -e once || { touch once; exec sleep 60; }",
                "retries": {"count": 1, "delay": 0},
                "env": {"SM_TEST_MARKER": marker},  # the orphaned sleep is killed by marker
            }
        },
    )
    cluster.distribute(conf)
    victim = cluster.worker(conf, "victim")
    caller = popen("--config-dir", str(conf), "run", "long")
    deadline = time.monotonic() + 20
    while not (conf / "once").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    killed = time.monotonic()
    cluster.worker(conf, "survivor")
    out, err = caller.communicate(timeout=60)
    took = time.monotonic() - killed
    assert caller.returncode == 0, out + err
    assert "✗ LOST, retrying in 0s (attempt 2/2)" in out, out  # lost, not "FAILED"
    assert took < 3 + 10
    runs = runs_of(conf, "long")
    assert [(x["attempt"], x["status"], x["host"]) for x in runs] == [
        (2, "success", "survivor@test"),
        (1, "lost", "victim@test"),
    ]
    time.sleep(1)
    assert (conf / "starts.log").read_text().count("x") == 2  # one per attempt, no replay


def test_a_run_on_a_worker_records_what_it_used_and_obeys_its_limits(cluster, tmp_path):
    """docs/MONITORING.md: the worker measures and limits a run as a local run does."""
    conf = make_config(
        tmp_path / "c",
        {
            "alloc": "python3 -c 'x = b\"\\1\" * (64 << 20)'",
            "spin": {"command": "python3 -c 'while 1: pass'", "limits": {"max_cpu": 0.3}},
        },
    )
    cluster.distribute(conf)
    cluster.worker(conf, "general")
    assert sm(conf, "run", "alloc").returncode == 0
    assert sm(conf, "run", "spin").returncode == 1
    (alloc,) = runs_of(conf, "alloc")
    assert alloc["host"] == "general@test" and alloc["max_rss"] >= 64 << 20
    assert alloc["cpu_user"] is not None
    (spin,) = runs_of(conf, "spin")
    assert spin["status"] == "failed" and spin["detail"].startswith("exceeded limits.max_cpu")
    assert spin["cpu_user"] + spin["cpu_system"] >= 0.3


def test_a_message_published_twice_runs_once(cluster, tmp_path):
    conf = make_config(tmp_path / "c", {"once": "echo x >> ran.log"})
    cluster.distribute(conf)
    cluster.worker(conf, "w1")
    cluster.worker(conf, "w2")
    from script_monitor.config import load_config
    from script_monitor.distributed.app import TASK, make_app
    from script_monitor.store import Store

    config = load_config(conf)
    store = Store(conf, cluster.url)
    run_id = store.runs.start_run("once", "manual", time.time(), log_path="once/x.log")
    app = make_app(config)
    message = {"run_id": run_id, "script": "once", "trigger": "manual", "attempt": 1}
    for _ in range(2):
        app.send_task(TASK, args=(message,), queue=cluster.queue)
    deadline = time.monotonic() + 20
    while store.runs.run(run_id).status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.5)  # time for the second delivery to be taken and refused
    assert store.runs.run(run_id).status == "success"
    assert (conf / "ran.log").read_text() == "x\n"
    store.close()


def test_broker_or_store_down_exit_2_naming_the_url(pg_url, tmp_path):
    conf = make_config(tmp_path / "c", {"a": "true"}, [{"name": "g", "scripts": ["a"]}])
    settings = {
        "store": {"url": pg_url},
        "execution": {"backend": "celery"},
        "celery": {"broker_url": "redis://:s3cret@127.0.0.1:1/0"},
    }
    (conf / "config.yaml").write_text(yaml.safe_dump(settings))
    for verb in (("run", "a"), ("run-group", "g"), ("worker",)):
        r = sm(conf, *verb, timeout=60)
        assert_clean_error(r)
        assert "redis://:***@127.0.0.1:1/0" in r.stderr and "s3cret" not in r.stderr
    assert direct_sql(Store_(conf, pg_url), "SELECT COUNT(*) FROM runs WHERE script = 'a'") == [
        (0,)
    ]  # never a silent local run
    settings["store"]["url"] = "postgresql://me:s3cret@127.0.0.1:1/none"
    settings["store"]["retry_for"] = 0
    (conf / "config.yaml").write_text(yaml.safe_dump(settings))
    for verb in (("run", "a"), ("worker",)):
        r = sm(conf, *verb, timeout=60)
        assert_clean_error(r)
        assert "postgresql://me:***@127.0.0.1:1/none" in r.stderr


def Store_(conf: Path, url: str):
    from script_monitor.store import Store

    return Store(conf, url)


# ---------------------------------------------------------------- the scheduler, run-all,
# a worker cut off from the store (Redis only: the broker is not what these exercise)


@pytest.mark.parametrize("cluster", ["redis"], indirect=True)
def test_the_scheduler_fires_a_group_on_workers(cluster, tmp_path):
    conf = make_config(
        tmp_path / "c",
        {"a": probe("a", 0.1), "b": probe("b", 0.1)},
        [
            {
                "name": "tick",
                "schedule": "* * * * *",
                "timezone": "UTC",
                "execution": "parallel",
                "scripts": ["a", "b"],
            }
        ],
    )
    cluster.distribute(conf)
    cluster.worker(conf, "w1")
    t0 = 1893456030.0  # 2030-01-01 00:00:30 UTC: at 60x, a minute every real second
    log = open(tmp_path / "scheduler.log", "w")  # noqa: SIM115
    env = {**os.environ, "SCRIPT_MONITOR_CLOCK": f"{t0}x60"}
    daemon = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "scheduler"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            groups = json.loads(sm(conf, "list-groups", "--json").stdout)
            last = groups[0].get("last_run") or {}
            if last.get("status") == "success":
                break
            assert daemon.poll() is None, (tmp_path / "scheduler.log").read_text()
            assert time.monotonic() < deadline, groups
            time.sleep(0.2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(40)
        log.close()
    assert code == 0, (tmp_path / "scheduler.log").read_text()
    for name in ("a", "b"):
        runs = [r for r in runs_of(conf, name) if r["status"] != "running"]
        assert runs and {(r["trigger"], r["host"]) for r in runs} == {("schedule", "w1@test")}
        assert all(r["status"] == "success" for r in runs)
    assert "Traceback" not in (tmp_path / "scheduler.log").read_text()


@pytest.mark.parametrize("cluster", ["redis"], indirect=True)
def test_run_all_on_workers_prints_and_exits_as_locally(cluster, tmp_path):
    scripts = {"one": "echo one", "two": "echo two; exit 4", "three": "echo three"}
    local = make_config(tmp_path / "local", scripts)
    remote = make_config(tmp_path / "remote", scripts)
    here = sm(local, "run-all")
    cluster.distribute(remote)
    cluster.worker(remote, "w1")
    there = sm(remote, "run-all")
    assert there.returncode == here.returncode != 0, there.stderr
    assert there.stdout == here.stdout
    for name in scripts:
        (run,) = runs_of(remote, name)
        assert run["host"] == "w1@test" and run["trigger"] == "manual"


class Proxy:
    """A TCP proxy to PostgreSQL that the test controls: ``cut()`` closes it and every
    connection through it, as a network failure would (the server itself stays up)."""

    def __init__(self, port: int):
        import socket
        import threading

        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list = []
        self.lock = threading.Lock()
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while self.open:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                if not self.open:
                    client.close()
                    upstream.close()
                    return
                self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def cut(self) -> None:
        import socket

        with self.lock:
            self.open = False
            self.listener.close()
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass


@pytest.mark.parametrize("cluster", ["redis"], indirect=True)
def test_a_worker_cut_off_from_the_store_ends_its_script(cluster, tmp_path):
    """The worker reaches PostgreSQL through a proxy the test cuts mid-run (the shared
    server is never stopped): after lost_after (3 s) without the store, the worker ends
    the script rather than let it run unrecorded; the caller marks the run lost."""
    from urllib.parse import urlsplit, urlunsplit

    conf = make_config(
        tmp_path / "c", {"long": f"echo $$ > {tmp_path}/pid; sleep 60; echo on > {tmp_path}/after"}
    )
    cluster.distribute(conf)
    there = tmp_path / "worker"
    shutil.copytree(conf, there)
    parts = urlsplit(cluster.url)
    proxy = Proxy(parts.port or 5432)
    settings = yaml.safe_load((there / "config.yaml").read_text())
    netloc = (
        f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    )
    settings["store"]["url"] = urlunsplit(parts._replace(netloc=netloc))
    (there / "config.yaml").write_text(yaml.safe_dump(settings))
    cluster.worker(there, "cutoff")
    caller = popen("--config-dir", str(conf), "run", "long")
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text().strip():
            assert caller.poll() is None, caller.communicate()
            assert time.monotonic() < deadline, "the script did not start"
            time.sleep(0.05)
        pid = int((tmp_path / "pid").read_text())
        proxy.cut()
        cut = time.monotonic()
        while _alive(pid):
            assert time.monotonic() - cut < 3 + 10, "the cut-off worker left its script running"
            time.sleep(0.1)
        ended_after = time.monotonic() - cut
        caller.communicate(timeout=30)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()
    # It was the loss of the store, not an early end: the worker beats every lost_after/4
    # (0.75 s), so its last answer came up to one beat before the cut.
    assert ended_after >= 3 - 0.75 - 0.05
    assert not (tmp_path / "after").exists()
    (run,) = runs_of(conf, "long")
    assert run["status"] == "lost" and run["host"] == "cutoff@test", run
    assert caller.returncode != 0


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie is not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


@pytest.mark.parametrize("cluster", ["redis"], indirect=True)
def test_many_workers_record_in_parallel_without_a_global_lock(cluster, tmp_path):
    """4 workers x concurrency 4 record 2 000 runs: writes take row locks only (no
    advisory lock is ever held, sampled from pg_locks all along), and every run is
    recorded exactly once."""
    import threading

    from script_monitor.store import Store
    from script_monitor.store.postgres import PgDb

    n = 2000
    names = [f"t{i}" for i in range(n)]
    conf = make_config(
        tmp_path / "c",
        {name: "true" for name in names},
        [{"name": "all", "execution": "parallel", "max_parallel_workers": 16, "scripts": names}],
    )
    cluster.distribute(conf)
    for i in range(4):
        cluster.worker(conf, f"w{i}")
    seen: list[tuple] = []
    waits: list[tuple] = []
    done = threading.Event()

    def sample() -> None:
        with PgDb(cluster.url, 10_000) as con:
            while not done.is_set():
                rows = con.execute(
                    "SELECT locktype, mode, granted FROM pg_locks WHERE database ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchall()
                seen.extend(r for r in rows if r[0] == "advisory")
                waits.extend(r for r in rows if not r[2])
                time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        r = sm(conf, "run-group", "all")
    finally:
        done.set()
        sampler.join()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert seen == []  # no global (advisory) write lock
    assert len(waits) < 20, waits  # row locks on different rows: next to no waiting
    rows = direct_sql(
        Store(conf, cluster.url),
        "SELECT script, COUNT(*), MIN(status), MAX(status) FROM runs GROUP BY script",
    )
    assert len(rows) == n
    assert all(count == 1 and lo == hi == "success" for _, count, lo, hi in rows)


def test_a_worker_marks_a_run_slow_against_the_band_read_with_its_claim(cluster, tmp_path):
    """The band's durations come with the worker's claim: after three quick runs, a run
    three times slower than their median is marked ``slow``; the quick ones are not."""
    conf = make_config(
        tmp_path / "c",
        {
            "tick": {
                "command": "sleep $(cat delay 2>/dev/null || echo 0.05)",
                "anomaly": {"min_runs": 3, "window": 5},
            }
        },
    )
    cluster.distribute(conf)
    cluster.worker(conf, "w1")
    for _ in range(3):
        assert sm(conf, "run", "tick").returncode == 0
    (conf / "delay").write_text("0.6\n")
    assert sm(conf, "run", "tick").returncode == 0
    runs = runs_of(conf, "tick")
    assert [r["anomaly"] for r in runs] == ["slow", None, None, None]
    assert {r["host"] for r in runs} == {"w1@test"}
