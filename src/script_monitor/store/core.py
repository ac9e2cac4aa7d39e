"""The history's core: where it is, its connection, transactions and migrations.

SQLite in WAL mode with a busy timeout and ``BEGIN IMMEDIATE`` write transactions,
so that many script-monitor processes (cron, the scheduler, a person at a shell)
record runs at once without losing any; or a shared PostgreSQL database
(``store.url``), where write transactions take only the row locks their statements
need.  The repositories (runs, logs, outbox, alerts, watch, claims, reads) write
their SQL once and run it through a ``Tx``; the ``Dialect`` supplies what differs.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ..errors import SchemaMismatch, StoreError, StoreUnreachable
from . import schema
from .dialect import Dialect, PostgresDialect, SqliteDialect, driver_errors
from .owner import Owner

BUSY_TIMEOUT_MS = 60_000
RETRY_FOR = 60.0  # seconds a shared store may be out of reach before an operation fails
BUSY_TIMEOUT_ENV = "SCRIPT_MONITOR_BUSY_TIMEOUT"  # seconds; how long a write waits for a lock
DB_NAME = "history.db"
_POOL_LOCK = threading.Lock()


# A writer waiting for SQLite's lock tries again this often; a long job leaves this gap
# between its transactions (a waiting writer gets the lock within one of them).
WRITER_POLL = 0.001
WRITER_GAP = 0.004


def _busy(e: Exception) -> bool:
    """Whether SQLite refused because another connection holds the lock."""
    code = getattr(e, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


def busy_timeout_ms() -> int:
    """The busy timeout: $SCRIPT_MONITOR_BUSY_TIMEOUT seconds, else 60 s."""
    try:
        value = float(os.environ[BUSY_TIMEOUT_ENV])
    except (KeyError, ValueError):
        return BUSY_TIMEOUT_MS
    return int(value * 1000) if 0 < value < 86400 else BUSY_TIMEOUT_MS


class Tx:
    """Statements inside one transaction, in the dialect's placeholders."""

    def __init__(self, db: Any, dialect: Dialect):
        self.db = db
        self.dialect = dialect
        self._sql = dialect.sql
        if not dialect.translates:  # SQLite: the connection's own method, no wrapper call
            self.execute = db.execute  # type: ignore[method-assign]

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.db.execute(self._sql(sql), args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(self._sql(sql), rows)

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.execute(sql, args).fetchall()

    def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = self.execute(sql, args).fetchall()
        return rows[0] if rows else None

    def insert(self, sql: str, args: Sequence[Any] = ()) -> int | None:
        """An INSERT of one row; the new row's id (None when ON CONFLICT skipped it)."""
        if self.dialect.returning:
            rows = self.execute(sql + " RETURNING id", args).fetchall()
            return rows[0][0] if rows else None
        cur = self.execute(sql, args)
        return cur.lastrowid if cur.rowcount == 1 else None


class Core:
    """The connection to one history, shared by its repositories (thread-safe)."""

    def __init__(self, state_dir: Path, url: str | None = None, retry_for: float = RETRY_FOR):
        self.path = state_dir / DB_NAME
        self.retry_for = retry_for
        self.url = url or None  # a postgresql:// URL, else SQLite at self.path
        self.where = str(self.path)
        self.busy_ms = busy_timeout_ms()
        self.dialect: Dialect
        if self.url is not None:
            from .postgres import is_postgres, mask_url

            self.where = mask_url(self.url)
            if not is_postgres(self.url):
                raise StoreError(
                    f"store.url {self.where}: only postgresql:// URLs are supported"
                    " (leave it out for the SQLite history in the state folder)"
                )
            self.dialect = PostgresDialect(self.where, self.busy_ms)
        else:
            self.dialect = SqliteDialect(self.where, self.busy_ms)
        self.owner = Owner.current()
        self.owner_text = str(self.owner)
        self._lock = threading.RLock()
        self._db: Any = None  # a sqlite3.Connection, or a postgres.PgDb
        self._batching: Tx | None = None
        self._pool: Any = None
        self._errors: tuple[type[Exception], ...] = ()

    @property
    def shared(self) -> bool:
        """True for a PostgreSQL history (shared by hosts), False for SQLite."""
        return self.url is not None

    # ------------------------------------------------------------ connection

    def errors(self) -> tuple[type[Exception], ...]:
        if not self._errors:
            self._errors = driver_errors(self.dialect)
        return self._errors

    def connect(self) -> Any:
        if self._db is not None:
            return self._db
        if self.url is not None:
            return self._connect_pg()
        try:
            _private_dir(self.path.parent)
            _private_file(self.path)
            db = sqlite3.connect(
                self.path,
                timeout=self.busy_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            db.execute(f"PRAGMA busy_timeout = {self.busy_ms}")
            self._setup_sqlite(db)
        except sqlite3.Error as e:
            raise self.dialect.error(e) from None
        except OSError as e:
            raise StoreUnreachable(
                f"cannot open the run history {self.path}: {e.strerror}"
            ) from None
        self._db = db
        return db

    def _connect_pg(self) -> Any:
        from .postgres import PgDb

        try:
            db = PgDb(self.url or "", self.busy_ms)
            try:
                self._check_pg(db)
            except BaseException:
                db.close()
                raise
        except self.errors() as e:
            raise self.dialect.error(e) from None
        self._db = db
        with suppress(OSError):  # this host's own files (docs/HISTORY.md)
            _private_dir(self.path.parent)
        return db

    def _setup_sqlite(self, db: sqlite3.Connection) -> None:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = OFF")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == schema.VERSION:
            return
        self._check_version(version, migrate=True)
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for statement in schema.statements(self.dialect, version):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {schema.VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back itself (disk full)
                db.execute("ROLLBACK")
            raise

    def _check_version(self, found: int, migrate: bool) -> None:
        if found > schema.VERSION:
            raise SchemaMismatch(
                f"the store {self.where} has schema version {found}, newer than this"
                f" script-monitor knows ({schema.VERSION}): upgrade script-monitor on this host"
            )
        if found < schema.VERSION and not migrate:
            raise SchemaMismatch(
                f"the store {self.where} has schema version {found}, this script-monitor"
                f" needs {schema.VERSION}: run `script-monitor store migrate` first"
            )

    def _check_pg(self, db: Any, migrate: bool = False) -> int:
        """Check (or bring up to date) a PostgreSQL schema; return the version found."""
        from .postgres import MIGRATION_LOCK, SCHEMA_TABLE

        db.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
        found = db.execute(f"SELECT MAX(version) FROM {SCHEMA_TABLE}").fetchone()[0] or 0
        self._check_version(found, migrate)
        if found == schema.VERSION:
            return found
        db.execute("BEGIN")
        try:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            version = db.execute(f"SELECT MAX(version) FROM {SCHEMA_TABLE}").fetchone()[0] or 0
            for statement in schema.statements(self.dialect, version):
                db.execute(statement)
            db.execute(f"DELETE FROM {SCHEMA_TABLE}")
            db.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (%s)", (schema.VERSION,))
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
        return found

    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; return (version before, version now)."""
        if self.url is None:
            before = 0
            if self.path.exists():
                try:
                    with sqlite3.connect(self.path) as probe:
                        before = probe.execute("PRAGMA user_version").fetchone()[0]
                    probe.close()
                except sqlite3.Error as e:
                    raise self.dialect.error(e) from None
            self.connect()
            return before, schema.VERSION
        from .postgres import PgDb

        with self._lock:
            try:
                db = PgDb(self.url, self.busy_ms)
                try:
                    before = self._check_pg(db, migrate=True)
                finally:
                    db.close()
            except self.errors() as e:
                raise self.dialect.error(e) from None
        return before, schema.VERSION

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    # ------------------------------------------------------------ transactions

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make every write inside one transaction, committed when the block ends.

        The engine records a loop's finished runs and the runs it is about to start
        with one commit instead of one each; it starts the processes only after the
        commit, so a run is never running without its row.  Other threads' writes
        wait for the block (it holds the lock); nested batches join the outer one.
        """
        with self._lock:
            if self._batching is not None:
                yield
                return
            with self.write() as tx:
                self._batching = tx
                try:
                    yield
                finally:
                    self._batching = None

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """One write transaction (or the open batch's): committed, or rolled back on error."""
        with self._lock:
            if self._batching is not None:
                yield self._batching
                return
            db = self._begin(self.dialect.write_begin)
            try:
                try:
                    yield Tx(db, self.dialect)
                except BaseException:
                    if db.in_transaction:  # SQLite may have rolled back itself (disk full)
                        self._rollback(db)
                    raise
                db.execute("COMMIT")
            except self.errors() as e:
                if db.in_transaction:
                    self._rollback(db)
                raise self.dialect.error(e) from None

    @staticmethod
    def _rollback(db: Any) -> None:
        try:
            db.execute("ROLLBACK")
        except Exception:  # a broken connection: the server ended the transaction
            pass

    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        """Several reads that see one state of the history."""
        with self._lock:
            db = self._begin(self.dialect.read_begin)
            try:
                try:
                    yield Tx(db, self.dialect)
                finally:
                    if db.in_transaction:
                        db.execute("COMMIT")
            except self.errors() as e:
                raise self.dialect.error(e) from None

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The rows of one query (retried while a shared store is out of reach)."""
        if not self._lock.acquire(blocking=self.url is None):
            return self._read_pooled(sql, args)  # PostgreSQL: another thread has the connection
        try:
            return self._healing(lambda db: db.execute(self.dialect.sql(sql), args).fetchall())
        finally:
            self._lock.release()

    def _begin(self, statement: str) -> Any:
        """A connection with a transaction begun on it.  Nothing has been done in it yet,
        so a shared store's lost connection is opened again and the BEGIN retried."""
        db = self._db
        if db is not None:
            if self.url is None and statement == SqliteDialect.write_begin:
                return self._take_writer(db)
            try:  # the common case, without the retry loop's set-up
                db.execute(statement)
                return db
            except self.errors() as e:
                if self.url is None:
                    raise self.dialect.error(e) from None
        return self._healing(lambda db: (db.execute(statement), db)[1])

    def _take_writer(self, db: Any) -> Any:
        """``BEGIN IMMEDIATE`` on SQLite, trying again every few milliseconds while another
        process writes, for up to the busy timeout.  SQLite's own busy handler sleeps up
        to 100 ms between tries, so a process that writes in a loop of short transactions
        (``history prune``) would take the lock again before a waiting run's next try."""
        try:
            db.execute("BEGIN IMMEDIATE")
            return db
        except sqlite3.OperationalError as e:
            if not _busy(e):
                raise self.dialect.error(e) from None
        give_up = time.monotonic() + self.busy_ms / 1000
        db.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                time.sleep(WRITER_POLL)
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return db
                except sqlite3.OperationalError as e:
                    if not _busy(e) or time.monotonic() > give_up:
                        raise self.dialect.error(e) from None
        finally:
            db.execute(f"PRAGMA busy_timeout = {self.busy_ms}")

    def let_others_write(self) -> None:
        """Between two transactions of a long job (pruning): on SQLite, where one process
        writes at a time, a pause in which a waiting writer takes the lock.  The job
        also copies what it wrote into the database file itself (a passive checkpoint,
        which never blocks a writer): else the write-ahead log it grew would be copied
        by whichever commit next crosses SQLite's automatic checkpoint, often a run's."""
        if self.url is None:
            with self._lock:
                db = self._db
                if db is not None:
                    try:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error:
                        pass  # busy or not: the next one catches up
            time.sleep(WRITER_GAP)

    def _healing(self, step: Callable[[Any], Any], retry_for: float | None = None) -> Any:
        """Run ``step`` on the connection; on PostgreSQL, a connection lost or refused
        (the server restarting, a network blip) is opened again with backoff for up to
        ``retry_for`` seconds.  Only steps that are safe to repeat come here: a query,
        or the BEGIN of a transaction."""
        retry_for = self.retry_for if retry_for is None else retry_for
        give_up = time.monotonic() + retry_for
        pause = 0.1
        while True:
            try:
                return step(self.connect())
            except StoreUnreachable as e:  # from connect()
                error: StoreError = e
            except self.errors() as e:
                error = self.dialect.error(e)
            if self.url is None or not isinstance(error, StoreUnreachable):
                raise error
            self._drop()
            if pause == 0.1 and retry_for > 0:
                import logging  # only now: the import costs every command's start-up

                logging.getLogger("script_monitor.store").warning(
                    "%s; trying again for up to %gs (store.retry_for)", error, retry_for
                )
            if time.monotonic() + pause > give_up:
                raise StoreUnreachable(
                    f"{error} (gave up after retrying for {retry_for:g}s: store.retry_for)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _drop(self) -> None:
        """Forget a connection that failed; the next step opens a new one."""
        if self._db is not None:
            try:
                self._db.close()
            except Exception:  # already broken
                pass
            self._db = None

    def _read_pooled(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """A read on a pool connection, beside the one another thread is using."""
        from .postgres import ReadPool

        try:
            with _POOL_LOCK:
                if self._pool is None:
                    self._pool = ReadPool(self.url or "", self.busy_ms)
            query = self.dialect.sql(sql)
            return self._pool.run(lambda db: db.execute(query, args).fetchall())
        except self.errors() as e:
            raise self.dialect.error(e) from None
        except TimeoutError as e:  # every pool connection busy
            raise StoreUnreachable(f"cannot reach the store {self.where}: {e}") from None

    def own(self, sql: str, args: Sequence[Any], retry_for: float | None = None) -> int:
        """One statement on rows only this process writes (claims, heartbeats, log
        chunks); on PostgreSQL in a transaction of its own, retried on a new connection
        while the server is out of reach (a stale connection after a restart included):
        a claim repeated after its first try was committed unseen finds the run claimed
        and refuses it, so a run still executes at most once.  ``retry_for`` bounds the
        retries (a heartbeat: 0, it beats again soon).  Returns the rows changed."""
        if self.url is None:
            with self.write() as tx:
                return tx.execute(sql, args).rowcount
        with self._lock:
            return self._healing(
                lambda db: db.execute(self.dialect.sql(sql), args).rowcount, retry_for
            )

    def own_rows(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """As ``own``, for one statement that returns rows (PostgreSQL's data-modifying
        ``WITH ... RETURNING``); it must be safe to repeat, as ``own``'s are."""
        if self.url is None:
            with self.write() as tx:
                return tx.all(sql, args)
        with self._lock:
            return self._healing(lambda db: db.execute(self.dialect.sql(sql), args).fetchall())


def _private_dir(path: Path) -> None:
    """Create the state folder readable by its owner only (the history holds output)."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)


def _private_file(path: Path) -> None:
    """Create the database 0600, whatever the umask (SQLite gives its -wal and -shm
    files the database file's permissions)."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
