"""What differs between the history's two backends, in one object per backend.

Repositories write their SQL once, in the part of SQL that SQLite 3.35+ and
PostgreSQL share (``ON CONFLICT``, ``RETURNING``, ``FILTER``, window functions),
with ``?`` placeholders.  A ``Dialect`` owns everything else:

- the placeholder style (``?`` for sqlite3, ``%s`` for psycopg2);
- how a write transaction begins (SQLite's ``BEGIN IMMEDIATE`` takes its single
  writer lock at once; PostgreSQL's plain ``BEGIN`` takes only row locks);
- row locking for claims (``FOR UPDATE SKIP LOCKED``, nothing on SQLite, whose
  writer lock already serializes claims);
- how an INSERT gives its new id (``lastrowid``, or ``RETURNING id``) and how an
  OFFSET is written without a LIMIT;
- the column types of the schema (``Dialect.types``, used by the migrations);
- how the driver's errors map to the project's own: ``StoreBusy``,
  ``StoreUnreachable``, ``StoreFull``, ``StoreCorrupt`` and ``SchemaMismatch``,
  by error code and exception class, never by the text of a message.
"""

from __future__ import annotations

import sqlite3
from typing import ClassVar

from ..errors import (
    SchemaMismatch,
    StoreBusy,
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreUnreachable,
)

# SQLite's primary result codes (the low byte of ``sqlite_errorcode``).
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_NOTADB = 26


class Dialect:
    """The SQL and the errors that are particular to one backend."""

    name: ClassVar[str]
    write_begin: ClassVar[str]
    read_begin: ClassVar[str]
    skip_locked: ClassVar[str]
    no_limit: ClassVar[str]  # LIMIT that allows every row, for OFFSET
    returning: ClassVar[bool]  # an INSERT's new id through RETURNING (else lastrowid)
    translates: ClassVar[bool]  # whether ``sql`` changes a statement
    arrays: ClassVar[bool]  # a list binds as one array parameter (``unnest(?::text[])``)
    now: ClassVar[str]  # the store's own clock, in seconds since the epoch (leases)
    # A transaction whose commit need not wait for the disk (pruning: lost in a crash, it
    # is done again by the next prune), so that it does not crowd the runs' own commits.
    lazy_commit: ClassVar[str | None] = None
    types: ClassVar[dict[str, str]]

    def __init__(self, where: str, busy_ms: int):
        self.where = where
        self.busy_ms = busy_ms

    def sql(self, text: str) -> str:
        """The statement with this driver's placeholders."""
        return text

    def error(self, e: Exception) -> StoreError:
        """The project's error for a driver error."""
        raise NotImplementedError

    def _busy(self) -> StoreBusy:
        return StoreBusy(
            f"the run history {self.where} stayed locked by another process for "
            f"{self.busy_ms / 1000:g}s; nothing was recorded"
        )


class SqliteDialect(Dialect):
    name = "sqlite"
    write_begin = "BEGIN IMMEDIATE"
    read_begin = "BEGIN"
    skip_locked = ""
    no_limit = "LIMIT -1"
    now = "((julianday('now') - 2440587.5) * 86400.0)"
    translates = False
    arrays = False
    returning = False  # lastrowid costs nothing; RETURNING a row to fetch
    types: ClassVar[dict[str, str]] = {
        "pk": "INTEGER PRIMARY KEY",
        "int": "INTEGER",
        "real": "REAL",
        "text": "TEXT",
        "blob": "BLOB",
        "no_rowid": " WITHOUT ROWID",
    }

    def error(self, e: Exception) -> StoreError:
        code = getattr(e, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return self._busy()
        if primary in (_SQLITE_FULL, _SQLITE_IOERR):
            return StoreFull(
                f"the run history {self.where} cannot be written ({e}): is its disk full?"
                " Nothing was recorded"
            )
        if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return StoreCorrupt(
                f"the run history {self.where} is corrupted ({e}); move it aside "
                "to start a new history"
            )
        if primary == _SQLITE_CANTOPEN:
            return StoreUnreachable(f"cannot open the run history {self.where}: {e}")
        if isinstance(e, sqlite3.OperationalError) and primary == 1:  # SQLITE_ERROR
            # A missing table or column: a history written by another version.
            return SchemaMismatch(f"the run history {self.where} cannot be used: {e}")
        return StoreError(f"the run history {self.where} cannot be used: {e}")


class PostgresDialect(Dialect):
    name = "postgresql"
    write_begin = "BEGIN"
    read_begin = "BEGIN ISOLATION LEVEL REPEATABLE READ"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    no_limit = "LIMIT ALL"
    now = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
    lazy_commit = "SET LOCAL synchronous_commit = off"  # SQLite's WAL commits never sync
    translates = True
    arrays = True
    returning = True
    types: ClassVar[dict[str, str]] = {
        "pk": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "int": "BIGINT",
        "real": "DOUBLE PRECISION",
        "text": "TEXT",
        "blob": "BYTEA",
        "no_rowid": "",
    }

    def __init__(self, where: str, busy_ms: int):
        super().__init__(where, busy_ms)
        self._sql: dict[str, str] = {}

    def sql(self, text: str) -> str:
        done = self._sql.get(text)
        if done is None:
            # The repositories' SQL has no '%' and no '?' inside literals.
            done = self._sql[text] = text.replace("?", "%s")
        return done

    def error(self, e: Exception) -> StoreError:
        import psycopg2
        import psycopg2.errors as pg

        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(
            e,
            pg.LockNotAvailable | pg.QueryCanceled | pg.SerializationFailure | pg.DeadlockDetected,
        ):
            return self._busy()
        if isinstance(e, pg.DiskFull):
            return StoreFull(
                f"the store {self.where} cannot be written ({text}): is its disk full?"
            )
        if isinstance(e, pg.UndefinedTable | pg.UndefinedColumn):
            return SchemaMismatch(
                f"the store {self.where} has another schema ({text}): run"
                " `script-monitor store migrate`"
            )
        if isinstance(e, psycopg2.OperationalError | psycopg2.InterfaceError):
            return StoreUnreachable(f"cannot reach the store {self.where}: {text}")
        return StoreError(f"the store {self.where} cannot be used: {text}")


def driver_errors(dialect: Dialect) -> tuple[type[Exception], ...]:
    """The exception classes of the dialect's driver."""
    if isinstance(dialect, PostgresDialect):
        import psycopg2

        return (psycopg2.Error,)
    return (sqlite3.Error,)
