"""The run-history database: location, schema, writes and queries.

SQLite in WAL mode with a busy timeout and explicit ``BEGIN IMMEDIATE`` write
transactions, so that many script-monitor processes (cron, the scheduler, a
person at a shell) can record runs at once without losing any.  The engine only
uses the methods of ``Store``.  The same class keeps a shared PostgreSQL history
(``store.url``, distributed execution): ``store_pg.PgConnection`` gives it sqlite3's
connection interface and translates SQLite's SQL, so every method is written once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import msgspec

from .errors import StoreError
from .states import LogState

BUSY_TIMEOUT_MS = 60_000
BUSY_TIMEOUT_ENV = "SCRIPT_MONITOR_BUSY_TIMEOUT"  # seconds; how long a write waits for a lock


def busy_timeout_ms() -> int:
    """The busy timeout: $SCRIPT_MONITOR_BUSY_TIMEOUT seconds, else 60 s."""
    try:
        value = float(os.environ[BUSY_TIMEOUT_ENV])
    except (KeyError, ValueError):
        return BUSY_TIMEOUT_MS
    return int(value * 1000) if 0 < value < 86400 else BUSY_TIMEOUT_MS


DB_NAME = "history.db"
_POOL_LOCK = threading.Lock()

# Each entry migrates the schema from version i to i + 1.
MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS group_runs (
        id INTEGER PRIMARY KEY,
        group_name TEXT NOT NULL,
        trigger TEXT NOT NULL,
        status TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        owner TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX IF NOT EXISTS group_runs_name ON group_runs (group_name, id);
    CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY,
        script TEXT NOT NULL,
        group_run_id INTEGER REFERENCES group_runs (id),
        group_name TEXT,
        trigger TEXT NOT NULL,
        status TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        duration REAL,
        exit_code INTEGER,
        signal INTEGER,
        pid INTEGER,
        owner TEXT NOT NULL,
        log_path TEXT,
        log_state TEXT NOT NULL DEFAULT 'none',
        detail TEXT
    );
    CREATE INDEX IF NOT EXISTS runs_script ON runs (script, id);
    CREATE INDEX IF NOT EXISTS runs_status ON runs (status) WHERE status = 'running';
    CREATE INDEX IF NOT EXISTS runs_group ON runs (group_run_id);
    """,
    # Rotation looks for a script's runs that still have a log: only these, not its
    # whole history (a run a minute is half a million rows a year).
    """
    CREATE INDEX IF NOT EXISTS runs_logs ON runs (script, id) WHERE log_state = 'ok';
    """,
    # Retries: every attempt is its own row.  The host that ran it (a worker's name
    # once runs are distributed; the machine's hostname for local runs).
    """
    ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE runs ADD COLUMN host TEXT;
    """,
    # Distributed execution: a worker claims a run by setting its first heartbeat, and
    # beats while it runs; cancel asks its worker to end it; a remote run's output
    # reaches the history in chunks (logs from any host).
    """
    ALTER TABLE runs ADD COLUMN heartbeat REAL;
    ALTER TABLE runs ADD COLUMN cancel INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE IF NOT EXISTS run_logs (
        run_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    """,
    # Notifications, output alerts and the watchdog (DESIGN §7): see the block at the
    # end of Store.  `notifications.key` (event, unit run, channel) is unique, so the
    # same event of the same run is recorded, and so sent, once.  Few pages: a new
    # history must fit on a small disk (tests/test_faults.py).
    """
    CREATE TABLE IF NOT EXISTS notifications (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL,
        unit TEXT NOT NULL,
        ref TEXT NOT NULL,
        run_id INTEGER,
        channel TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        accepted TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        next_try REAL NOT NULL,
        sent REAL,
        last_error TEXT,
        claimed_by TEXT,
        claimed_until REAL
    );
    CREATE INDEX IF NOT EXISTS notifications_unit ON notifications (unit, id);
    CREATE TABLE IF NOT EXISTS alert_matches (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL,
        script TEXT NOT NULL,
        line_number INTEGER NOT NULL,
        line TEXT NOT NULL,
        severity TEXT NOT NULL,
        pattern TEXT NOT NULL,
        fail INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS alert_matches_run ON alert_matches (run_id);
    CREATE TABLE IF NOT EXISTS alert_overflow (
        run_id INTEGER PRIMARY KEY,
        dropped INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS watch_positions (
        group_name TEXT PRIMARY KEY,
        schedule TEXT NOT NULL,
        position REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS watch_events (
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT,
        created REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS group_runs_running ON group_runs (status)
        WHERE status = 'running';
    CREATE INDEX IF NOT EXISTS group_runs_scheduled ON group_runs (group_name, started)
        WHERE trigger = 'schedule';
    """,
    # The web server's audit trail and the sessions ended by signing out (audit.py,
    # docs/SECURITY.md).
    """
    CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        token_name TEXT NOT NULL,
        client TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        result TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
    CREATE TABLE IF NOT EXISTS revoked_sessions (
        sid TEXT PRIMARY KEY,
        expires REAL NOT NULL
    ) WITHOUT ROWID;
    """,
]

RUN_FIELDS = [
    "id",
    "script",
    "group_run_id",
    "group_name",
    "trigger",
    "status",
    "started",
    "ended",
    "duration",
    "exit_code",
    "signal",
    "pid",
    "owner",
    "log_path",
    "log_state",
    "detail",
    "attempt",
    "host",
]
GROUP_FIELDS = ["id", "group_name", "trigger", "status", "started", "ended", "owner", "detail"]


