"""Claims and heartbeats of runs sent to workers (distributed execution).

The caller writes a run's row (``Runs.start_run``, in its batch); a worker claims
it by setting its first heartbeat, beats while it runs, and records its end.  Every
statement here changes only rows it names, so on PostgreSQL claims from many hosts
take row locks only.
"""

from __future__ import annotations

import time

from ..states import RunStatus
from .core import Core
from .records import Run
from .runs import WORKER_LOST, log_state

_RUNNING = RunStatus.RUNNING.value
NO_WORKER = "no worker took it"  # the detail of a run lost before any worker claimed it


def _marks(ids: list[int]) -> str:
    return ",".join("?" * len(ids))


class Claims:
    """The ``heartbeat``, ``host`` and ``cancel`` columns of ``runs``."""

    def __init__(self, core: Core):
        self.core = core

    def claim_run(
        self, run_id: int, host: str, owner: str, started: float, log_path: str | None
    ) -> bool:
        """Take a run sent to workers; False when another delivery has it (or it ended)."""
        changed = self.core.own(
            "UPDATE runs SET heartbeat = ?, host = ?, owner = ?, started = ?, log_path = ?,"
            " log_state = ? WHERE id = ? AND status = ? AND heartbeat IS NULL AND cancel = 0",
            (started, host, owner, started, log_path, log_state(log_path).value, run_id, _RUNNING),
        )
        return changed == 1

    def beat(self, run_ids: list[int], now: float) -> list[int]:
        """Record a heartbeat for these runs; return those to end (cancelled, or no longer
        running because the caller gave them up as lost)."""
        if not run_ids:
            return []
        marks = _marks(run_ids)
        self.core.own(  # no retries: a failed beat is tried again at the next one
            f"UPDATE runs SET heartbeat = ? WHERE id IN ({marks}) AND status = ?",
            (now, *run_ids, _RUNNING),
            retry_for=0,
        )
        rows = self.core.read(
            f"SELECT id FROM runs WHERE id IN ({marks}) AND (cancel = 1 OR status != ?)",
            (*run_ids, _RUNNING),
        )
        return [r[0] for r in rows]

    def ended_or_stale(
        self,
        run_ids: list[int],
        lost_after: float,
        now: float,
        claim_timeout: float | None = None,
    ) -> list[Run]:
        """Of these runs, the rows that ended; claimed runs whose heartbeat is older than
        ``lost_after`` are first marked lost, and so are runs no worker claimed within
        ``claim_timeout`` seconds of being recorded (a late claim then finds them ended)."""
        if not run_ids:
            return []
        rows = self.core.read(
            f"SELECT id, status, heartbeat, started FROM runs WHERE id IN ({_marks(run_ids)})",
            tuple(run_ids),
        )
        stale = [
            r[0] for r in rows if r[1] == _RUNNING and r[2] is not None and r[2] < now - lost_after
        ]
        if stale:
            detail = WORKER_LOST
            with self.core.write() as tx:
                tx.executemany(
                    "UPDATE runs SET status = ?, ended = ?, duration = ? - started,"
                    " detail = ? WHERE id = ? AND status = ? AND heartbeat < ?",
                    [
                        (RunStatus.LOST.value, now, now, detail, i, _RUNNING, now - lost_after)
                        for i in stale
                    ],
                )
        if claim_timeout is not None:
            limit = now - claim_timeout
            waiting = [r[0] for r in rows if r[1] == _RUNNING and r[2] is None and r[3] < limit]
            if waiting:
                with self.core.write() as tx:
                    tx.executemany(
                        "UPDATE runs SET status = ?, ended = ?, duration = 0, detail = ?,"
                        " cancel = 1 WHERE id = ? AND status = ? AND heartbeat IS NULL",
                        [(RunStatus.LOST.value, now, NO_WORKER, i, _RUNNING) for i in waiting],
                    )
                stale += waiting
        ended = [r[0] for r in rows if r[1] != _RUNNING] + stale
        if not ended:
            return []
        rows = self.core.read(
            f"SELECT {Run.COLUMNS} FROM runs WHERE id IN ({_marks(ended)}) AND status != ?",
            (*ended, _RUNNING),
        )
        return [Run.from_row(r) for r in rows]

    def unclaimed(self, run_ids: list[int]) -> list[int]:
        """Of these runs, those still waiting for a worker to claim them."""
        if not run_ids:
            return []
        rows = self.core.read(
            f"SELECT id FROM runs WHERE id IN ({_marks(run_ids)}) AND status = ?"
            " AND heartbeat IS NULL",
            (*run_ids, _RUNNING),
        )
        return [r[0] for r in rows]

    def cancel_runs(self, run_ids: list[int], status: RunStatus | str, detail: str) -> None:
        """Ask the workers to end these runs; those not claimed yet end here at once."""
        if not run_ids:
            return
        now = time.time()
        marks = _marks(run_ids)
        with self.core.write() as tx:
            tx.execute(f"UPDATE runs SET cancel = 1 WHERE id IN ({marks})", tuple(run_ids))
            tx.execute(
                f"UPDATE runs SET status = ?, ended = ?, duration = 0, detail = ?"
                f" WHERE id IN ({marks}) AND status = ? AND heartbeat IS NULL",
                (str(status), now, detail, *run_ids, _RUNNING),
            )

    def give_up_runs(self, run_ids: list[int], status: RunStatus | str, detail: str) -> None:
        """Record runs still running as ended by the caller (their worker did not answer)."""
        now = time.time()
        with self.core.write() as tx:
            tx.executemany(
                "UPDATE runs SET status = ?, ended = ?, duration = ? - started, detail = ?"
                " WHERE id = ? AND status = ?",
                [(str(status), now, now, detail, i, _RUNNING) for i in run_ids],
            )
