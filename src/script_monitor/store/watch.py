"""The watchdog's state: how far it has looked for missed ticks, and what it found."""

from __future__ import annotations

import time

from ..states import GroupStatus, RunStatus
from .core import Core, Tx
from .records import GroupRun, Run, WatchEvent

_SCHEDULE = "schedule"  # the trigger of scheduled group runs


class Watch:
    """The ``watch_positions`` and ``watch_events`` tables."""

    def __init__(self, core: Core):
        self.core = core

    def position(self, group: str, schedule: str, floor: float) -> float | None:
        """Where the watchdog's search for missed ticks of a group starts; None the first
        time (or after the schedule changed), when the position is set to ``floor``."""
        with self.core.write() as tx:
            row = tx.one(
                "SELECT schedule, position FROM watch_positions WHERE group_name = ?", (group,)
            )
            if row is not None and row[0] == schedule:
                return row[1]
            self._put(tx, group, schedule, floor)
            return None

    @staticmethod
    def _put(tx: Tx, key: str, schedule: str, value: float) -> None:
        tx.execute(
            "INSERT INTO watch_positions (group_name, schedule, position) VALUES (?, ?, ?)"
            " ON CONFLICT (group_name) DO UPDATE SET schedule = excluded.schedule,"
            " position = excluded.position",
            (key, schedule, value),
        )

    def advance(self, group: str, schedule: str, old: float, new: float) -> bool:
        """Move a group's position from ``old`` to ``new``; False if another checker did."""
        with self.core.write() as tx:
            cur = tx.execute(
                "UPDATE watch_positions SET position = ? WHERE group_name = ? AND schedule = ?"
                " AND position = ?",
                (new, group, schedule, old),
            )
            return cur.rowcount == 1

    def scheduled_starts(self, group: str, since: float, until: float) -> list[float]:
        """Start times of the group's runs with trigger ``schedule`` in [since, until]."""
        rows = self.core.read(
            "SELECT started FROM group_runs WHERE group_name = ? AND trigger = ?"
            " AND started BETWEEN ? AND ? ORDER BY started",
            (group, _SCHEDULE, since, until),
        )
        return [r[0] for r in rows]

    def add_event(self, key: str, kind: str, subject: str, detail: str) -> bool:
        """Record a watchdog finding once; True when it is new."""
        with self.core.write() as tx:
            new = tx.execute(
                "INSERT INTO watch_events (key, kind, subject, detail, created)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, kind, subject, detail, time.time()),
            )
            return new.rowcount == 1

    def events(self, limit: int = 50) -> list[WatchEvent]:
        """The watchdog's recorded findings, newest first."""
        rows = self.core.read(
            f"SELECT {WatchEvent.COLUMNS} FROM watch_events ORDER BY created DESC LIMIT ?",
            (limit,),
        )
        return [WatchEvent.from_row(r) for r in rows]

    def running_units(self) -> tuple[list[Run], list[GroupRun]]:
        """The runs and the group runs recorded as running."""
        # Literal statuses, so that the partial indexes on running rows are used.
        runs = self.core.read(
            f"SELECT {Run.COLUMNS} FROM runs WHERE status = '{RunStatus.RUNNING}'"
        )
        groups = self.core.read(
            f"SELECT {GroupRun.COLUMNS} FROM group_runs WHERE status = '{GroupStatus.RUNNING}'"
        )
        return [Run.from_row(r) for r in runs], [GroupRun.from_row(r) for r in groups]

    # Other watchdog marks share watch_positions under names no group can have.
    def state(self, name: str) -> float | None:
        rows = self.core.read(
            "SELECT position FROM watch_positions WHERE group_name = ?", (":" + name,)
        )
        return rows[0][0] if rows else None

    def set_state(self, name: str, value: float) -> None:
        with self.core.write() as tx:
            self._put(tx, ":" + name, "", value)
