"""Runs and group runs: recording them, rotating their logs, and reading them back."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..states import GroupStatus, LogState, RunStatus
from .core import Core, Tx
from .logs import drop_chunks
from .owner import Owner
from .records import GroupRun, Run, RunEnd

if TYPE_CHECKING:
    from ..anomaly import Band

_RUN = Run.COLUMNS
_RUNNING = RunStatus.RUNNING.value
_SKIPPED = RunStatus.SKIPPED.value
_SUCCESS = RunStatus.SUCCESS.value
# A script's newest successful durations: read from the runs_success index alone.
_DURATIONS = (
    f"SELECT duration FROM runs WHERE script = ? AND status = '{_SUCCESS}' AND id < ?"
    " ORDER BY id DESC LIMIT ?"
)
_GROUP = GroupRun.COLUMNS
# A run's log is still on disk, and the run has ended.
_DIED = "the script-monitor process recording this run died"
WORKER_LOST = "its worker was lost"  # a run a worker had claimed (claims.py)
ORPHAN_GRACE = 300.0  # seconds a group run's lease may be out before any command reaps it
_LOG_KEPT = f"log_state = '{LogState.OK}' AND status != '{RunStatus.RUNNING}'"


def log_state(log_path: str | None) -> LogState:
    return LogState.OK if log_path else LogState.NONE


class Runs:
    """The ``runs`` and ``group_runs`` tables."""

    def __init__(self, core: Core):
        self.core = core
        # Called with the ids of the runs and group runs reap_lost marked lost; set by
        # whoever opens the store when notifications are configured.
        self.on_lost: Callable[[list[int], list[int]], None] | None = None

    # ------------------------------------------------------------ writes

    def start_group(self, group: str, trigger: str, now: float | None = None) -> int:
        """Record a group run as running; return its id."""
        with self.core.write() as tx:
            new = tx.insert(
                "INSERT INTO group_runs (group_name, trigger, status, started, owner)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    group,
                    trigger,
                    GroupStatus.RUNNING.value,
                    now or time.time(),
                    self.core.owner_text,
                ),
            )
        assert new is not None
        return new

    def finish_group(
        self, group_run_id: int, status: GroupStatus | str, detail: str | None = None
    ) -> None:
        with self.core.write() as tx:
            tx.execute(
                "UPDATE group_runs SET status = ?, ended = ?, detail = ? WHERE id = ?",
                (str(status), time.time(), detail, group_run_id),
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
        core = self.core
        with core.write() as tx:
            new = tx.insert(
                "INSERT INTO runs (script, group_run_id, group_name, trigger, status, started,"
                " owner, log_path, log_state, attempt, host)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    script,
                    group_run_id,
                    group,
                    trigger,
                    _RUNNING,
                    started,
                    core.owner_text,
                    log_path,
                    LogState.OK.value if log_path else LogState.NONE.value,
                    attempt,
                    core.owner.host,
                ),
            )
        assert new is not None
        return new

    def finish_run(self, run_id: int, end: RunEnd) -> list[str]:
        """Record the end of a run; with ``end.expire`` rotate the script's logs in the
        same commit, and return the log paths to delete."""
        with self.core.write() as tx:
            tx.execute(
                f"UPDATE runs SET {RunEnd.SET}, log_state = COALESCE(?, log_state) WHERE id = ?",
                (*end.values(), end.log_state_text, run_id),
            )
            return _expire(tx, *end.expire) if end.expire is not None else []

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
        core = self.core
        with core.write() as tx:
            tx.executemany(
                "INSERT INTO runs (script, group_run_id, group_name, trigger, status, started,"
                " ended, duration, owner, detail, host)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                [
                    (
                        s,
                        group_run_id,
                        group,
                        trigger,
                        RunStatus.SKIPPED.value,
                        now,
                        now,
                        core.owner_text,
                        detail,
                        core.owner.host,
                    )
                    for s in scripts
                ],
            )

    def expire_logs(self, script: str, keep: int | None, before: float | None) -> list[str]:
        """Mark logs beyond a count limit or older than ``before`` rotated; return their paths."""
        with self.core.write() as tx:
            return _expire(tx, script, keep, before)

    def mark_logs_cleared(self, script: str | None) -> list[str]:
        """Mark every finished run's log (of one script, or all) as cleared; return paths."""
        cond = _LOG_KEPT
        args: tuple = ()
        if script is not None:
            cond += " AND script = ?"
            args = (script,)
        with self.core.write() as tx:
            rows = tx.all(f"SELECT id, log_path FROM runs WHERE {cond}", args)
            tx.execute(
                f"UPDATE runs SET log_state = ? WHERE {cond}", (LogState.CLEARED.value, *args)
            )
            drop_chunks(tx, [r[0] for r in rows])
        return [r[1] for r in rows if r[1]]

    def reap_lost(self) -> int:
        """Mark runs whose owning process is gone as ``lost``; return how many."""
        running = RunStatus.RUNNING.value
        # A group run held through a lease (sent to workers) belongs to whoever holds or
        # adopts its lease, and so do the runs it sent that no worker has claimed yet:
        # a leading scheduler carries them on (docs/DISTRIBUTED.md).  Only when nobody
        # has for ORPHAN_GRACE seconds are they reaped like the others.
        leased = f"lease_holder IS NOT NULL AND lease_until >= {self.core.dialect.now} - ?"
        rows = self.core.read(  # literal statuses: the partial indexes on running rows
            f"SELECT CASE WHEN heartbeat IS NULL THEN 'r' ELSE 'w' END, id, owner FROM runs"
            f" WHERE status = '{running}' AND NOT ("
            f"heartbeat IS NULL AND group_run_id IN (SELECT id FROM group_runs"
            f" WHERE status = '{running}' AND {leased})) UNION ALL "
            f"SELECT 'g', id, owner FROM group_runs WHERE status = '{running}' AND NOT ({leased})",
            (ORPHAN_GRACE, ORPHAN_GRACE),
        )
        me = self.core.owner
        lost: dict[str, list[tuple]] = {"r": [], "w": [], "g": []}
        for kind, rid, owner_text in rows:
            owner = Owner.parse(owner_text)
            if owner is not None and owner.is_gone(me):
                lost[kind].append((time.time(), rid))
        if not lost["r"] and not lost["w"] and not lost["g"]:
            return 0
        with self.core.write() as tx:
            tx.executemany(
                "UPDATE runs SET status = ?, ended = ?, detail = ? WHERE id = ? AND status = ?",
                [(RunStatus.LOST.value, t, _DIED, i, running) for t, i in lost["r"]]
                + [(RunStatus.LOST.value, t, WORKER_LOST, i, running) for t, i in lost["w"]],
            )
            tx.executemany(
                "UPDATE group_runs SET status = ?, ended = ? WHERE id = ? AND status = ?",
                [(GroupStatus.LOST.value, t, i, running) for t, i in lost["g"]],
            )
        runs = [r for _, r in lost["r"] + lost["w"]]
        if self.on_lost is not None:  # notifications: a lost run is a failure
            self.on_lost(runs, [g for _, g in lost["g"]])
        return len(runs)

    # ------------------------------------------------------------ queries

    def duration_band(
        self,
        script: str,
        window: int = 50,
        min_runs: int = 10,
        slow: float = 3.0,
        fast: float = 0.2,
        before: int | None = None,
    ) -> Band | None:
        """The band of the script's usual durations: the median of its last ``window``
        successful runs (before the run id ``before``), or None while fewer than
        ``min_runs`` exist (docs/MONITORING.md).  One range of the runs_success index."""
        from ..anomaly import duration_band  # statistics: not on every command's path

        rows = self.core.read(_DURATIONS, (script, before or 2**62, window))
        return duration_band((r[0] for r in rows), slow=slow, fast=fast, min_runs=min_runs)

    def run(self, run_id: int) -> Run | None:
        rows = self.core.read(f"SELECT {_RUN} FROM runs WHERE id = ?", (run_id,))
        return Run.from_row(rows[0]) if rows else None

    def history(self, script: str, limit: int | None = None) -> list[Run]:
        """The script's runs, newest first."""
        sql = f"SELECT {_RUN} FROM runs WHERE script = ? ORDER BY id DESC"
        if limit is None:
            rows = self.core.read(sql, (script,))
        else:
            rows = self.core.read(sql + " LIMIT ?", (script, limit))
        return [Run.from_row(r) for r in rows]

    def latest_run(self, script: str, with_log: bool = False) -> Run | None:
        """The script's newest run (with ``with_log``, the newest that was started)."""
        cond = " AND status != ?" if with_log else ""
        args = (script, RunStatus.SKIPPED.value) if with_log else (script,)
        rows = self.core.read(
            f"SELECT {_RUN} FROM runs WHERE script = ?{cond} ORDER BY id DESC LIMIT 1", args
        )
        return Run.from_row(rows[0]) if rows else None

    def group_run(self, group_run_id: int) -> GroupRun | None:
        rows = self.core.read(f"SELECT {_GROUP} FROM group_runs WHERE id = ?", (group_run_id,))
        return GroupRun.from_row(rows[0]) if rows else None

    def group_history(self, group: str, limit: int = 20) -> list[GroupRun]:
        """The group's runs, newest first."""
        rows = self.core.read(
            f"SELECT {_GROUP} FROM group_runs WHERE group_name = ? ORDER BY id DESC LIMIT ?",
            (group, limit),
        )
        return [GroupRun.from_row(r) for r in rows]

    def runs_of_group_run(self, group_run_id: int) -> list[Run]:
        rows = self.core.read(
            f"SELECT {_RUN} FROM runs WHERE group_run_id = ? ORDER BY id", (group_run_id,)
        )
        return [Run.from_row(r) for r in rows]


