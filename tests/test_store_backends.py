"""The PostgreSQL store through the real CLI: every command on it, migrate, copy, errors.

The store's own unit tests (test_store.py) run on both backends through the
``backend_store`` fixture; this file drives the commands against the session's
PostgreSQL database (conftest.pg_url) and checks the failure messages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import empty_pg
from helpers import PG_ADMIN_URL, assert_clean_error, direct_sql, make_config, sm
from script_monitor.store import MIGRATIONS, Store


@pytest.fixture
def pg(pg_url):
    empty_pg(pg_url)
    return pg_url


def conf_on(config_dir: Path, url: str) -> Path:
    return make_config(
        config_dir,
        {"ok": "echo out-of-ok", "bad": "echo bad-line; exit 3"},
        [{"name": "g", "scripts": ["ok", "bad", "ok"], "execution": "serial"}],
        {"store": {"url": url, "retry_for": 0}},
    )


def test_every_reading_command_works_on_postgresql(pg, config_dir):
    conf = conf_on(config_dir, pg)
    r = sm(conf, "run-group", "g")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    runs = json.loads(sm(conf, "list", "--json").stdout)
    assert {s["name"]: s["last_run"]["status"] for s in runs} == {"ok": "success", "bad": "failed"}
    hist = sm(conf, "history", "ok", "--json")
    assert [h["status"] for h in json.loads(hist.stdout)] == ["success", "success"]
    assert "out-of-ok" in sm(conf, "logs", "ok").stdout
    groups = json.loads(sm(conf, "list-groups", "--json").stdout)
    assert groups[0]["last_run"]["status"] == "failed"
    status = sm(conf, "status")
    assert "bad" in status.stdout
    # the rows are in PostgreSQL, not in a SQLite file beside the config
    assert not (conf / ".script-monitor" / "history.db").exists()
    assert direct_sql(Store(conf, pg), "SELECT COUNT(*) FROM runs") == [(3,)]


def test_the_environment_variable_wins_over_the_config(pg, config_dir, tmp_path):
    conf = conf_on(config_dir, "postgresql://nobody@127.0.0.1:1/none")
    r = sm(conf, "run", "ok", env={"SCRIPT_MONITOR_STORE_URL": pg})
    assert r.returncode == 0, r.stderr
    assert direct_sql(Store(conf, pg), "SELECT script, host FROM runs")[0][0] == "ok"


def test_unreachable_store_wrong_user_and_bad_url_exit_2_with_the_url_masked(config_dir):
    for url, says in [
        ("postgresql://me:s3cret@127.0.0.1:1/db", "postgresql://me:***@127.0.0.1:1/db"),
        (f"{PG_ADMIN_URL.replace('postgres@', 'nosuchrole:s3cret@')}/postgres", "nosuchrole:***@"),
        ("mysql://me:s3cret@127.0.0.1/db", "only postgresql://"),
    ]:
        conf = conf_on(config_dir, url)
        for verb in (("list",), ("run", "ok"), ("run-group", "g"), ("history", "ok")):
            r = sm(conf, *verb)
            assert_clean_error(r)
            assert says in r.stderr, r.stderr
            assert "s3cret" not in r.stderr + r.stdout


def test_a_schema_behind_is_refused_with_the_command_that_upgrades_it(pg_url, config_dir):
    from script_monitor.store.postgres import PgDb

    name = "sm_test_behind"
    with PgDb(f"{PG_ADMIN_URL}/postgres", 10_000) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    url = f"{PG_ADMIN_URL}/{name}"
    try:
        conf = conf_on(config_dir, url)
        r = sm(conf, "run", "ok")
        assert_clean_error(r)
        assert "script-monitor store migrate" in r.stderr
        r = sm(conf, "store", "migrate")
        assert r.returncode == 0, r.stderr
        assert f"0 -> {len(MIGRATIONS)}" in r.stdout
        assert "up to date" in sm(conf, "store", "migrate").stdout
        assert sm(conf, "run", "ok").returncode == 0
        # a store newer than this script-monitor: refused, naming what to upgrade
        direct_sql(Store(conf, url), "UPDATE schema_version SET version = 99")
        r = sm(conf, "list")
        assert_clean_error(r)
        assert "upgrade script-monitor" in r.stderr
    finally:
        with PgDb(f"{PG_ADMIN_URL}/postgres", 10_000) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_store_copy_moves_a_sqlite_history_to_postgresql_and_back(pg, config_dir, tmp_path):
    conf = conf_on(config_dir, "")
    (conf / "config.yaml").unlink()
    assert sm(conf, "run-group", "g").returncode == 1
    assert sm(conf, "run", "ok").returncode == 0
    before = sm(conf, "history", "ok", "--json").stdout
    r = sm(conf, "store", "copy", "--to", pg)
    assert r.returncode == 0, r.stderr
    assert "1 group_runs, 4 runs" in r.stdout
    on_pg = sm(conf, "history", "ok", "--json", env={"SCRIPT_MONITOR_STORE_URL": pg})
    assert on_pg.stdout == before
    # new runs on the copy continue the ids, and a second copy into it is refused
    env = {"SCRIPT_MONITOR_STORE_URL": pg}
    assert sm(conf, "run", "ok", env=env).returncode == 0
    assert json.loads(sm(conf, "history", "ok", "--json", env=env).stdout)[0]["id"] == 5
    r = sm(conf, "store", "copy", "--to", pg)
    assert_clean_error(r)
    assert "already has rows" in r.stderr
    back = tmp_path / "back" / "history.db"
    r = sm(conf, "store", "copy", "--to", f"sqlite://{back}", env=env)
    assert r.returncode == 0, r.stderr
    assert "5 runs" in r.stdout


def test_local_commands_import_no_distributed_library(config_dir):
    """SQLite and the local executor: psycopg2, celery, kombu and redis stay unimported."""
    conf = make_config(config_dir, {"ok": "true"}, [{"name": "g", "scripts": ["ok"]}])
    code = (
        "import sys; from script_monitor.cli import main\n"
        f"for verb in (['list'], ['run-group', 'g'], ['run', 'ok'], ['history', 'ok']):\n"
        f"    main(['--config-dir', {str(conf)!r}, *verb])\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in"
        " ('psycopg2', 'celery', 'kombu', 'redis', 'amqp')]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_serve_on_postgresql_answers_scripts_and_metrics(pg, config_dir):
    """``serve`` with the history in PostgreSQL: the scripts' last runs and the
    Prometheus counters come from it (runs recorded by a separate CLI process)."""
    from web_helpers import Server

    conf = conf_on(config_dir, pg)
    assert sm(conf, "run-group", "g").returncode == 1
    server = Server(conf)
    try:
        scripts = {s["name"]: s for s in server.get("/api/v1/scripts").json()}
        assert scripts["ok"]["last_run"]["status"] == "success"
        assert scripts["bad"]["last_run"]["status"] == "failed"
        metrics = server.get("/metrics").text
        assert 'script_monitor_runs_total{script="ok",status="success"} 2.0' in metrics
        assert 'script_monitor_runs_total{script="bad",status="failed"} 1.0' in metrics
        assert sm(conf, "run", "bad").returncode == 1  # a change is seen at once
        metrics = server.get("/metrics").text
        assert 'script_monitor_runs_total{script="bad",status="failed"} 2.0' in metrics
    finally:
        server.stop()
