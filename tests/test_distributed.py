"""Distributed execution with real servers: PostgreSQL, Redis or RabbitMQ, and real
``script-monitor worker`` processes (DESIGN §9).

Each test writes a config directory, runs it locally (SQLite) where output is
compared, then with ``execution.backend: celery`` against the session's PostgreSQL
database and workers started for the test (their process groups are killed after).
Redis uses db 9 (flushed per session); RabbitMQ queue names of the test's own.
Without the servers these tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import json
import os
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


def test_a_killed_worker_leaves_a_lost_run_retried_elsewhere_never_twice(cluster, tmp_path):
    conf = make_config(
        tmp_path / "c",
        {
            "long": {
                "command": "echo x >> starts.log; test -e once || { touch once; exec sleep 60; }",
                "retries": {"count": 1, "delay": 0},
            }
        },
    )
    cluster.distribute(conf)
    victim = cluster.worker(conf, "victim")
    caller = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "run", "long"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
    assert took < 3 + 10
    runs = runs_of(conf, "long")
    assert [(x["attempt"], x["status"], x["host"]) for x in runs] == [
        (2, "success", "survivor@test"),
        (1, "lost", "victim@test"),
    ]
    time.sleep(1)
    assert (conf / "starts.log").read_text().count("x") == 2  # one per attempt, no replay
    subprocess.run(["pkill", "-f", "exec sleep 60|^sleep 60$"], check=False)


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
    run_id = store.start_run("once", "manual", time.time(), log_path="once/x.log")
    app = make_app(config)
    message = {"run_id": run_id, "script": "once", "trigger": "manual", "attempt": 1}
    for _ in range(2):
        app.send_task(TASK, args=(message,), queue=cluster.queue)
    deadline = time.monotonic() + 20
    while store.run(run_id)["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.5)  # time for the second delivery to be taken and refused
    assert store.run(run_id)["status"] == "success"
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
    (conf / "config.yaml").write_text(yaml.safe_dump(settings))
    for verb in (("run", "a"), ("worker",)):
        r = sm(conf, *verb, timeout=60)
        assert_clean_error(r)
        assert "postgresql://me:***@127.0.0.1:1/none" in r.stderr


def Store_(conf: Path, url: str):
    from script_monitor.store import Store

    return Store(conf, url)
