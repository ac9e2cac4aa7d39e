"""PostgreSQL connections for a shared history (``store.url``).

The driver is psycopg2, imported only here (and by the dialect's error mapping), and
this module only when a ``postgresql://`` store is configured.  psycopg2 is one C
extension that a command imports in about 20 ms; psycopg 3's import takes about 85 ms,
most of what ``history NAME`` may take (bench/HISTORY.md).  Connections run in autocommit
mode and the core opens transactions with explicit ``BEGIN`` statements, as it does on
SQLite; a connection that broke between two transactions is opened again.  ``bytea``
values come back as ``bytes``, as sqlite3 returns BLOBs.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

SCHEMA_TABLE = "schema_version"
MIGRATION_LOCK = 0x5C819_7057  # an advisory lock held only while the schema changes


def is_postgres(url: str | None) -> bool:
    return url is not None and url.split(":", 1)[0] in ("postgresql", "postgres")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


T = TypeVar("T")
PAGE = 200  # statements of an executemany sent together
PREPARE_AFTER = 5  # uses of one statement (outside a transaction) before it is prepared


def _connect(url: str, connect_timeout: int, lock_timeout_ms: int) -> Any:
    import psycopg2
    import psycopg2.extensions as ext

    binary = psycopg2.BINARY  # bytea as a memoryview; as bytes below

    def to_bytes(value: str | bytes | None, cur: Any) -> bytes | None:
        return None if value is None else bytes(binary(value, cur))

    conn = psycopg2.connect(
        url,
        connect_timeout=connect_timeout,
        options=f"-c lock_timeout={lock_timeout_ms}",
        application_name="script-monitor",
    )
    conn.autocommit = True
    ext.register_type(ext.new_type(binary.values, "BYTES", to_bytes), conn)
    return conn


def _scrub(url: str, e: Exception) -> Exception:
    """The driver's error with the URL's password taken out of its text."""
    import psycopg2

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = text.replace(url, mask_url(url))
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***")
    return psycopg2.OperationalError(text)


class PgDb:
    """One psycopg2 connection with the small interface the core uses on both backends."""

    def __init__(self, url: str, lock_timeout_ms: int, connect_timeout: int = 10):
        self.url = url
        self.lock_timeout_ms = lock_timeout_ms
        self.connect_timeout = connect_timeout
        self.total_changes = 0
        self._conn: Any = None
        self._uses: dict[str, int] = {}
        self._prepared: dict[str, str | None] = {}  # None: never (the server refused)
        self._prepare_off = False  # a pooler lost a prepared statement: none any more
        self._names = ""
        self._open()

    def _open(self) -> None:
        import psycopg2

        old, self._conn = self._conn, None
        self._prepared = {}  # prepared statements live as long as their connection
        # names of this connection's own: behind a pooler another client's never match
        self._names = f"sm_{os.urandom(4).hex()}_"
        if old is not None:
            try:
                old.close()
            except psycopg2.Error:
                pass
        try:
            self._conn = _connect(self.url, self.connect_timeout, self.lock_timeout_ms)
        except psycopg2.Error as e:
            raise _scrub(self.url, e) from None

    @property
    def broken(self) -> bool:
        """No connection, or one psycopg2 found closed or lost."""
        return self._conn is None or self._conn.closed != 0

    @property
    def in_transaction(self) -> bool:
        if self.broken:
            return False
        return self._conn.info.transaction_status != 0  # TRANSACTION_STATUS_IDLE

    def _ready(self, sql: str) -> Any:
        if self.broken and (sql.startswith("BEGIN") or not self.in_transaction):
            self._open()
        return self._conn

    def execute(self, sql: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        conn = self._ready(sql)
        cur = conn.cursor()
        if args and not isinstance(args, dict):  # a dict: named %(name)s parameters
            args = tuple(args)
            if not self._prepare_off and conn.info.transaction_status == 0:  # on its own
                self._execute_prepared(cur, sql, args)
                return self._counted(cur)
        cur.execute(sql, args or None)  # None: a '%' stays a '%'
        return self._counted(cur)

    def _counted(self, cur: Any) -> Any:
        if cur.rowcount > 0 and cur.description is None:
            self.total_changes += cur.rowcount
        return cur

    def _execute_prepared(self, cur: Any, sql: str, args: tuple[Any, ...]) -> None:
        """A statement a worker or a poller repeats is parsed and planned once per
        connection, as psycopg 3 did by itself: after ``PREPARE_AFTER`` uses it is
        prepared, and run with ``EXECUTE``.  Only outside a transaction, where a
        refusal costs nothing: a parameter whose type the server cannot infer, or a
        pooler in transaction mode that loses prepared statements between two
        statements (then nothing more is prepared on this connection)."""
        import psycopg2

        name = self._prepared.get(sql, "")
        if name == "":
            name = self._prepare(cur, sql, len(args))
        if not name:
            cur.execute(sql, args)
            return
        try:
            cur.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(args))})", args)
        except psycopg2.errors.InvalidSqlStatementName:
            self._prepare_off = True
            cur.execute(sql, args)

    def _prepare(self, cur: Any, sql: str, n: int) -> str | None:
        import psycopg2

        uses = self._uses.get(sql, 0) + 1
        if uses < PREPARE_AFTER:
            if len(self._uses) < 500:  # the statements of the code, not generated ones
                self._uses[sql] = uses
            return None
        parts = sql.split("%s")
        if len(parts) != n + 1 or n > 32:
            self._prepared[sql] = None
            return None
        name = f"{self._names}{len(self._prepared) + 1}"
        text = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
        try:
            cur.execute(f"PREPARE {name} AS {text}")
        except psycopg2.OperationalError:
            raise  # the connection is lost: the caller's retry opens a new one
        except psycopg2.Error:
            self._prepared[sql] = None
            return None
        self._prepared[sql] = name
        return name

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """The statement once per row, up to ``PAGE`` of them in one round trip
        (psycopg2's own executemany makes one per row)."""
        rows = [tuple(r) for r in rows]
        with self._ready(sql).cursor() as cur:
            if len(rows) <= 2:
                cur.executemany(sql, rows)
            else:
                from psycopg2.extras import execute_batch

                execute_batch(cur, sql, rows, page_size=PAGE)
        self.total_changes += len(rows)  # a marker of this connection's writes, not a count

    def rollback(self) -> None:
        """End a failed transaction; a broken connection is simply dropped."""
        if self.broken:
            return
        if self.in_transaction:  # not conn.rollback(): in autocommit mode it sends nothing
            self._conn.cursor().execute("ROLLBACK")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def __enter__(self) -> PgDb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReadPool:
    """Up to ``size`` connections for reads that run beside the Store's own
    (``serve``'s request threads).  A read waits up to ``timeout`` seconds for a free
    connection; one that finds its connection lost (the server restarted since it was
    last used) is tried once more on a new one."""

    def __init__(self, url: str, lock_timeout_ms: int, size: int = 4, timeout: float = 10):
        self.url = url
        self.lock_timeout_ms = lock_timeout_ms
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(size)
        self._idle: queue.LifoQueue[PgDb] = queue.LifoQueue()

    def run(self, step: Callable[[PgDb], T]) -> T:
        import psycopg2

        if not self._slots.acquire(timeout=self.timeout):
            raise TimeoutError(f"no free connection to the store after {self.timeout:g}s")
        db: PgDb | None = None
        try:
            try:
                db = self._idle.get_nowait()
            except queue.Empty:
                db = PgDb(self.url, self.lock_timeout_ms)
            try:
                return step(db)
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if db.in_transaction:
                    raise
                db.close()  # stale: the server restarted since this one was used
                db = PgDb(self.url, self.lock_timeout_ms)
                return step(db)
        except BaseException:
            if db is not None:
                db.close()
                db = None
            raise
        finally:
            if db is not None:
                self._idle.put(db)
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
