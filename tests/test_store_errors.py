"""Each way the history can fail maps to one of the project's own errors, with a
message naming the history, on SQLite and on PostgreSQL: a real locked database, a
real full disk, a file that is not a database, a schema of another version, and a
PostgreSQL server stopped while a store is open."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import assert_clean_error, cli, direct_sql, free_port, make_config, need_server
from script_monitor.errors import (
    SchemaMismatch,
    StoreBusy,
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreUnreachable,
)
from script_monitor.store import MIGRATIONS, RunEnd, Store

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def test_a_lock_held_past_the_busy_timeout_is_store_busy(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRIPT_MONITOR_BUSY_TIMEOUT", "0.3")
    store = Store(tmp_path)
    store.runs.start_run("a", "manual", 1.0)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusy, match=r"stayed locked by another process for 0\.3s"):
            store.runs.start_run("a", "manual", 2.0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(store.runs.history("a")) == 1  # nothing half-written
    store.runs.start_run("a", "manual", 3.0)  # and it works again once the lock is gone
    store.close()


def test_a_file_that_is_not_a_database_is_store_corrupt(tmp_path):
    (tmp_path / "history.db").write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(StoreCorrupt, match="is corrupted"):
        Store(tmp_path).runs.history("a")


def test_a_newer_sqlite_schema_is_a_schema_mismatch(tmp_path):
    Store(tmp_path).runs.history("a")
    with sqlite3.connect(tmp_path / "history.db") as con:
        con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(SchemaMismatch, match="schema version 99, newer than"):
        Store(tmp_path).runs.history("a")


def test_a_full_disk_is_store_full_and_keeps_what_was_recorded(tmp_path):
    from test_faults import mounted

    state = tmp_path / "state"
    state.mkdir()
    with mounted(state, "size=512k"):
        store = Store(state)
        first = store.runs.start_run("a", "manual", 1.0)
        with pytest.raises(StoreFull, match="is its disk full"):
            for i in range(100_000):
                store.runs.add_skipped(["x" * 2000] * 20, "manual", detail=str(i))
        store.close()
        again = Store(state)
        assert again.runs.run(first) is not None
        again.close()


def test_an_unreachable_server_is_store_unreachable_and_the_cli_exits_2(tmp_path):
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    with pytest.raises(StoreUnreachable, match=r"gave up after retrying for 0\.5s"):
        Store(tmp_path, url, retry_for=0.5).runs.history("a")
    conf = make_config(
        tmp_path / "c", {"a": "true"}, settings={"store": {"url": url, "retry_for": 1}}
    )
    r = cli("--config-dir", str(conf), "list")
    assert_clean_error(r, 2)
    assert "cannot reach the store" in r.stderr


def test_schema_versions_on_postgresql(tmp_path, pg_url):
    from conftest import empty_pg

    empty_pg(pg_url)
    store = Store(tmp_path, pg_url)
    try:
        direct_sql(store, "UPDATE schema_version SET version = 99")
        with pytest.raises(SchemaMismatch, match="newer than this"):
            Store(tmp_path, pg_url).runs.history("a")
        direct_sql(store, "UPDATE schema_version SET version = 3")
        with pytest.raises(SchemaMismatch, match="store migrate"):
            Store(tmp_path, pg_url).runs.history("a")
    finally:  # back to the current version for the other tests
        direct_sql(store, "UPDATE schema_version SET version = ?", (len(MIGRATIONS),))
        store.close()


# ---------------------------------------------------------------- a private PostgreSQL


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temp dir), to stop and start
    without touching the machine's shared one."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.data = root / "data"

    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=60
        )

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres", "postgres")
        r = self._as_postgres(
            str(PG_BIN / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(self.data)
        )
        assert r.returncode == 0, r.stderr

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        r = self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-w", "-l",
            str(self.root / "log"), "start",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr + (self.root / "log").read_text()

    def stop(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0:
        need_server("a private PostgreSQL", "needs PostgreSQL 15's initdb and root")
    # Not under pytest's tmp folders: the postgres user cannot enter those.
    root = Path(tempfile.mkdtemp(prefix="sm-pg-"))
    pg = PrivatePostgres(root)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_stopped_mid_run_is_store_unreachable_then_works_again(tmp_path, private_pg):
    store = Store(tmp_path, private_pg.url, retry_for=1)
    store.migrate()
    rid = store.runs.start_run("a", "manual", time.time())
    private_pg.stop()
    with pytest.raises(StoreUnreachable) as caught:
        store.runs.finish_run(rid, RunEnd("success", time.time(), 1.0, 0))
    assert private_pg.url.split("@")[1].split("/")[0] in str(caught.value)
    assert isinstance(caught.value, StoreError)
    private_pg.start()
    # The same Store opens a new connection: nothing was half-written, and it goes on.
    assert store.runs.run(rid).status == "running"
    store.runs.finish_run(rid, RunEnd("success", time.time(), 1.0, 0))
    assert store.runs.run(rid).status == "success"
    store.close()


def test_a_store_restarted_mid_run_is_ridden_out(tmp_path, private_pg):
    """The server goes away for two seconds between two writes (a restart): the write
    waits for it (store.retry_for) on a new connection, and nothing is lost or doubled."""
    import threading

    store = Store(tmp_path, private_pg.url, retry_for=30)
    store.migrate()
    rid = store.runs.start_run("a", "manual", time.time())
    assert store.runs.history("a")[0].status == "running"  # the connection is open
    private_pg.stop()
    later = threading.Timer(2.0, private_pg.start)
    later.start()
    began = time.monotonic()
    store.runs.finish_run(rid, RunEnd("success", time.time(), 1.0, 0))  # waits for the server
    later.join()
    assert time.monotonic() - began >= 1.5
    assert [(r.id, r.status) for r in store.runs.history("a")] == [(rid, "success")]
    store.close()