class Owner(msgspec.Struct, frozen=True):
    """Identifies a script-monitor process, so a reused pid is not taken for it."""

    host: str
    boot: str
    pid: int
    start: str

    def __str__(self) -> str:
        return f"{self.host}|{self.boot}|{self.pid}|{self.start}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        parts = text.split("|")
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), parts[3])

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(os.uname().nodename, _boot_id(), pid, _proc_start(pid) or "")

    def is_gone(self, me: Owner) -> bool:
        """True when this owner's process certainly no longer runs (same host only)."""
        if self.host != me.host:
            return False
        if self.boot != me.boot:
            return True
        return _proc_start(self.pid) != self.start


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields and fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode() if len(fields) > 19 else ""


def _log_state(log_path: str | None) -> LogState:
    return LogState.OK if log_path else LogState.NONE


def _rowid(cur: sqlite3.Cursor) -> int:
    assert cur.lastrowid is not None  # an INSERT always sets it
    return cur.lastrowid


class History(Protocol):
    """What the engine, the scheduler and the commands need of a run history.

    ``Store`` (SQLite) implements it; a shared PostgreSQL history for distributed
    execution would implement the same methods with the same row dictionaries
    (fields ``RUN_FIELDS`` and ``GROUP_FIELDS``).
    """

    def start_group(self, group: str, trigger: str, now: float | None = None) -> int: ...
    def finish_group(self, group_run_id: int, status: str, detail: str | None = None) -> None: ...
    def start_run(
        self,
        script: str,
        trigger: str,
        started: float,
        group_run_id: int | None = None,
        group: str | None = None,
        log_path: str | None = None,
        attempt: int = 1,
    ) -> int: ...
    def finish_run(
        self,
        run_id: int,
        status: str,
        ended: float,
        duration: float,
        exit_code: int | None = None,
        signal: int | None = None,
        pid: int | None = None,
        detail: str | None = None,
        log_state: str | None = None,
        expire: tuple[str, int | None, float | None] | None = None,
    ) -> list[str]: ...
    def add_skipped(
        self,
        scripts: list[str],
        trigger: str,
        group_run_id: int | None = None,
        group: str | None = None,
        detail: str | None = None,
    ) -> None: ...
    def batch(self) -> AbstractContextManager[None]: ...
    def mark_logs_cleared(self, script: str | None) -> list[str]: ...
    def reap_lost(self) -> int: ...
    def run(self, run_id: int) -> dict[str, Any] | None: ...
    def history(self, script: str, limit: int | None = None) -> list[dict[str, Any]]: ...
    def latest_run(self, script: str, with_log: bool = False) -> dict[str, Any] | None: ...
    def last_runs(self) -> dict[str, dict[str, Any]]: ...
    def last_group_runs(self) -> dict[str, dict[str, Any]]: ...