def _expire(tx: Tx, script: str, keep: int | None, before: float | None) -> list[str]:
    """Mark a script's logs beyond ``keep`` or started before ``before`` rotated."""
    where = f"script = ? AND {_LOG_KEPT}"
    if keep is not None:
        # Only runs that still have a log are read, through the runs_logs index.
        chosen = (
            f"SELECT id FROM runs WHERE {where} ORDER BY id DESC {tx.dialect.no_limit} OFFSET ?"
        )
        args: tuple[Any, ...] = (script, keep)
    else:
        chosen = f"SELECT id FROM runs WHERE {where} AND started < ?"
        args = (script, before)
    if tx.dialect.skip_locked:  # PostgreSQL: lock them first, leave those another holds
        # (two processes rotating one script's logs neither wait nor deadlock: an UPDATE
        # alone locks rows in whatever order it meets them)
        chosen = (
            f"SELECT id FROM runs WHERE id IN ({chosen}) AND {_LOG_KEPT}{tx.dialect.skip_locked}"
        )
    rows = tx.all(  # one statement marks them and gives their paths
        f"UPDATE runs SET log_state = ? WHERE id IN ({chosen}) RETURNING id, log_path",
        (LogState.ROTATED.value, *args),
    )
    if rows:
        drop_chunks(tx, [r[0] for r in rows])
        rows.sort(reverse=True)  # newest first, as they were chosen
    return [r[1] for r in rows if r[1]]
