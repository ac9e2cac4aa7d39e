"""Shared fixtures: real config directories in tmp_path, clean-up of stray processes.

The helpers themselves are in helpers.py (one module, imported by every test file).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from helpers import AMQP_TEST_URL, MAIN, REDIS_TEST_URL, kill_marked, need_server, port_open

# Every Python process the tests start (thousands of CLI calls) reads the package's
# byte-code instead of compiling it again: where the environment forbids writing it
# (PYTHONDONTWRITEBYTECODE, as some sandboxes set), it is kept outside the checkout.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    _PYC = os.path.join(tempfile.gettempdir(), f"script-monitor-tests-pyc-{os.getuid()}")
    os.environ.setdefault("PYTHONPYCACHEPREFIX", _PYC)
    sys.pycache_prefix = os.environ["PYTHONPYCACHEPREFIX"]
    sys.dont_write_bytecode = False


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    """Never touch the real home or a real SCRIPT_MONITOR_HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SCRIPT_MONITOR_HOME", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "conf"
    d.mkdir()
    return d


@pytest.fixture
def marker():
    """A unique string carried by every process a test starts; they are all killed after."""
    import uuid

    token = f"smtest-{uuid.uuid4().hex}"
    yield token
    kill_marked(token)


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL database of this test session's own, migrated; dropped at the end."""
    import os

    from helpers import PG_ADMIN_URL, need_server

    try:
        import psycopg2

        from script_monitor.store.postgres import PgDb
    except ImportError as e:
        need_server("PostgreSQL", f"psycopg2 is not installed ({e})")
    name = f"sm_test_{os.getpid()}"
    try:
        admin = PgDb(f"{PG_ADMIN_URL}/postgres", 10_000, connect_timeout=3)
    except psycopg2.Error as e:
        need_server("PostgreSQL", f"{PG_ADMIN_URL}: {str(e).strip()}")
    admin.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.execute(f"CREATE DATABASE {name}")
    url = f"{PG_ADMIN_URL}/{name}"
    from script_monitor.store import Store

    Store(Path("/nonexistent"), url).migrate()
    yield url
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def empty_pg(url: str) -> None:
    """Delete every row of the session's database (each test starts with an empty history)."""
    from script_monitor.store.postgres import PgDb

    with PgDb(url, 10_000) as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema ="
                " current_schema() AND table_name != 'schema_version'"
            )
        ]
        if tables:
            con.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_store(request, tmp_path: Path):
    """A Store on each backend: SQLite in tmp_path, PostgreSQL in the session's database."""
    from script_monitor.store import Store

    if request.param == "sqlite":
        s = Store(tmp_path / "state")
    else:
        url = request.getfixturevalue("pg_url")
        empty_pg(url)
        s = Store(tmp_path / "state", url)
    yield s
    s.close()


# ---------------------------------------------------------------- distributed (docs/DISTRIBUTED.md)
# Real Redis (db 9, flushed per session), RabbitMQ (queue names of the test's own) and
# the session's PostgreSQL database, with real worker processes (tests/test_distributed.py).


@pytest.fixture(scope="session")
def redis_url():
    if not port_open("127.0.0.1", 6379):
        need_server("Redis", "nothing listens on 127.0.0.1:6379")
    import redis

    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    yield REDIS_TEST_URL
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()


@pytest.fixture(scope="session")
def amqp_url():
    if not port_open("127.0.0.1", 5672):
        need_server("RabbitMQ", "nothing listens on 127.0.0.1:5672")
    return AMQP_TEST_URL


@pytest.fixture(params=["redis", "amqp"])
def cluster(request, pg_url, tmp_path):
    """Settings for a distributed config, and a way to start workers for it."""
    broker = request.getfixturevalue("redis_url" if request.param == "redis" else "amqp_url")
    empty_pg(pg_url)
    queue = f"smtest-{uuid.uuid4().hex[:10]}"
    workers: list[subprocess.Popen] = []

    class Cluster:
        settings = {  # noqa: RUF012
            "store": {"url": pg_url},
            "execution": {"backend": "celery", "lost_after": 3},
            "celery": {"broker_url": broker, "queue": queue},
        }
        url = pg_url

        def distribute(self, conf: Path, **execution) -> None:
            settings = json.loads(json.dumps(self.settings))
            settings["execution"].update(execution)
            (conf / "config.yaml").write_text(yaml.safe_dump(settings))

        def worker(self, conf: Path, name: str, queues: str | None = None) -> subprocess.Popen:
            args = ["--hostname", f"{name}@test", "--concurrency", "4"]
            if queues:
                args += ["--queues", ",".join(f"{queue}-{q}" for q in queues.split(","))]
            log = open(conf / f"worker-{name}.log", "w")  # noqa: SIM115
            p = subprocess.Popen(
                [sys.executable, str(MAIN), "--config-dir", str(conf), "worker", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            workers.append(p)
            deadline = time.monotonic() + 20
            while "ready" not in (conf / f"worker-{name}.log").read_text():
                assert p.poll() is None, (conf / f"worker-{name}.log").read_text()
                assert time.monotonic() < deadline, "the worker did not get ready"
                time.sleep(0.1)
            return p

    c = Cluster()
    c.queue = queue
    yield c
    for p in workers:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
    if request.param == "amqp":  # leave no queue of ours behind on the broker
        from kombu import Connection

        with Connection(broker) as conn:
            for q in (queue, f"{queue}-db"):
                try:
                    conn.default_channel.queue_delete(q)
                except Exception:
                    pass
