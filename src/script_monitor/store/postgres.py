"""PostgreSQL connections for a shared history (``store.url``).

psycopg is imported only here, and this module only when a ``postgresql://`` store
is configured.  Connections run in autocommit mode and the core opens transactions
with explicit ``BEGIN`` statements, as it does on SQLite; a connection that broke
between two transactions is opened again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
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


def connect_args(lock_timeout_ms: int) -> dict[str, Any]:
    return {
        "autocommit": True,
        "options": f"-c lock_timeout={lock_timeout_ms}",
        "application_name": "script-monitor",
    }


def _scrub(url: str, e: Exception) -> Exception:
    """The driver's error with the URL's password taken out of its text."""
    import psycopg

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = text.replace(url, mask_url(url))
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***")
    return psycopg.OperationalError(text)


class PgDb:
    """One psycopg connection with the small interface the core uses on both backends."""

    def __init__(self, url: str, lock_timeout_ms: int, raw: Any = None, connect_timeout: int = 10):
        self.url = url
        self.lock_timeout_ms = lock_timeout_ms
        self.connect_timeout = connect_timeout
        self.total_changes = 0
        self._conn: Any = raw
        if raw is None:
            self._open()

    def _open(self) -> None:
        import psycopg

        old, self._conn = self._conn, None
        if old is not None:
            try:
                old.close()
            except psycopg.Error:
                pass
        try:
            self._conn = psycopg.connect(
                self.url, connect_timeout=self.connect_timeout, **connect_args(self.lock_timeout_ms)
            )
        except psycopg.Error as e:
            raise _scrub(self.url, e) from None

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        if self._conn is None or self._conn.closed:
            return False
        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def _ready(self, sql: str) -> Any:
        broken = self._conn is None or self._conn.closed or self._conn.broken
        if broken and (sql.startswith("BEGIN") or not self.in_transaction):
            self._open()
        return self._conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        cur = self._ready(sql).execute(sql, tuple(args))
        if cur.rowcount > 0 and cur.description is None:
            self.total_changes += cur.rowcount
        return cur

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        with self._ready(sql).cursor() as cur:
            cur.executemany(sql, [tuple(r) for r in rows])
            self.total_changes += max(cur.rowcount, 0)
            return cur.rowcount

    def rollback(self) -> None:
        """End a failed transaction; a broken connection is simply dropped."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            return
        if self.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def pool(url: str, lock_timeout_ms: int, size: int = 4) -> Any:
    """A psycopg_pool of connections for reads that run beside the Store's own (``serve``)."""
    from psycopg_pool import ConnectionPool

    return ConnectionPool(
        url,
        min_size=0,
        max_size=size,
        kwargs=connect_args(lock_timeout_ms),
        check=ConnectionPool.check_connection,
        timeout=10,
        open=True,
        name="script-monitor",
    )