class Store:
    """The run history of one config directory."""

    def __init__(self, state_dir: Path, url: str | None = None):
        self.path = state_dir / DB_NAME
        self.url = url or None  # a postgresql:// URL, else SQLite at self.path
        self.where = str(self.path)
        self._pool: Any = None
        if self.url is not None:
            from .store_pg import is_postgres, mask_url

            self.where = mask_url(self.url)
            if not is_postgres(self.url):
                raise StoreError(
                    f"store.url {self.where}: only postgresql:// URLs are supported"
                    " (leave it out for the SQLite history in the state folder)"
                )
        self.owner = Owner.current()
        self._owner_text = str(self.owner)
        self._lock = threading.RLock()
        self._db: Any = None  # a sqlite3.Connection, or a store_pg.PgConnection
        self._batching: sqlite3.Connection | None = None
        self.busy_ms = busy_timeout_ms()

    # ------------------------------------------------------------ connection

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if self.url is not None:
            return self._connect_pg()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists():  # 0600 whatever the umask; -wal and -shm follow it
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            db = sqlite3.connect(
                self.path,
                timeout=self.busy_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            db.execute(f"PRAGMA busy_timeout = {self.busy_ms}")
            self._setup(db)
        except sqlite3.DatabaseError as e:
            raise StoreError(self._explain(e)) from None
        except OSError as e:
            raise StoreError(f"cannot open the run history {self.path}: {e.strerror}") from None
        self._db = db
        return db

    def _connect_pg(self) -> Any:
        from .store_pg import PgConnection

        try:
            db = PgConnection(self.url or "", self.busy_ms)
            self._setup_pg(db, migrate=False)
        except sqlite3.DatabaseError as e:
            raise StoreError(self._explain(e)) from None
        self._db = db
        return db

    def _setup_pg(self, db: Any, migrate: bool) -> int:
        """Check (or bring up to date) the schema version; return the version found."""
        from .store_pg import SCHEMA_TABLE, ddl

        db.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
        row = db.execute(f"SELECT MAX(version) FROM {SCHEMA_TABLE}").fetchone()
        found = row[0] or 0
        if found > len(MIGRATIONS):
            raise StoreError(
                f"the store {self.where} has schema version {found}, newer than this"
                f" script-monitor knows ({len(MIGRATIONS)}): upgrade script-monitor on this host"
            )
        if found == len(MIGRATIONS):
            return found
        if not migrate:
            raise StoreError(
                f"the store {self.where} has schema version {found}, this script-monitor"
                f" needs {len(MIGRATIONS)}: run `script-monitor store migrate` first"
            )
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(f"SELECT MAX(version) FROM {SCHEMA_TABLE}").fetchone()
            version = row[0] or 0
            for step in MIGRATIONS[version:]:
                for statement in step.split(";"):
                    if statement.strip():
                        db.execute(ddl(statement))
            db.execute(f"DELETE FROM {SCHEMA_TABLE}")
            db.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (?)", (len(MIGRATIONS),))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.forget_tables()
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
                except sqlite3.DatabaseError as e:
                    raise StoreError(self._explain(e)) from None
            self._connect()
            return before, len(MIGRATIONS)
        from .store_pg import PgConnection

        with self._lock:
            try:
                db = PgConnection(self.url, self.busy_ms)
                try:
                    before = self._setup_pg(db, migrate=True)
                finally:
                    db.close()
            except sqlite3.DatabaseError as e:
                raise StoreError(self._explain(e)) from None
        return before, len(MIGRATIONS)

    @property
    def is_shared(self) -> bool:
        """True for a PostgreSQL history (shared by hosts), False for SQLite."""
        return self.url is not None

    def _explain(self, e: sqlite3.Error) -> str:
        text = str(e)
        if self.url is not None:
            if text.startswith("cannot reach the store"):
                return text
            if "locked" in text:
                return (
                    f"the store {self.where} stayed locked by another process for "
                    f"{self.busy_ms / 1000:g}s; nothing was recorded"
                )
            return f"the store {self.where} cannot be used: {text}"
        if "locked" in text or "busy" in text:
            return (
                f"the run history {self.path} stayed locked by another process for "
                f"{self.busy_ms / 1000:g}s; nothing was recorded"
            )
        if "not a database" in text or "malformed" in text:
            return (
                f"the run history {self.path} is corrupted ({text}); move it aside "
                "to start a new history"
            )
        if "full" in text or "disk I/O error" in text:
            return (
                f"the run history {self.path} cannot be written ({text}): is its disk full?"
                " Nothing was recorded"
            )
        return f"the run history {self.path} cannot be used: {text}"

    def _setup(self, db: sqlite3.Connection) -> None:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = OFF")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version >= len(MIGRATIONS):
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS[version:]:
                for statement in step.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back itself (disk full)
                db.execute("ROLLBACK")
            raise

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
            with self._write() as db:
                self._batching = db
                try:
                    yield
                finally:
                    self._batching = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._batching is not None:  # inside batch(): its transaction is open
                yield self._batching
                return
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:  # SQLite may have rolled back itself (disk full)
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                raise StoreError(self._explain(e)) from None

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        if not self._lock.acquire(blocking=self.url is None):
            return self._read_pooled(sql, args)  # PostgreSQL: another thread has the connection
        try:
            db = self._connect()
            try:
                return db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as e:
                raise StoreError(self._explain(e)) from None
        finally:
            self._lock.release()

    def _read_pooled(self, sql: str, args: tuple) -> list[Any]:
        """A read on a pool connection, beside the one another thread is using."""
        from .store_pg import PgConnection, pool

        try:
            with _POOL_LOCK:
                if self._pool is None:
                    self._pool = pool(self.url or "", self.busy_ms)
            with self._pool.connection() as raw:
                return PgConnection(self.url or "", self.busy_ms, raw).execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreError(self._explain(e)) from None
        except Exception as e:  # the pool's own errors (PoolTimeout)
            raise StoreError(f"cannot reach the store {self.where}: {e}") from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    # ------------------------------------------------------------ writes

    def start_group(self, group: str, trigger: str, now: float | None = None) -> int:
        """Record a group run as running; return its id."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO group_runs (group_name, trigger, status, started, owner)"
                " VALUES (?, ?, 'running', ?, ?)",
                (group, trigger, now or time.time(), self._owner_text),
            )
            return _rowid(cur)

    def finish_group(self, group_run_id: int, status: str, detail: str | None = None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE group_runs SET status = ?, ended = ?, detail = ? WHERE id = ?",
                (status, time.time(), detail, group_run_id),
            )

    def start_run(
        self,
        script: str,
        trigger: str,
        started: float,
        group_run_id: int | None = None,
        group: str | None = None,
        log_path: str | None = None,
        attempt: int = 1,
    ) -> int:
        """Record a script run (attempt ``attempt``) as running; return its id."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO runs (script, group_run_id, group_name, trigger, status, started,"
                " owner, log_path, log_state, attempt, host)"
                " VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                (
                    script,
                    group_run_id,
                    group,
                    trigger,
                    started,
                    self._owner_text,
                    log_path,
                    _log_state(log_path),
                    attempt,
                    self.owner.host,
                ),
            )
            return _rowid(cur)

    def finish_run(
        self,
        run_id: int,
        status: str,
        ended: float,
        duration: float,
        exit_code: int | None = None,
        signal: int | None = None,
        pid: int | None = None,
        detail: str | None = None,
        log_state: str | None = None,
        expire: tuple[str, int | None, float | None] | None = None,
    ) -> list[str]:
        """Record the end of a run; with ``expire`` (script, keep, before) rotate in the same
        commit, and return the log paths to delete."""
        with self._write() as db:
            db.execute(
                "UPDATE runs SET status = ?, ended = ?, duration = ?, exit_code = ?, signal = ?,"
                " pid = COALESCE(?, pid), detail = ?, log_state = COALESCE(?, log_state)"
                " WHERE id = ?",
                (status, ended, duration, exit_code, signal, pid, detail, log_state, run_id),
            )
            return self._expire(db, *expire) if expire is not None else []

    @staticmethod
    def _expire(db, script: str, keep: int | None, before: float | None) -> list[str]:
        where = "script = ? AND log_state = 'ok' AND status != 'running'"
        if keep is not None:
            sql = f"SELECT id, log_path FROM runs WHERE {where} ORDER BY id DESC LIMIT -1 OFFSET ?"
            args: tuple = (script, keep)
        else:
            sql = f"SELECT id, log_path FROM runs WHERE {where} AND started < ?"
            args = (script, before)
        rows = db.execute(sql, args).fetchall()
        if rows:
            db.executemany(
                "UPDATE runs SET log_state = ? WHERE id = ?",
                [(LogState.ROTATED, r[0]) for r in rows],
            )
            Store._drop_chunks(db, [r[0] for r in rows])
        return [r[1] for r in rows if r[1]]

    @staticmethod
    def _drop_chunks(db, run_ids: list[int]) -> None:
        """A rotated or cleared log goes from the history too (a remote run's chunks)."""
        db.executemany("DELETE FROM run_logs WHERE run_id = ?", [(i,) for i in run_ids])

    def add_skipped(
        self,
        scripts: list[str],
        trigger: str,
        group_run_id: int | None = None,
        group: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record scripts that were not started (stop_on_error, interrupt, overlap)."""
        now = time.time()
        host = self.owner.host
        with self._write() as db:
            db.executemany(
                "INSERT INTO runs (script, group_run_id, group_name, trigger, status, started,"
                " ended, duration, owner, detail, host)"
                " VALUES (?, ?, ?, ?, 'skipped', ?, ?, 0, ?, ?, ?)",
                [
                    (s, group_run_id, group, trigger, now, now, self._owner_text, detail, host)
                    for s in scripts
                ],
            )

    def expire_logs(self, script: str, keep: int | None, before: float | None) -> list[str]:
        """Mark logs beyond a count limit or older than ``before`` rotated; return their paths."""
        with self._write() as db:
            return self._expire(db, script, keep, before)

    def mark_logs_cleared(self, script: str | None) -> list[str]:
        """Mark every finished run's log (of one script, or all) as cleared; return paths."""
        cond = "log_state = 'ok' AND status != 'running'"
        args: tuple = ()
        if script is not None:
            cond += " AND script = ?"
            args = (script,)
        with self._write() as db:
            rows = db.execute(f"SELECT id, log_path FROM runs WHERE {cond}", args).fetchall()
            db.execute(f"UPDATE runs SET log_state = ? WHERE {cond}", (LogState.CLEARED, *args))
            self._drop_chunks(db, [r[0] for r in rows])
        return [r[1] for r in rows if r[1]]

    def reap_lost(self) -> int:
        """Mark runs whose owning process is gone as ``lost``; return how many."""
        rows = self._read(
            "SELECT 'r', id, owner FROM runs WHERE status = 'running' UNION ALL "
            "SELECT 'g', id, owner FROM group_runs WHERE status = 'running'"
        )
        lost: dict[str, list[tuple[float, int]]] = {"r": [], "g": []}
        for kind, rid, owner_text in rows:
            owner = Owner.parse(owner_text)
            if owner is not None and owner.is_gone(self.owner):
                lost[kind].append((time.time(), rid))
        if not lost["r"] and not lost["g"]:
            return 0
        with self._write() as db:
            db.executemany(
                "UPDATE runs SET status = 'lost', ended = ?, detail = 'the script-monitor process"
                " recording this run died' WHERE id = ? AND status = 'running'",
                lost["r"],
            )
            db.executemany(
                "UPDATE group_runs SET status = 'lost', ended = ? WHERE id = ?"
                " AND status = 'running'",
                lost["g"],
            )
        if self.on_lost is not None:  # notifications: a lost run is a failure (DESIGN §7)
            self.on_lost([r for _, r in lost["r"]], [g for _, g in lost["g"]])
        return len(lost["r"])

    # ------------------------------------------------------------ queries

    def run(self, run_id: int) -> dict[str, Any] | None:
        rows = self._read(f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE id = ?", (run_id,))
        return dict(zip(RUN_FIELDS, rows[0], strict=True)) if rows else None

    def history(self, script: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The script's runs, newest first."""
        rows = self._read(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE script = ? ORDER BY id DESC LIMIT ?",
            (script, -1 if limit is None else limit),
        )
        return [dict(zip(RUN_FIELDS, r, strict=True)) for r in rows]

    def latest_run(self, script: str, with_log: bool = False) -> dict[str, Any] | None:
        cond = " AND status != 'skipped'" if with_log else ""
        rows = self._read(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE script = ?{cond}"
            " ORDER BY id DESC LIMIT 1",
            (script,),
        )
        return dict(zip(RUN_FIELDS, rows[0], strict=True)) if rows else None

    def last_runs(self) -> dict[str, dict[str, Any]]:
        """The newest non-skipped run of every script that has one."""
        # Walk the distinct scripts through the (script, id) index and take each one's
        # newest row from the same index: O(scripts), where GROUP BY read every row.
        rows = self._read(
            "WITH RECURSIVE s(name) AS (SELECT MIN(script) FROM runs UNION ALL"
            " SELECT (SELECT MIN(script) FROM runs WHERE script > s.name) FROM s"
            " WHERE s.name IS NOT NULL)"
            f" SELECT {', '.join('r.' + f for f in RUN_FIELDS)} FROM s JOIN runs r ON r.id ="
            " (SELECT id FROM runs x WHERE x.script = s.name AND x.status != 'skipped'"
            " ORDER BY x.id DESC LIMIT 1)"
        )
        return {r[1]: dict(zip(RUN_FIELDS, r, strict=True)) for r in rows}

    def last_group_runs(self) -> dict[str, dict[str, Any]]:
        rows = self._read(
            f"SELECT {', '.join('g.' + f for f in GROUP_FIELDS)} FROM group_runs g JOIN "
            "(SELECT group_name, MAX(id) AS id FROM group_runs GROUP BY group_name) last"
            " ON g.id = last.id"
        )
        return {r[1]: dict(zip(GROUP_FIELDS, r, strict=True)) for r in rows}

    def group_run(self, group_run_id: int) -> dict[str, Any] | None:
        rows = self._read(
            f"SELECT {', '.join(GROUP_FIELDS)} FROM group_runs WHERE id = ?", (group_run_id,)
        )
        return dict(zip(GROUP_FIELDS, rows[0], strict=True)) if rows else None

    def group_history(self, group: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._read(
            f"SELECT {', '.join(GROUP_FIELDS)} FROM group_runs WHERE group_name = ?"
            " ORDER BY id DESC LIMIT ?",
            (group, limit),
        )
        return [dict(zip(GROUP_FIELDS, r, strict=True)) for r in rows]

    def runs_of_group_run(self, group_run_id: int) -> list[dict[str, Any]]:
        rows = self._read(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE group_run_id = ? ORDER BY id",
            (group_run_id,),
        )
        return [dict(zip(RUN_FIELDS, r, strict=True)) for r in rows]

    # ------------------------------------------------------------ for `status`

    def running_runs(self) -> list[dict[str, Any]]:
        """Every run still recorded as running, oldest first."""
        rows = self._read(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE status = 'running' ORDER BY id"
        )
        return [dict(zip(RUN_FIELDS, r, strict=True)) for r in rows]

    def recent_runs(self, statuses: list[str], since: float, limit: int) -> list[dict[str, Any]]:
        """Runs with one of ``statuses`` started at ``since`` or later, newest first.

        Walks back from the newest run and stops at the first one started before
        ``since`` (ids grow with start times), so only that window is read.
        """
        out: list[dict[str, Any]] = []
        with self._lock:
            db = self._connect()
            try:
                cur = db.execute(f"SELECT {', '.join(RUN_FIELDS)} FROM runs ORDER BY id DESC")
                for row in cur:
                    run = dict(zip(RUN_FIELDS, row, strict=True))
                    if run["started"] < since or len(out) >= limit:
                        break
                    if run["status"] in statuses:
                        out.append(run)
                cur.close()
            except sqlite3.DatabaseError as e:
                raise StoreError(self._explain(e)) from None
        return out

    def last_finished_group_runs(self, trigger: str) -> dict[str, dict[str, Any]]:
        """Per group, its newest group run with ``trigger`` that ran and ended.

        Ticks recorded as skipped or missed did not run and are passed over.
        """
        rows = self._read(
            f"SELECT {', '.join(GROUP_FIELDS)} FROM group_runs WHERE id IN (SELECT MAX(id)"
            " FROM group_runs WHERE trigger = ? AND status NOT IN ('running', 'skipped',"
            " 'missed') GROUP BY group_name)",
            (trigger,),
        )
        return {r[1]: dict(zip(GROUP_FIELDS, r, strict=True)) for r in rows}

    # ================================================================ web (issue 12)
    # Queries for the dashboard and /metrics (script_monitor.web), kept together here
    # at the end so that changes elsewhere in this class merge easily.

    def data_version(self) -> tuple[int, int]:
        """A value that changes whenever anyone commits to the history, this Store included."""
        with self._lock:
            db = self._connect()
            try:
                if self.url is not None:  # moves with every write to the cluster
                    return db.execute("SELECT pg_current_wal_lsn()::text").fetchone()[
                        0
                    ], db.total_changes
                return db.execute("PRAGMA data_version").fetchone()[0], db.total_changes
            except sqlite3.DatabaseError as e:
                raise StoreError(self._explain(e)) from None

    def latest_runs_by_script(
        self, scripts: list[str], per_script: int
    ) -> dict[str, list[dict[str, Any]]]:
        """The newest ``per_script`` runs of each script (id, status, started, duration)."""
        sql = (
            "SELECT id, status, started, duration FROM runs WHERE script = ?"
            " ORDER BY id DESC LIMIT ?"
        )
        keys = ("id", "status", "started", "duration")
        with self._lock:
            db = self._connect()
            try:
                return {
                    s: [dict(zip(keys, r, strict=True)) for r in db.execute(sql, (s, per_script))]
                    for s in scripts
                }
            except sqlite3.DatabaseError as e:
                raise StoreError(self._explain(e)) from None

    def run_totals(
        self, after_id: int, watched: list[int], buckets: tuple[float, ...]
    ) -> dict[str, Any]:
        """What /metrics needs to bring its running totals up to date, in one snapshot.

        ``groups``: one row per (script, status) of the runs with an id above
        ``after_id``: script, status, count, max started, max ended, max id, sum of
        durations, count of durations, then one count per bucket (duration <= bound).
        ``running``: (id, script) of those still running; ``watched``: the rows of the
        given ids (runs that were running before) as (id, script, status, started,
        ended, duration); ``top``: the highest run id in this snapshot.
        """
        cases = "".join(f", COUNT(*) FILTER (WHERE duration <= {float(b)!r})" for b in buckets)
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN")
                try:
                    top = db.execute("SELECT COALESCE(MAX(id), 0) FROM runs").fetchone()[0]
                    groups = db.execute(
                        "SELECT script, status, COUNT(*), MAX(started), MAX(ended), MAX(id),"
                        f" SUM(duration), COUNT(duration){cases} FROM runs"
                        " WHERE id > ? AND id <= ? GROUP BY script, status",
                        (after_id, top),
                    ).fetchall()
                    running = db.execute(
                        "SELECT id, script FROM runs WHERE status = 'running' AND id > ?"
                        " AND id <= ?",
                        (after_id, top),
                    ).fetchall()
                    rows = []
                    for i in range(0, len(watched), 500):
                        part = watched[i : i + 500]
                        rows += db.execute(
                            "SELECT id, script, status, started, ended, duration FROM runs"
                            f" WHERE id IN ({','.join('?' * len(part))})",
                            part,
                        ).fetchall()
                finally:
                    db.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                raise StoreError(self._explain(e)) from None
        return {"top": top, "groups": groups, "running": running, "watched": rows}

    def notification_counts(self) -> list[tuple[str, str, int]]:
        """(channel, state, messages) from the notifications table; empty until it exists."""
        with self._lock:
            db = self._connect()
            try:
                return db.execute(
                    "SELECT channel, state, COUNT(*) FROM notifications GROUP BY channel, state"
                ).fetchall()
            except sqlite3.OperationalError:  # no such table (yet) or other columns
                return []
            except sqlite3.DatabaseError as e:
                raise StoreError(self._explain(e)) from None

    def last_ended_group_runs(self) -> dict[str, dict[str, Any]]:
        """The newest group run of each group that ran and ended (not running, skipped
        by its overlap policy, or missed)."""
        rows = self._read(
            f"SELECT {', '.join('g.' + f for f in GROUP_FIELDS)} FROM group_runs g JOIN"
            " (SELECT group_name, MAX(id) AS id FROM group_runs WHERE status NOT IN"
            " ('running', 'skipped', 'missed') GROUP BY group_name) last ON g.id = last.id"
        )
        return {r[1]: dict(zip(GROUP_FIELDS, r, strict=True)) for r in rows}

    # ================================================================ distributed (issue 13)
    # A run sent to a Celery worker: its row is written by the caller (start_run, in
    # the caller's batch); the worker claims it, beats, ships its log, records its end.

    def _write_own(self, sql: str, args: tuple) -> int:
        """One statement on rows only this process writes (heartbeats, log chunks): on
        PostgreSQL outside the serialized write lock; returns the rows changed."""
        if self.url is None:
            with self._write() as db:
                return db.execute(sql, args).rowcount
        with self._lock:
            db = self._connect()
            try:
                return db.execute(sql, args).rowcount
            except sqlite3.DatabaseError as e:
                raise StoreError(self._explain(e)) from None

    def claim_run(
        self, run_id: int, host: str, owner: str, started: float, log_path: str | None
    ) -> bool:
        """Take a run sent to workers; False when another delivery has it (or it ended)."""
        return (
            self._write_own(
                "UPDATE runs SET heartbeat = ?, host = ?, owner = ?, started = ?, log_path = ?,"
                " log_state = ? WHERE id = ? AND status = 'running' AND heartbeat IS NULL"
                " AND cancel = 0",
                (
                    started,
                    host,
                    owner,
                    started,
                    log_path,
                    _log_state(log_path),
                    run_id,
                ),
            )
            == 1
        )

    def beat(self, run_ids: list[int], now: float) -> list[int]:
        """Record a heartbeat for these runs; return those to end (cancelled, or no longer
        running because the caller gave them up as lost)."""
        if not run_ids:
            return []
        marks = ",".join("?" * len(run_ids))
        self._write_own(
            f"UPDATE runs SET heartbeat = ? WHERE id IN ({marks}) AND status = 'running'",
            (now, *run_ids),
        )
        rows = self._read(
            f"SELECT id FROM runs WHERE id IN ({marks}) AND (cancel = 1 OR status != 'running')",
            tuple(run_ids),
        )
        return [r[0] for r in rows]

    def ended_or_stale(
        self, run_ids: list[int], lost_after: float, now: float
    ) -> list[dict[str, Any]]:
        """Of these runs, the rows that ended; claimed runs whose heartbeat is older than
        ``lost_after`` are first marked lost."""
        if not run_ids:
            return []
        marks = ",".join("?" * len(run_ids))
        rows = self._read(
            f"SELECT id, status, heartbeat FROM runs WHERE id IN ({marks})", tuple(run_ids)
        )
        stale = [
            r[0] for r in rows if r[1] == "running" and r[2] is not None and r[2] < now - lost_after
        ]
        if stale:
            with self._write() as db:
                db.executemany(
                    "UPDATE runs SET status = 'lost', ended = ?, duration = ? - started,"
                    " detail = ? WHERE id = ? AND status = 'running' AND heartbeat < ?",
                    [
                        (
                            now,
                            now,
                            f"no heartbeat from its worker for {lost_after:g}s",
                            i,
                            now - lost_after,
                        )
                        for i in stale
                    ],
                )
        ended = [r[0] for r in rows if r[1] != "running"] + stale
        if not ended:
            return []
        marks = ",".join("?" * len(ended))
        rows = self._read(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE id IN ({marks})"
            " AND status != 'running'",
            tuple(ended),
        )
        return [dict(zip(RUN_FIELDS, r, strict=True)) for r in rows]

    def cancel_runs(self, run_ids: list[int], status: str, detail: str) -> None:
        """Ask the workers to end these runs; those not claimed yet end here at once."""
        if not run_ids:
            return
        now = time.time()
        marks = ",".join("?" * len(run_ids))
        with self._write() as db:
            db.execute(f"UPDATE runs SET cancel = 1 WHERE id IN ({marks})", tuple(run_ids))
            db.execute(
                f"UPDATE runs SET status = ?, ended = ?, duration = 0, detail = ?"
                f" WHERE id IN ({marks}) AND status = 'running' AND heartbeat IS NULL",
                (status, now, detail, *run_ids),
            )

    def give_up_runs(self, run_ids: list[int], status: str, detail: str) -> None:
        """Record runs still running as ended by the caller (their worker did not answer)."""
        now = time.time()
        with self._write() as db:
            db.executemany(
                "UPDATE runs SET status = ?, ended = ?, duration = ? - started, detail = ?"
                " WHERE id = ? AND status = 'running'",
                [(status, now, now, detail, i) for i in run_ids],
            )

    def add_log_chunk(self, run_id: int, seq: int, data: bytes) -> None:
        self._write_own(
            "INSERT INTO run_logs (run_id, seq, data) VALUES (?, ?, ?)", (run_id, seq, data)
        )

    def log_chunk_sizes(self, run_id: int, after: int = -1) -> list[tuple[int, int]]:
        """(seq, bytes) of a run's log chunks after chunk ``after``: where each one starts."""
        return [
            (r[0], r[1])
            for r in self._read(
                "SELECT seq, length(data) FROM run_logs WHERE run_id = ? AND seq > ? ORDER BY seq",
                (run_id, after),
            )
        ]

    def log_chunk_span(self, run_id: int, first: int, last: int) -> bytes:
        """The bytes of chunks ``first`` to ``last`` of a run's log, joined."""
        rows = self._read(
            "SELECT data FROM run_logs WHERE run_id = ? AND seq >= ? AND seq <= ? ORDER BY seq",
            (run_id, first, last),
        )
        return b"".join(bytes(r[0]) for r in rows)

    # ------------------------------------------------------------ notifications, alerts,
    # watchdog (DESIGN §7).  Used by script_monitor.notify, alerts and watchdog.

    # Called with the ids of the runs and group runs reap_lost marked lost; set by
    # whoever opens the store when notifications are configured.
    on_lost: Any = None

    NOTE_FIELDS = (
        "id, key, event, unit, ref, run_id, channel, title, body, state, attempts, accepted,"
        " created, next_try, sent, last_error, claimed_by, claimed_until"
    )

    def add_notifications(self, rows: list[dict[str, Any]]) -> list[int]:
        """Record messages as pending (once per key); return the ids of the new ones."""
        now = time.time()
        ids = []
        with self._write() as db:
            for r in rows:
                cur = db.execute(
                    "INSERT OR IGNORE INTO notifications (key, event, unit, ref, run_id, channel,"
                    " title, body, state, created, next_try) VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
                    " 'pending', ?, ?)",
                    (
                        r["key"],
                        r["event"],
                        r["unit"],
                        r["ref"],
                        r.get("run_id"),
                        r["channel"],
                        r["title"],
                        r["body"],
                        now,
                        now,
                    ),
                )
                if cur.rowcount == 1:
                    ids.append(int(cur.lastrowid or 0))
        return ids

    def last_unit_event(self, unit: str, events: tuple[str, ...]) -> str | None:
        """The newest of ``events`` recorded for a run unit, if any."""
        marks = ", ".join("?" * len(events))
        rows = self._read(
            f"SELECT event FROM notifications WHERE unit = ? AND event IN ({marks})"
            " ORDER BY id DESC LIMIT 1",
            (unit, *events),
        )
        return rows[0][0] if rows else None

    def due_notifications(self, now: float) -> bool:
        """Whether a pending message may be tried now."""
        rows = self._read(
            "SELECT 1 FROM notifications WHERE state = 'pending' AND next_try <= ? LIMIT 1",
            (now,),
        )
        return bool(rows)

    def claim_notifications(
        self, now: float, lease: float, limit: int = 20, force: bool = False, after: int = 0
    ) -> list[dict[str, Any]]:
        """Take pending messages that are due (with ``force``, all pending ones) for this
        process; a claim held by another live process is left alone.

        The check and the claim are one ``BEGIN IMMEDIATE`` transaction, so two
        processes never take the same message.  Only ids above ``after``: one pass
        tries each message once."""
        cond = "state = 'pending' AND id > ?" + ("" if force else " AND next_try <= ?")
        args: tuple = (after,) if force else (after, now)
        with self._write() as db:
            rows = db.execute(
                f"SELECT {self.NOTE_FIELDS} FROM notifications WHERE {cond} ORDER BY id LIMIT ?",
                (*args, limit * 4),
            ).fetchall()
            fields = [f.strip() for f in self.NOTE_FIELDS.split(",")]
            taken = []
            for row in rows:
                note = dict(zip(fields, row, strict=True))
                holder = note["claimed_by"]
                if holder and (note["claimed_until"] or 0) > now:
                    if holder == self._owner_text:
                        continue  # this process is sending it
                    owner = Owner.parse(holder)
                    if owner is None or not owner.is_gone(self.owner):
                        continue  # another live process is sending it
                same = "claimed_by IS NULL" if holder is None else "claimed_by = ?"
                cur = db.execute(
                    "UPDATE notifications SET claimed_by = ?, claimed_until = ? WHERE id = ?"
                    f" AND state = 'pending' AND {same}",
                    (
                        self._owner_text,
                        now + lease,
                        note["id"],
                        *([] if holder is None else [holder]),
                    ),
                )
                if cur.rowcount == 1:
                    taken.append(note)
                if len(taken) >= limit:
                    break
            return taken

    def finish_attempt(
        self,
        note_id: int,
        state: str,
        accepted: str,
        error: str | None,
        next_try: float,
    ) -> None:
        """Record one delivery attempt of a message this process had claimed."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "UPDATE notifications SET state = ?, accepted = ?, last_error = ?,"
                " attempts = attempts + 1, next_try = ?, sent = CASE WHEN ? = 'sent' THEN ?"
                " ELSE sent END, claimed_by = NULL, claimed_until = NULL"
                " WHERE id = ? AND claimed_by = ?",
                (state, accepted, error, next_try, state, now, note_id, self._owner_text),
            )

    def record_sent(self, rows: list[dict[str, Any]]) -> None:
        """Record messages that were sent at once (``notify-test``), never retried."""
        now = time.time()
        with self._write() as db:
            for r in rows:
                db.execute(
                    "INSERT INTO notifications (key, event, unit, ref, run_id, channel, title,"
                    " body, state, attempts, accepted, created, next_try, sent, last_error)"
                    " VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                    (
                        r["key"],
                        r["event"],
                        r["unit"],
                        r["ref"],
                        r["channel"],
                        r["title"],
                        r["body"],
                        r["state"],
                        r.get("accepted", ""),
                        now,
                        now,
                        now if r["state"] == "sent" else None,
                        r.get("last_error"),
                    ),
                )

    def notifications(self, limit: int = 20) -> list[dict[str, Any]]:
        """Recorded messages, newest first."""
        fields = [f.strip() for f in self.NOTE_FIELDS.split(",")]
        rows = self._read(
            f"SELECT {self.NOTE_FIELDS} FROM notifications ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [dict(zip(fields, r, strict=True)) for r in rows]

    ALERT_FIELDS = (
        "id",
        "run_id",
        "script",
        "line_number",
        "line",
        "severity",
        "pattern",
        "fail",
        "created",
    )

    def add_alert_matches(
        self, run_id: int, script: str, matches: list[tuple], dropped: int
    ) -> None:
        """Record a run's output alerts: (line_number, line, severity, pattern, fail) each."""
        now = time.time()
        with self._write() as db:
            db.executemany(
                "INSERT INTO alert_matches (run_id, script, line_number, line, severity,"
                " pattern, fail, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, script, *m[:4], int(m[4]), now) for m in matches],
            )
            if dropped:
                db.execute(
                    "INSERT OR REPLACE INTO alert_overflow (run_id, dropped) VALUES (?, ?)",
                    (run_id, dropped),
                )

    def alert_matches(
        self, script: str | None = None, limit: int = 20, run_ids: list[int] | None = None
    ) -> list[dict[str, Any]]:
        """Output alerts, newest first: of one script, of some runs, or all."""
        where: list[str] = []
        args: list[Any] = []
        if script is not None:
            where.append("script = ?")
            args.append(script)
        if run_ids is not None:
            where.append(f"run_id IN ({', '.join('?' * len(run_ids))})")
            args += run_ids
        cond = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {', '.join(self.ALERT_FIELDS)} FROM alert_matches{cond}"
            " ORDER BY id DESC LIMIT ?",
            (*args, limit),
        )
        return [dict(zip(self.ALERT_FIELDS, r, strict=True)) for r in rows]

    def first_alerts(self, run_ids: list[int], per_run: int) -> tuple[list[dict], dict]:
        """The first ``per_run`` matches of each run, and how many each run had in all
        (those beyond the recorded ones included)."""
        marks = ", ".join("?" * len(run_ids))
        rows = self._read(
            f"SELECT {', '.join(self.ALERT_FIELDS)} FROM (SELECT *, ROW_NUMBER() OVER"
            " (PARTITION BY run_id ORDER BY id) AS n FROM alert_matches"
            f" WHERE run_id IN ({marks})) WHERE n <= ? ORDER BY id",
            (*run_ids, per_run),
        )
        counts: dict[int, int] = dict(
            (r[0], r[1])
            for r in self._read(
                f"SELECT run_id, COUNT(*) FROM alert_matches WHERE run_id IN ({marks})"
                " GROUP BY run_id",
                tuple(run_ids),
            )
        )
        for rid, dropped in self.alerts_dropped(run_ids).items():
            counts[rid] = counts.get(rid, 0) + dropped
        return [dict(zip(self.ALERT_FIELDS, r, strict=True)) for r in rows], counts

    def alerts_dropped(self, run_ids: list[int]) -> dict[int, int]:
        """How many matches beyond the recorded ones each run had."""
        if not run_ids:
            return {}
        rows = self._read(
            f"SELECT run_id, dropped FROM alert_overflow WHERE run_id IN"
            f" ({', '.join('?' * len(run_ids))})",
            tuple(run_ids),
        )
        return {r[0]: r[1] for r in rows}

    def watch_position(self, group: str, schedule: str, floor: float) -> float | None:
        """Where the watchdog's search for missed ticks of a group starts; None the first
        time (or after the schedule changed), when the position is set to ``floor``."""
        with self._write() as db:
            row = db.execute(
                "SELECT schedule, position FROM watch_positions WHERE group_name = ?", (group,)
            ).fetchone()
            if row is not None and row[0] == schedule:
                return row[1]
            db.execute(
                "INSERT OR REPLACE INTO watch_positions (group_name, schedule, position)"
                " VALUES (?, ?, ?)",
                (group, schedule, floor),
            )
            return None

    def advance_watch(self, group: str, schedule: str, old: float, new: float) -> bool:
        """Move a group's position from ``old`` to ``new``; False if another checker did."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE watch_positions SET position = ? WHERE group_name = ? AND schedule = ?"
                " AND position = ?",
                (new, group, schedule, old),
            )
            return cur.rowcount == 1

    def scheduled_starts(self, group: str, since: float, until: float) -> list[float]:
        """Start times of the group's runs with trigger ``schedule`` in [since, until]."""
        rows = self._read(
            "SELECT started FROM group_runs WHERE group_name = ? AND trigger = 'schedule'"
            " AND started BETWEEN ? AND ? ORDER BY started",
            (group, since, until),
        )
        return [r[0] for r in rows]

    def add_watch_event(self, key: str, kind: str, subject: str, detail: str) -> bool:
        """Record a watchdog finding once; True when it is new."""
        with self._write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO watch_events (key, kind, subject, detail, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, kind, subject, detail, time.time()),
            )
            return cur.rowcount == 1

    def watch_events(self, limit: int = 20) -> list[dict[str, Any]]:
        fields = ("key", "kind", "subject", "detail", "created")
        rows = self._read(
            f"SELECT {', '.join(fields)} FROM watch_events ORDER BY created DESC LIMIT ?",
            (limit,),
        )
        return [dict(zip(fields, r, strict=True)) for r in rows]

    def running_units(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The runs and the group runs recorded as running."""
        runs = self._read(f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE status = 'running'")
        groups = self._read(
            f"SELECT {', '.join(GROUP_FIELDS)} FROM group_runs WHERE status = 'running'"
        )
        return (
            [dict(zip(RUN_FIELDS, r, strict=True)) for r in runs],
            [dict(zip(GROUP_FIELDS, r, strict=True)) for r in groups],
        )

    # Other watchdog marks share watch_positions under names no group can have.
    def watch_state(self, name: str) -> float | None:
        rows = self._read(
            "SELECT position FROM watch_positions WHERE group_name = ?", (":" + name,)
        )
        return rows[0][0] if rows else None

    def set_watch_state(self, name: str, value: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO watch_positions (group_name, schedule, position)"
                " VALUES (?, '', ?)",
                (":" + name, value),
            )
