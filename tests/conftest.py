"""Shared fixtures: real config directories in tmp_path, clean-up of stray processes.

The helpers themselves are in helpers.py (one module, imported by every test file).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import kill_marked


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
        import psycopg
    except ImportError as e:
        need_server("PostgreSQL", f"psycopg is not installed ({e})")
    name = f"sm_test_{os.getpid()}"
    try:
        admin = psycopg.connect(f"{PG_ADMIN_URL}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.Error as e:
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
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
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
