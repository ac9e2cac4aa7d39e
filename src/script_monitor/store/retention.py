"""Retention: old finished runs and what hangs off them leave the history.

A run is deleted when it ended, started before the cutoff, and is not among the
newest ``keep`` runs of its script (group runs alike, per group; a group run is
kept while any of its runs is).  Deletion goes in small transactions, so a
concurrent ``run-group`` never waits long for the writer lock, and an interrupted
prune loses nothing it should keep: each batch re-checks every condition.  Before
anything is deleted the kept totals (``Totals.roll``) are brought up to the first
run still running, so ``/metrics`` counters do not go down.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..states import LogState, MessageState, RunStatus
from .audit import prune_audit
from .core import Core, Tx
from .logs import drop_chunks
from .reads import _distinct
from .records import PruneReport
from .totals import Totals

_RUNNING = RunStatus.RUNNING.value


def _marks(ids: list[int]) -> str:
    return ",".join("?" * len(ids))


class Retention:
    """Deleting what is older than the retention period."""

    def __init__(self, core: Core, totals: Totals):
        self.core = core
        self.totals = totals

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        """One of the prune's transactions: its commit does not wait for the disk, so
        the runs recorded meanwhile do not wait behind the log it writes (PostgreSQL)."""
        with self.core.write() as tx:
            if tx.dialect.lazy_commit:
                tx.execute(tx.dialect.lazy_commit)
            yield tx

    def prune(
        self,
        cutoff: float,
        keep: int,
        dry_run: bool = False,
        batch: int | None = None,
        remove: Callable[[list[str]], None] | None = None,
    ) -> PruneReport:
        """Delete (with ``dry_run``, count) what ended before ``cutoff`` beyond the newest
        ``keep`` of each script and group, ``batch`` rows a transaction (default 200 on
        SQLite, whose one writer lock each batch holds; 2 000 on PostgreSQL, where only
        the deleted rows are locked); ``remove`` is given the log files of deleted runs
        once their rows are gone."""
        if batch is None:  # SQLite's one writer lock is held per batch: keep it short
            batch = 2000 if self.core.shared else 200
        report = PruneReport(cutoff=cutoff)
        upto = self._roll()
        for script in self._names("runs", "script"):
            self._runs(report, script, cutoff, keep, upto, dry_run, batch, remove)
        for group in self._names("group_runs", "group_name"):
            self._group_runs(report, group, cutoff, keep, dry_run, batch)
        report.messages = self._old(
            "notifications", f"state != '{MessageState.PENDING}' AND created < ?", cutoff,
            dry_run, batch,
        )  # fmt: skip
        report.watch_events = self._old(
            "watch_events", "created < ?", cutoff, dry_run, batch, key="key"
        )
        report.audit = self._audit(cutoff, dry_run, batch)
        report.pings = self._old("check_pings", "at < ?", cutoff, dry_run, batch)
        return report

    def _audit(self, cutoff: float, dry_run: bool, batch: int) -> int:
        if dry_run:
            return self.core.read("SELECT COUNT(*) FROM audit WHERE at < ?", (cutoff,))[0][0]
        done = 0
        while True:
            self.core.let_others_write()
            with self._write() as tx:
                n = prune_audit(tx, cutoff, batch)
            done += n
            if n < batch:
                return done

    def _roll(self) -> int:
        """Roll the kept totals forward as far as they go; return their id."""
        while True:
            self.core.let_others_write()
            with self._write() as tx:
                before = self.totals.upto(tx)
                after = self.totals.roll(tx)
            if after == before:
                return after

    def _names(self, table: str, column: str) -> list[str]:
        rows = self.core.read(_distinct(table, column) + " SELECT name FROM names")
        return [r[0] for r in rows if r[0] is not None]

    def _boundary(self, table: str, column: str, name: str, keep: int) -> int | None:
        """The id of the ``keep``-th newest row of a script or group (None: fewer rows)."""
        if keep <= 0:
            return 1 << 62
        rows = self.core.read(
            f"SELECT id FROM {table} WHERE {column} = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
            (name, keep - 1),
        )
        return rows[0][0] if rows else None

    def _runs(
        self,
        report: PruneReport,
        script: str,
        cutoff: float,
        keep: int,
        upto: int,
        dry_run: bool,
        batch: int,
        remove: Callable[[list[str]], None] | None,
    ) -> None:
        bound = self._boundary("runs", "script", script, keep)
        if bound is None:
            return
        cond = f"script = ? AND id < ? AND id <= ? AND started < ? AND status != '{_RUNNING}'"
        args = (script, bound, upto, cutoff)
        if dry_run:
            report.runs += self.core.read(f"SELECT COUNT(*) FROM runs WHERE {cond}", args)[0][0]
            return
        while True:
            self.core.let_others_write()
            with self._write() as tx:
                rows = tx.all(
                    f"SELECT id, log_state, log_path FROM runs WHERE {cond} ORDER BY id LIMIT ?",
                    (*args, batch),
                )
                if not rows:
                    return
                ids = [r[0] for r in rows]
                marks = _marks(ids)
                tx.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
                tx.execute(f"DELETE FROM alert_matches WHERE run_id IN ({marks})", ids)
                tx.execute(f"DELETE FROM alert_overflow WHERE run_id IN ({marks})", ids)
                drop_chunks(tx, ids)
            report.runs += len(ids)
            logs = [r[2] for r in rows if r[1] == LogState.OK and r[2]]
            if logs and remove is not None:
                remove(logs)
                report.logs += len(logs)
            if len(rows) < batch:
                return

    def _group_runs(
        self, report: PruneReport, group: str, cutoff: float, keep: int, dry_run: bool, batch: int
    ) -> None:
        bound = self._boundary("group_runs", "group_name", group, keep)
        if bound is None:
            return
        cond = (
            f"group_name = ? AND id < ? AND started < ? AND status != '{_RUNNING}'"
            " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.group_run_id = group_runs.id)"
        )
        args = (group, bound, cutoff)
        if dry_run:
            found = self.core.read(f"SELECT COUNT(*) FROM group_runs WHERE {cond}", args)
            report.group_runs += found[0][0]
            return
        while True:
            self.core.let_others_write()
            with self._write() as tx:
                ids = [
                    r[0]
                    for r in tx.all(
                        f"SELECT id FROM group_runs WHERE {cond} ORDER BY id LIMIT ?",
                        (*args, batch),
                    )
                ]
                if ids:
                    tx.execute(f"DELETE FROM group_runs WHERE id IN ({_marks(ids)})", ids)
            report.group_runs += len(ids)
            if len(ids) < batch:
                return

    def _old(
        self, table: str, cond: str, cutoff: float, dry_run: bool, batch: int, key: str = "id"
    ) -> int:
        """Delete rows of a table matching ``cond`` (with the cutoff), a batch at a time."""
        if dry_run:
            return self.core.read(f"SELECT COUNT(*) FROM {table} WHERE {cond}", (cutoff,))[0][0]
        done = 0
        while True:
            self.core.let_others_write()
            with self._write() as tx:
                keys = [
                    r[0]
                    for r in tx.all(
                        f"SELECT {key} FROM {table} WHERE {cond} LIMIT ?", (cutoff, batch)
                    )
                ]
                if keys:
                    tx.execute(f"DELETE FROM {table} WHERE {key} IN ({_marks(keys)})", keys)
            done += len(keys)
            if len(keys) < batch:
                return done


def cutoff_for(days: float, now: float | None = None) -> float:
    """The start time before which runs are old after ``days`` of retention."""
    return (now or time.time()) - days * 86400
