"""Read models: what ``list``, ``status``, the dashboard and ``/metrics`` show.

Every query here stays fast with ten million runs: distinct scripts and groups are
walked through their indexes (one probe each, not a scan of every row), and running
or ended rows are found through partial indexes, whose conditions are written as
literals so that both planners use them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..states import GroupStatus, RunStatus
from .core import Core
from .records import GroupRun, Run, RunSummary

_RUNNING = RunStatus.RUNNING.value
_SKIPPED = RunStatus.SKIPPED.value
_WORD = re.compile(r"[a-z_]+")  # a trigger, written into SQL as a literal
_CHUNK = 500  # scripts per query: well under either backend's limit on parameters
# Group runs that ran and ended (the condition of the group_runs_ended index).
_ENDED = f"status NOT IN ('{GroupStatus.RUNNING}', '{GroupStatus.SKIPPED}', '{GroupStatus.MISSED}')"


def _distinct(table: str, column: str) -> str:
    """A recursive CTE ``names(name)`` of the column's distinct values, one index probe
    each (a skip scan)."""
    return (
        f"WITH RECURSIVE names(name) AS (SELECT MIN({column}) FROM {table} UNION ALL"
        f" SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > names.name) FROM names"
        " WHERE names.name IS NOT NULL)"
    )


def _prefixed(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


class Reads:
    """Queries across scripts and groups."""

    def __init__(self, core: Core):
        self.core = core

    def last_runs(self, scripts: Iterable[str] | None = None) -> dict[str, Run]:
        """The newest non-skipped run of every script that has one; of ``scripts`` only
        when given (one index probe per name, without walking every distinct name)."""
        newest = (
            f" SELECT {_prefixed(Run.COLUMNS, 'r')} FROM names JOIN runs r ON r.id ="
            " (SELECT id FROM runs x WHERE x.script = names.name AND x.status != ?"
            " ORDER BY x.id DESC LIMIT 1)"
        )
        if scripts is None:
            rows = self.core.read(_distinct("runs", "script") + newest, (_SKIPPED,))
        elif self.core.dialect.arrays:  # one query, the newest row read where it is found
            names = list(scripts)
            arg: list[str] | str
            if any("," in n for n in names):
                given, arg = "?::text[]", names
            else:  # one text, split by the server: an array of thousands costs ms to send
                given, arg = "string_to_array(?, ',')", ",".join(names)
            rows = self.core.read(
                f"SELECT {_prefixed(Run.COLUMNS, 'r')} FROM unnest({given}) AS names(name)"
                f" CROSS JOIN LATERAL (SELECT {Run.COLUMNS} FROM runs x WHERE"
                " x.script = names.name AND x.status != ? ORDER BY x.id DESC LIMIT 1) r",
                (arg, _SKIPPED),
            )
        else:
            names, rows = list(scripts), []
            for i in range(0, len(names), _CHUNK):
                part = names[i : i + _CHUNK]
                values = ", ".join(["(?)"] * len(part))
                rows += self.core.read(
                    f"WITH names(name) AS (VALUES {values})" + newest, (*part, _SKIPPED)
                )
        return {r[1]: Run.from_row(r) for r in rows}

    def runs_after(self, after_id: int, ids: list[int]) -> tuple[int, list[Run], list[Run]]:
        """What keeps a copy of ``last_runs`` up to date, in one snapshot: the highest
        run id, the runs above ``after_id`` that were not skipped (oldest first), and the
        rows of ``ids`` (runs that were running, which may have ended since)."""
        with self.core.snapshot() as tx:
            top = tx.one("SELECT COALESCE(MAX(id), 0) FROM runs")[0]
            new = tx.all(
                f"SELECT {Run.COLUMNS} FROM runs WHERE id > ? AND id <= ? AND status != ?"
                " ORDER BY id",
                (after_id, top, _SKIPPED),
            )
            rows: list[Any] = []
            for i in range(0, len(ids), _CHUNK):
                part = ids[i : i + _CHUNK]
                rows += tx.all(
                    f"SELECT {Run.COLUMNS} FROM runs WHERE id IN ({', '.join('?' * len(part))})",
                    part,
                )
        return int(top), [Run.from_row(r) for r in new], [Run.from_row(r) for r in rows]

    def last_group_runs(self) -> dict[str, GroupRun]:
        """The newest group run (or recorded tick) of every group."""
        rows = self.core.read(
            _distinct("group_runs", "group_name")
            + f" SELECT {_prefixed(GroupRun.COLUMNS, 'g')} FROM names JOIN group_runs g"
            " ON g.id = (SELECT MAX(id) FROM group_runs x WHERE x.group_name = names.name)"
        )
        return {r[1]: GroupRun.from_row(r) for r in rows}

    def last_ended_group_runs(self, trigger: str | None = None) -> dict[str, GroupRun]:
        """Per group, its newest group run that ran and ended (not running, skipped by its
        overlap policy, or missed); with ``trigger``, of that trigger only.

        The trigger is written as a literal, so that a partial index on it (scheduled
        group runs: ``group_runs_scheduled_ended``) can be used: a group never run by
        that trigger is then one probe, not a read of its whole history.
        """
        cond = ""
        if trigger is not None:
            if not _WORD.fullmatch(trigger):
                raise ValueError(f"not a trigger: {trigger!r}")
            cond = f" AND x.trigger = '{trigger}'"
        rows = self.core.read(
            _distinct("group_runs", "group_name")
            + f" SELECT {_prefixed(GroupRun.COLUMNS, 'g')} FROM names JOIN group_runs g"
            " ON g.id = (SELECT x.id FROM group_runs x WHERE x.group_name = names.name"
            f" AND x.{_ENDED}{cond} ORDER BY x.id DESC LIMIT 1)"
        )
        return {r[1]: GroupRun.from_row(r) for r in rows}

    def running_runs(self) -> list[Run]:
        """Every run still recorded as running, oldest first."""
        rows = self.core.read(
            f"SELECT {Run.COLUMNS} FROM runs WHERE status = '{_RUNNING}' ORDER BY id"
        )
        return [Run.from_row(r) for r in rows]

    def recent_runs(self, statuses: list[RunStatus], since: float, limit: int) -> list[Run]:
        """Runs with one of ``statuses`` started at ``since`` or later, newest first.

        Walks back from the newest run in pages and stops at the first one started
        before ``since`` (ids grow with start times), so only that window is read.
        """
        wanted = {str(s) for s in statuses}
        out: list[Run] = []
        below: int | None = None
        page = 500
        while len(out) < limit:
            cond, args = ("", ()) if below is None else (" WHERE id < ?", (below,))
            rows = self.core.read(
                f"SELECT {Run.COLUMNS} FROM runs{cond} ORDER BY id DESC LIMIT {page}", args
            )
            for row in rows:
                if row[6] < since:
                    return out
                if row[5] in wanted:
                    out.append(Run.from_row(row))
                    if len(out) >= limit:
                        return out
            if len(rows) < page:
                return out
            below = rows[-1][0]
            page = min(page * 4, 20_000)
        return out

    def latest_runs_by_script(
        self, scripts: list[str], per_script: int
    ) -> dict[str, list[RunSummary]]:
        """The newest ``per_script`` runs of each script (id, status, started, duration).

        One query per 500 scripts, not one per script: for each, the id of its
        ``per_script``-th newest run, then its runs from there on (two probes of the
        ``runs_script`` index).
        """
        rows = self._newest(
            "runs", "script", "r.id, r.status, r.started, r.duration", scripts, per_script
        )
        return {
            s: [RunSummary(r[1], RunStatus(r[2]), r[3], r[4]) for r in found]
            for s, found in rows.items()
        }

    def latest_group_runs(self, groups: list[str], per_group: int) -> dict[str, list[GroupRun]]:
        """The newest ``per_group`` group runs of each group, newest first (one query per
        500 groups, as ``latest_runs_by_script``)."""
        rows = self._newest(
            "group_runs", "group_name", _prefixed(GroupRun.COLUMNS, "g"), groups, per_group
        )
        return {g: [GroupRun.from_row(r[1:]) for r in found] for g, found in rows.items()}

    def _newest(
        self, table: str, key: str, columns: str, names: list[str], per_name: int
    ) -> dict[str, list[Any]]:
        """The newest ``per_name`` rows of each name, newest first, as (name, columns...):
        one query per 500 names — for each, the id of its ``per_name``-th newest row,
        then its rows from there on (two probes of its ``(key, id)`` index)."""
        out: dict[str, list[Any]] = {n: [] for n in names}
        if per_name <= 0:
            return out
        alias = "r" if table == "runs" else "g"
        order = list(out)
        with self.core.snapshot() as tx:
            for i in range(0, len(order), _CHUNK):
                part = order[i : i + _CHUNK]
                rows = tx.all(
                    f"WITH names(name) AS (VALUES {', '.join(['(?)'] * len(part))})"
                    f" SELECT {alias}.{key}, {columns} FROM names JOIN {table} {alias}"
                    f" ON {alias}.{key} = names.name AND {alias}.id >= COALESCE((SELECT x.id"
                    f" FROM {table} x WHERE x.{key} = names.name ORDER BY x.id DESC"
                    f" LIMIT 1 OFFSET {int(per_name) - 1}), 0)"
                    f" ORDER BY {alias}.{key}, {alias}.id DESC",
                    part,
                )
                for r in rows:
                    out[r[0]].append(r)
        return out

    def data_version(self) -> tuple[Any, int]:
        """A value that changes whenever anyone commits to the history, this process included."""
        core = self.core
        with core.snapshot() as tx:
            if core.shared:  # moves with every write to the cluster
                version = tx.one("SELECT pg_current_wal_lsn()::text")[0]
            else:
                version = tx.one("PRAGMA data_version")[0]
            return version, tx.db.total_changes
