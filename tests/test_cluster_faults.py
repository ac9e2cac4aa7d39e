"""Distributed runs that no worker takes (docs/DISTRIBUTED.md): nothing hangs.

Real Celery workers (the ``cluster`` fixture: the session's PostgreSQL database, a queue
of the test's own on the real Redis), the real CLI and scheduler in subprocesses;
executions counted with marker files.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import MAIN, assert_clean_error, direct_sql, make_config, marked_pids, popen, sm, until
from web_helpers import Server

redis_only = pytest.mark.parametrize("cluster", ["redis"], indirect=True)


def _history(conf, name: str) -> list[dict]:
    return json.loads(sm(conf, "history", name, "--json").stdout)


@redis_only
def test_a_run_no_worker_takes_is_lost_and_the_caller_ends(cluster, tmp_path):
    marker = tmp_path / "marker"
    conf = make_config(
        tmp_path / "c",
        {"a": f"echo a >> {marker}", "b": f"echo b >> {marker}", "c": f"echo c >> {marker}"},
        extra={"b": {"retries": {"count": 1, "delay": 0}}},
    )
    cluster.distribute(conf, claim_timeout=1)
    started = time.monotonic()
    r = sm(conf, "run", "a", timeout=60)
    took = time.monotonic() - started
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert 1 <= took < 10, took
    (run,) = _history(conf, "a")
    assert (run["status"], run["detail"]) == ("lost", "no worker took it")
    hint = f"no worker has taken run {run['id']} on queue {cluster.queue}"
    assert r.stderr.count(hint) == 1, r.stderr
    assert "Traceback" not in r.stderr
    # With retries, the lost run is tried again; each attempt is lost the same way.
    r = sm(conf, "run", "b", timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    attempts = _history(conf, "b")
    assert [(x["attempt"], x["status"], x["detail"]) for x in reversed(attempts)] == [
        (1, "lost", "no worker took it"),
        (2, "lost", "no worker took it"),
    ]
    # A worker that comes later takes the waiting messages, and runs none of them.
    cluster.worker(conf, "late")
    assert sm(conf, "run", "c", timeout=60).returncode == 0
    assert marker.read_text().split() == ["c"]


@redis_only
def test_overlap_skip_ticks_are_not_blocked_by_a_run_no_worker_takes(cluster, tmp_path):
    conf = make_config(
        tmp_path / "c",
        {"a": "true"},
        [{"name": "g", "schedule": "* * * * *", "timezone": "UTC", "scripts": ["a"]}],
    )
    cluster.distribute(conf, claim_timeout=1)
    log = open(tmp_path / "scheduler.log", "w")  # noqa: SIM115
    daemon = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "scheduler"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SCRIPT_MONITOR_CLOCK": f"{1893456050.0}x30"},  # a tick every 2 s
    )
    try:

        def lost_runs() -> list[dict]:
            return [r for r in _history(conf, "a") if r["status"] == "lost"]

        until(lambda: len(lost_runs()) >= 2, timeout=30)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(40)
        log.close()
    text = (tmp_path / "scheduler.log").read_text()
    assert code == 0, text
    assert all(r["detail"] == "no worker took it" for r in lost_runs())
    assert "Traceback" not in text


def test_a_broker_out_of_reach_at_start_writes_nothing(pg_url, tmp_path):
    from conftest import empty_pg

    empty_pg(pg_url)
    conf = make_config(
        tmp_path / "c",
        {"a": "true", "b": "true"},
        [{"name": "g", "scripts": ["a", "b"]}],
        {
            "store": {"url": pg_url},
            "execution": {"backend": "celery"},
            "celery": {"broker_url": "redis://:s3cret@127.0.0.1:1/0"},
        },
    )
    r = sm(conf, "run-group", "g", timeout=60)
    assert_clean_error(r)
    assert "redis://:***@127.0.0.1:1/0" in r.stderr

    class _Url:
        url = pg_url

    assert direct_sql(_Url, "SELECT COUNT(*) FROM group_runs")[0][0] == 0
    assert direct_sql(_Url, "SELECT COUNT(*) FROM runs")[0][0] == 0
    assert json.loads(sm(conf, "list-groups", "--json").stdout)[0]["last_run"] is None


@redis_only
def test_the_worker_host_in_status_history_and_the_run_page(cluster, tmp_path):
    gate = tmp_path / "gate"
    conf = make_config(
        tmp_path / "c", {"slow": f"while [ ! -e {gate} ]; do sleep 0.05; done", "quick": "true"}
    )
    cluster.distribute(conf)
    worker = cluster.worker(conf, "w1")
    log = (conf / "worker-w1.log").read_text()
    assert "INFO:script_monitor.worker:script-monitor worker w1@test: ready" in log, log
    assert "WARNING" not in log.replace("SecurityWarning", ""), log
    assert sm(conf, "run", "quick").returncode == 0
    caller = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "run", "slow"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        text = until(lambda: "on w1@test" in (out := sm(conf, "status").stdout) and out)
        assert "slow" in text
    finally:
        gate.touch()
        assert caller.wait(30) == 0
    lines = sm(conf, "history", "quick").stdout.splitlines()
    assert "HOST" in lines[0] and "w1@test" in lines[1], lines
    (run,) = json.loads(sm(conf, "history", "quick", "--json").stdout)
    server = Server(conf)
    try:
        page = server.get(f"/runs/{run['id']}").text
    finally:
        server.stop()
    assert "<dt>Host</dt><dd>w1@test</dd>" in page
    assert worker.poll() is None


def _group_conf(tmp_path, cluster, marks):
    body = (
        'echo "start $SCRIPT_MONITOR_RUN_ID" >> {m}/{n}; sleep 0.6;'
        ' echo "done $SCRIPT_MONITOR_RUN_ID" >> {m}/{n}'
    )
    names = [f"s{i}" for i in range(6)]
    conf = make_config(
        tmp_path / "c",
        {n: body.format(m=marks, n=n) for n in names},
        [
            {
                "name": "g",
                "execution": "parallel",
                "max_parallel_workers": 2,
                "scripts": names,
                "depends_on": {"s5": ["s0"]},
            }
        ],
    )
    cluster.distribute(conf)
    settings = json.loads(json.dumps(cluster.settings))
    settings["scheduling"] = {"lease_ttl": 2}
    import yaml

    (conf / "config.yaml").write_text(yaml.safe_dump(settings))
    return conf, names


def _scheduler(conf, tmp_path):
    log = open(tmp_path / "scheduler.log", "w")  # noqa: SIM115
    p = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "scheduler"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    until(lambda: "leading" in (tmp_path / "scheduler.log").read_text(), timeout=20)
    return p


def _group_runs(url):
    class _Url:
        pass

    _Url.url = url
    return direct_sql(_Url, "SELECT id, status, owner FROM group_runs ORDER BY id")


@redis_only
def test_a_killed_caller_s_group_run_is_carried_on_by_the_scheduler(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    conf, names = _group_conf(tmp_path, cluster, marks)
    cluster.worker(conf, "w1")
    daemon = _scheduler(conf, tmp_path)
    caller = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "run-group", "g"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        until(lambda: len(list(marks.iterdir())) >= 2, timeout=30)
        os.killpg(caller.pid, signal.SIGKILL)
        caller.wait()
        # A read-only command on the same host reaps nothing of a group run held by a lease.
        assert sm(conf, "list-groups", "--json").returncode == 0
        until(lambda: _group_runs(cluster.url)[0][1] != "running", timeout=40)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(40)
    log = (tmp_path / "scheduler.log").read_text()
    assert code == 0, log
    assert "carrying it on" in log and "Traceback" not in log, log
    [(gid, status, _)] = _group_runs(cluster.url)
    assert status == "success", log
    for name in names:  # every script executed exactly once, start to end
        lines = (marks / name).read_text().split("\n")
        starts = [x for x in lines if x.startswith("start")]
        assert len(starts) == 1 and len([x for x in lines if x.startswith("done")]) == 1, lines
        (run,) = _history(conf, name)
        assert (run["status"], run["group_run_id"]) == ("success", gid), run


@redis_only
def test_ctrl_c_of_run_group_still_cancels_with_a_scheduler_running(cluster, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    conf, _ = _group_conf(tmp_path, cluster, marks)
    cluster.worker(conf, "w1")
    daemon = _scheduler(conf, tmp_path)
    caller = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "run-group", "g"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        until(lambda: len(list(marks.iterdir())) >= 2, timeout=30)
        os.killpg(caller.pid, signal.SIGINT)
        assert caller.wait(30) == 130
        time.sleep(3)  # longer than the lease: nothing is carried on
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(40) == 0
    [(_, status, _)] = _group_runs(cluster.url)
    assert status == "interrupted"
    assert len(list(marks.iterdir())) == 2
    assert "carrying it on" not in (tmp_path / "scheduler.log").read_text()


@redis_only
def test_a_killed_worker_s_scripts_die_with_it_and_run_once_per_attempt(cluster, tmp_path, marker):
    body = (
        'echo "start $SCRIPT_MONITOR_RUN_ID" >> marks;'
        " test -e once || { touch once;"
        " setsid sh -c 'sleep 60; echo escaped >> marks' & sleep 60; };"
        ' echo "done $SCRIPT_MONITOR_RUN_ID" >> marks'
    )
    conf = make_config(
        tmp_path / "c",
        {
            "long": {
                "command": body,
                "retries": {"count": 1, "delay": 0},
                "env": {"SM_TEST_MARKER": marker},
            }
        },
    )
    cluster.distribute(conf)
    victim = cluster.worker(conf, "victim")
    caller = popen("--config-dir", str(conf), "run", "long")
    until(lambda: len(marked_pids(marker)) >= 4, timeout=20)  # supervisor, sh, sleep, escaped
    os.kill(victim.pid, signal.SIGKILL)  # the worker process alone, as the OOM killer would
    killed = time.monotonic()
    until(lambda: not marked_pids(marker), timeout=5)
    assert time.monotonic() - killed < 4  # its scripts died with it
    cluster.worker(conf, "survivor")
    out, err = caller.communicate(timeout=60)
    assert caller.returncode == 0, out + err
    runs = _history(conf, "long")
    assert [(x["attempt"], x["status"], x["detail"], x["host"]) for x in runs] == [
        (2, "success", None, "survivor@test"),
        (1, "lost", "its worker was lost", "victim@test"),
    ]
    time.sleep(0.5)
    lines = (conf / "marks").read_text().split("\n")
    first, second = runs[1]["id"], runs[0]["id"]
    assert [x for x in lines if x] == [f"start {first}", f"start {second}", f"done {second}"]


@redis_only
def test_a_worker_s_script_still_times_out_and_exits_as_itself(cluster, tmp_path, marker):
    conf = make_config(
        tmp_path / "c",
        {
            "slow": {
                "command": "trap '' TERM; setsid sleep 60 & sleep 60",
                "timeout": 1,
                "env": {"SM_TEST_MARKER": marker},
            },
            "three": "exit 3",
            "killed": "kill -9 $$",
        },
    )
    cluster.distribute(conf, kill_grace=0.5)
    cluster.worker(conf, "w1")
    assert sm(conf, "run", "three").returncode == 1
    assert sm(conf, "run", "killed").returncode == 1
    r = sm(conf, "run", "slow", timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    three, killed, slow = (_history(conf, n)[0] for n in ("three", "killed", "slow"))
    assert (three["status"], three["exit_code"]) == ("failed", 3)
    assert (killed["status"], killed["signal"]) == ("failed", 9)
    assert slow["status"] == "timeout" and slow["signal"] == 9, slow  # TERM ignored: KILL
    until(lambda: not marked_pids(marker), timeout=5)  # the escaped sleep too


_SLOW_CLAIM = """
CREATE SEQUENCE sm_test_slow_once;
CREATE FUNCTION sm_test_slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.heartbeat IS NULL AND NEW.heartbeat IS NOT NULL
            AND nextval('sm_test_slow_once') = 1 THEN
        PERFORM pg_sleep(120);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER sm_test_slow_claim BEFORE UPDATE ON runs
    FOR EACH ROW EXECUTE FUNCTION sm_test_slow_claim();
