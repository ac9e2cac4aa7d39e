"""The PostgreSQL connections themselves (store/postgres.py), on the test run's database:
what psycopg2 returns, a transaction that always ends, and the read pool beside a
Store's own connection."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from conftest import empty_pg
from script_monitor.store import RunEnd, Store
from script_monitor.store.postgres import PgDb, ReadPool


@pytest.fixture
def pg(pg_url):
    empty_pg(pg_url)
    return pg_url


def _backend_pid(db: PgDb) -> int:
    return db.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_bytea_comes_back_as_bytes_and_a_percent_sign_without_arguments_stays(pg):
    with PgDb(pg, 1000) as db:
        assert db.execute("SELECT '\\x00ff41'::bytea").fetchone()[0] == b"\x00\xffA"
        assert db.execute("SELECT %s::bytea", (b"a\x00b",)).fetchone()[0] == b"a\x00b"
        assert db.execute("SELECT NULL::bytea").fetchone()[0] is None
        assert db.execute("SELECT '50%'").fetchone()[0] == "50%"
        assert db.execute("SELECT %s || '!'", ("50%",)).fetchone()[0] == "50%!"


def test_a_failed_transaction_is_rolled_back_and_the_connection_goes_on(pg):
    with PgDb(pg, 1000) as db:
        db.execute("BEGIN")
        with pytest.raises(psycopg2.errors.UndefinedTable):
            db.execute("SELECT * FROM no_such_table")
        assert db.in_transaction  # aborted, until it is rolled back
        db.rollback()
        assert not db.in_transaction
        assert db.execute("SELECT 1").fetchone()[0] == 1


def test_a_connection_the_server_ended_is_opened_again_before_the_next_transaction(pg):
    with PgDb(pg, 1000) as db, PgDb(pg, 1000) as admin:
        first = _backend_pid(db)
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        with pytest.raises(psycopg2.OperationalError):
            db.execute("SELECT 1")
        assert db.broken and not db.in_transaction
        db.execute("BEGIN")  # a new connection
        assert _backend_pid(db) != first
        db.execute("COMMIT")


def test_the_read_pool_replaces_a_connection_the_server_ended(pg):
    pool = ReadPool(pg, 1000, size=1)
    try:
        first = pool.run(_backend_pid)
        with PgDb(pg, 1000) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        second = pool.run(_backend_pid)  # tried once more on a new connection
        assert second != first
        assert pool.run(_backend_pid) == second  # and kept
    finally:
        pool.close()


def test_the_read_pool_waits_for_a_free_connection_then_gives_up(pg):
    pool = ReadPool(pg, 1000, size=1, timeout=0.3)
    busy, free = threading.Event(), threading.Event()

    def hold(db: PgDb) -> int:
        busy.set()
        free.wait(10)
        return _backend_pid(db)

    holder = threading.Thread(target=pool.run, args=(hold,))
    holder.start()
    try:
        assert busy.wait(10)
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            pool.run(_backend_pid)
        assert time.monotonic() - began >= 0.3
        free.set()
        holder.join(10)
        assert pool.run(_backend_pid) > 0  # the slot came back
    finally:
        free.set()
        pool.close()


def test_a_read_beside_an_open_write_transaction_uses_the_pool(pg, tmp_path):
    """``serve``'s request threads read while the scheduler's thread writes: a read
    from another thread goes to the pool instead of waiting for the transaction."""
    store = Store(tmp_path / "state", pg)
    try:
        run = store.runs.start_run("a", "manual", 1.0, log_path="a/1.log")
        inside, leave = threading.Event(), threading.Event()

        def write() -> None:
            with store.core.write() as tx:
                tx.execute("UPDATE runs SET detail = 'x' WHERE id = ?", (run,))
                inside.set()
                leave.wait(10)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert inside.wait(10)
            began = time.monotonic()
            (seen,) = store.runs.history("a", 5)
            assert seen.id == run and seen.detail != "x"  # not the uncommitted detail
            assert time.monotonic() - began < 5
        finally:
            leave.set()
            writer.join(10)
        store.runs.finish_run(run, RunEnd("success", 2.0, 1.0, 0))
    finally:
        store.close()


def test_executemany_runs_the_statement_for_every_row_in_pages(pg):
    with PgDb(pg, 1000) as db:
        db.execute("CREATE TEMP TABLE t (n BIGINT, b BYTEA)")
        for rows in ([(1, b"x")], [(i, bytes([i % 256])) for i in range(2, 503)]):
            before = db.total_changes
            db.executemany("INSERT INTO t (n, b) VALUES (%s, %s)", rows)
            assert db.total_changes > before
        assert db.execute("SELECT COUNT(*), SUM(n) FROM t").fetchone() == (502, sum(range(1, 503)))
        assert db.execute("SELECT b FROM t WHERE n = 300").fetchone()[0] == bytes([300 % 256])
        db.executemany("DELETE FROM t WHERE n = %s", [(i,) for i in range(1, 503, 2)])
        assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 251


def _prepared(db: PgDb) -> list[str]:
    return [r[0] for r in db.execute("SELECT statement FROM pg_prepared_statements")]


def test_a_statement_repeated_on_its_own_is_prepared_once_and_answers_the_same(pg):
    with PgDb(pg, 1000) as db:
        db.execute("CREATE TEMP TABLE t (id BIGINT, name TEXT, at DOUBLE PRECISION)")
        db.execute("INSERT INTO t VALUES (1, 'a', 1.5), (2, 'b', NULL)")
        query = "SELECT id, name, at FROM t WHERE id >= %s AND name != %s ORDER BY id"
        answers = [db.execute(query, (1, "zz")).fetchall() for _ in range(8)]
        assert answers == [[(1, "a", 1.5), (2, "b", None)]] * 8
        (text,) = _prepared(db)
        assert "id >= $1 AND name != $2" in text
        update = "UPDATE t SET at = %s WHERE id = %s"
        assert [db.execute(update, (2.5, 2)).rowcount for _ in range(6)] == [1] * 6
        assert len(_prepared(db)) == 2
        db.execute("BEGIN")  # inside a transaction: never prepared
        for _ in range(6):
            db.execute("SELECT COUNT(*) FROM t WHERE id = %s", (1,))
        db.execute("COMMIT")
        assert len(_prepared(db)) == 2


def test_a_statement_the_server_cannot_prepare_runs_as_it_is(pg):
    with PgDb(pg, 1000) as db:
        # the type of $1 alone cannot be inferred: PREPARE fails, the statement still runs
        for value in (None, 1, "x", None, 2.5, None, "y"):
            assert db.execute("SELECT %s IS NULL", (value,)).fetchone()[0] is (value is None)
        assert _prepared(db) == []
        assert not db.in_transaction


def test_prepared_statements_are_made_again_on_a_new_connection(pg):
    with PgDb(pg, 1000) as db, PgDb(pg, 1000) as admin:
        for _ in range(6):
            db.execute("SELECT %s::int + 1", (1,))
        assert len(_prepared(db)) == 1
        admin.execute("SELECT pg_terminate_backend(%s)", (_backend_pid(db),))
        with pytest.raises(psycopg2.OperationalError):
            db.execute("SELECT %s::int + 1", (1,))
        assert db.execute("SELECT %s::int + 1", (2,)).fetchone()[0] == 3  # a new connection
        assert len(_prepared(db)) == 1  # prepared there at once


def test_a_pooler_that_loses_prepared_statements_turns_them_off(pg):
    with PgDb(pg, 1000) as db:
        for _ in range(6):
            db.execute("SELECT %s::int * 2", (4,))
        db.execute("DEALLOCATE ALL")  # what a pooler in transaction mode amounts to
        assert db.execute("SELECT %s::int * 2", (5,)).fetchone()[0] == 10
        for _ in range(6):
            assert db.execute("SELECT %s::int * 3", (2,)).fetchone()[0] == 6
        assert _prepared(db) == []


def test_two_connections_never_name_a_prepared_statement_alike(pg):
    """Behind a pooler in transaction mode, one client's EXECUTE may reach another's
    server connection: a name there must never be a statement of its own."""
    names = []
    for _ in range(2):
        with PgDb(pg, 1000) as db:
            for _ in range(6):
                db.execute("SELECT %s::int - 1", (1,))
            names += [r[0] for r in db.execute("SELECT name FROM pg_prepared_statements")]
    assert len(names) == 2 and names[0] != names[1]
