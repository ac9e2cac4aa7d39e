"""Output alerts: the lines of runs' output that matched an alert pattern."""

from __future__ import annotations

import time
from typing import Any

from .core import Core
from .records import AlertMatch

_COLUMNS = AlertMatch.COLUMNS


def _marks(ids: list[int]) -> str:
    return ", ".join("?" * len(ids))


class Alerts:
    """The ``alert_matches`` and ``alert_overflow`` tables."""

    def __init__(self, core: Core):
        self.core = core

    def add(self, run_id: int, script: str, matches: list[tuple], dropped: int) -> None:
        """Record a run's output alerts: (line_number, line, severity, pattern, fail) each."""
        now = time.time()
        with self.core.write() as tx:
            tx.executemany(
                "INSERT INTO alert_matches (run_id, script, line_number, line, severity,"
                " pattern, fail, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, script, *m[:4], int(m[4]), now) for m in matches],
            )
            if dropped:
                tx.execute(
                    "INSERT INTO alert_overflow (run_id, dropped) VALUES (?, ?)"
                    " ON CONFLICT (run_id) DO UPDATE SET dropped = excluded.dropped",
                    (run_id, dropped),
                )

    def matches(
        self, script: str | None = None, limit: int = 20, run_ids: list[int] | None = None
    ) -> list[AlertMatch]:
        """Output alerts, newest first: of one script, of some runs, or all."""
        where: list[str] = []
        args: list[Any] = []
        if script is not None:
            where.append("script = ?")
            args.append(script)
        if run_ids is not None:
            where.append(f"run_id IN ({_marks(run_ids)})")
            args += run_ids
        cond = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.core.read(
            f"SELECT {_COLUMNS} FROM alert_matches{cond} ORDER BY id DESC LIMIT ?", (*args, limit)
        )
        return [AlertMatch.from_row(r) for r in rows]

    def first(self, run_ids: list[int], per_run: int) -> tuple[list[AlertMatch], dict[int, int]]:
        """The first ``per_run`` matches of each run, and how many each run had in all
        (those beyond the recorded ones included)."""
        marks = _marks(run_ids)
        rows = self.core.read(
            f"SELECT {_COLUMNS} FROM (SELECT {_COLUMNS}, ROW_NUMBER() OVER"
            " (PARTITION BY run_id ORDER BY id) AS n FROM alert_matches"
            f" WHERE run_id IN ({marks})) numbered WHERE n <= ? ORDER BY id",
            (*run_ids, per_run),
        )
        counts: dict[int, int] = {
            r[0]: r[1]
            for r in self.core.read(
                f"SELECT run_id, COUNT(*) FROM alert_matches WHERE run_id IN ({marks})"
                " GROUP BY run_id",
                tuple(run_ids),
            )
        }
        for rid, dropped in self.dropped(run_ids).items():
            counts[rid] = counts.get(rid, 0) + dropped
        return [AlertMatch.from_row(r) for r in rows], counts

    def dropped(self, run_ids: list[int]) -> dict[int, int]:
        """How many matches beyond the recorded ones each run had."""
        if not run_ids:
            return {}
        rows = self.core.read(
            f"SELECT run_id, dropped FROM alert_overflow WHERE run_id IN ({_marks(run_ids)})",
            tuple(run_ids),
        )
        return {r[0]: r[1] for r in rows}