"""
_FAST_CLAIM = """
DROP TRIGGER IF EXISTS sm_test_slow_claim ON runs;
DROP FUNCTION IF EXISTS sm_test_slow_claim();
DROP SEQUENCE IF EXISTS sm_test_slow_once;
"""


def test_a_worker_killed_before_its_claim_leaves_a_run_that_runs_once(cluster, tmp_path):
    """A worker takes a run's message and dies before its claim is written (the claim
    is held up in the database, then the worker is SIGKILLed and its half-done claim
    rolled back).  RabbitMQ gives the message to another worker at once; Redis keeps no
    copy of a taken message, so the run is lost after the claim timeout and its retry
    runs on another worker.  Either way the script runs exactly once and the caller
    ends well."""
    from script_monitor.store.postgres import PgDb

    marks = tmp_path / "marks"
    conf = make_config(
        tmp_path / "c",
        {"s": f'echo "start $SCRIPT_MONITOR_RUN_ID" >> {marks}'},
        extra={"s": {"retries": {"count": 1, "delay": 0}}},
    )
    cluster.distribute(conf, claim_timeout=8)
    with PgDb(cluster.url, 10_000) as con:
        con.execute(_SLOW_CLAIM)
    try:
        victim = cluster.worker(conf, "victim")
        caller = popen("--config-dir", str(conf), "run", "s")
        with PgDb(cluster.url, 10_000) as con:
            claiming = "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
            until(lambda: con.execute(claiming).fetchall(), timeout=20)
            os.killpg(victim.pid, signal.SIGKILL)
            con.execute(f"SELECT pg_terminate_backend(pid) FROM ({claiming}) AS c")
        cluster.worker(conf, "survivor")
        out, err = caller.communicate(timeout=60)
    finally:
        with PgDb(cluster.url, 10_000) as con:
            con.execute(_FAST_CLAIM)
    assert caller.returncode == 0 and "Traceback" not in err, out + err
    runs = [(x["attempt"], x["status"], x["detail"], x["host"]) for x in _history(conf, "s")]
    if cluster.settings["celery"]["broker_url"].startswith("amqp"):
        assert runs == [(1, "success", None, "survivor@test")]
    else:  # the lost run names the caller's host: no worker ever claimed it
        assert runs == [
            (2, "success", None, "survivor@test"),
            (1, "lost", "no worker took it", socket.gethostname()),
        ]
    ran = _history(conf, "s")[0]["id"]
    assert marks.read_text().split("\n") == [f"start {ran}", ""]
