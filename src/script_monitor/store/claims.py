"""Claims and heartbeats of runs sent to workers (distributed execution).

The caller writes a run's row (``Runs.start_run``, in its batch); a worker claims
it by setting its first heartbeat, beats while it runs, and records its end.  Every
statement here changes only rows it names, so on PostgreSQL claims from many hosts
take row locks only.
"""

from __future__ import annotations

import time

from ..states import LogState, RunStatus
from .core import Core
from .records import Run, RunEnd
from .runs import WORKER_LOST, Runs, log_state

_RUNNING = RunStatus.RUNNING.value
NO_WORKER = "no worker took it"  # the detail of a run lost before any worker claimed it


def _marks(ids: list[int]) -> str:
    return ",".join("?" * len(ids))


_OK, _ROTATED = LogState.OK.value, LogState.ROTATED.value
# A claimed run's end on PostgreSQL, in one statement: the last chunks of its log, its
# row, and the rotation of its script's logs (as Runs.finish_run's ``expire``).  Every
# part sees the rows as they were before it, so the rotation counts this run among the
# ended ones itself, and rotates it in its own UPDATE when it is beyond the limit.
# Repeating it (a retry after a lost connection) changes nothing more.
_SET_END = RunEnd.SET
_SHIP = (
    "shipped AS (INSERT INTO run_logs (run_id, seq, data) SELECT done.id, c.seq, c.data"
    " FROM done, unnest(CAST(? AS BIGINT[]), CAST(? AS BYTEA[])) AS c(seq, data)"
    f" WHERE done.log_state != '{_ROTATED}' ON CONFLICT DO NOTHING)"
)
_END = (
    f"WITH done AS (UPDATE runs SET {_SET_END}, log_state = COALESCE(?, log_state)"
    f" WHERE id = ? RETURNING id, log_state), {_SHIP} SELECT NULL FROM done WHERE FALSE"
)
_OLD = f"script = ? AND log_state = '{_OK}' AND (status != '{_RUNNING}' OR id = ?)"
# The logs to rotate are locked first, and those another finishing worker holds are left
# to it: two workers rotating the same script's logs neither wait for each other nor
# deadlock (an UPDATE alone would lock the rows in whatever order it meets them).
_LOCKED = f"AND log_state = '{_OK}' FOR UPDATE SKIP LOCKED"
_END_ROTATING = (
    "WITH old AS ({old}),"
    f" done AS (UPDATE runs SET {_SET_END}, log_state = CASE WHEN id IN (SELECT id FROM old)"
    f" THEN '{_ROTATED}' ELSE COALESCE(?, log_state) END WHERE id = ? RETURNING id, log_state),"
    f" {_SHIP},"
    f" gone AS (UPDATE runs SET log_state = '{_ROTATED}' WHERE id IN (SELECT id FROM old)"
    " AND id != ? RETURNING id, log_path),"
    " dropped AS (DELETE FROM run_logs WHERE run_id IN (SELECT id FROM gone))"
    " SELECT log_path FROM gone UNION ALL SELECT log_path FROM old WHERE id = ?"
)
_END_KEEP = _END_ROTATING.format(
    old="SELECT id, log_path FROM runs WHERE id IN (SELECT id FROM runs"
    f" WHERE {_OLD} ORDER BY id DESC LIMIT ALL OFFSET ?) {_LOCKED}"
)
_END_BEFORE = _END_ROTATING.format(
    old=f"SELECT id, log_path FROM runs WHERE {_OLD} AND started < ? {_LOCKED}"
)


_CLAIM = (
    "UPDATE runs SET heartbeat = ?, host = ?, owner = ?, started = ?, log_path = ?,"
    " log_state = ? WHERE id = ? AND status = ? AND heartbeat IS NULL AND cancel = 0"
)
_SUCCESS = RunStatus.SUCCESS.value
# The last successful durations before a run (as Runs.duration_band reads them): of the
# run with this id, or, in a claim's RETURNING, of the row just claimed.
_DURATIONS = (
    f"SELECT duration FROM runs WHERE script = (SELECT script FROM runs WHERE id = ?)"
    f" AND status = '{_SUCCESS}' AND id < ? ORDER BY id DESC LIMIT ?"
)
_DURATIONS_OF = (
    f"SELECT d.duration FROM runs d WHERE d.script = runs.script AND d.status = '{_SUCCESS}'"
    " AND d.id < runs.id ORDER BY d.id DESC LIMIT ?"
)


class Claims:
    """The ``heartbeat``, ``host`` and ``cancel`` columns of ``runs``."""

    def __init__(self, core: Core):
        self.core = core

    def claim_run(
        self, run_id: int, host: str, owner: str, started: float, log_path: str | None
    ) -> bool:
        """Take a run sent to workers; False when another delivery has it (or it ended)."""
        changed = self.core.own(
            _CLAIM,
            (started, host, owner, started, log_path, log_state(log_path).value, run_id, _RUNNING),
        )
        return changed == 1

    def claim_with_durations(
        self,
        run_id: int,
        host: str,
        owner: str,
        started: float,
        log_path: str | None,
        window: int,
    ) -> list[float] | None:
        """``claim_run`` that also reads the durations of the script's last ``window``
        successful runs before this one (its anomaly band, docs/MONITORING.md): on
        PostgreSQL in the claim's own statement, so a worker's run costs one round trip
        less.  None when the claim is refused."""
        args = (
            started,
            host,
            owner,
            started,
            log_path,
            log_state(log_path).value,
            run_id,
            _RUNNING,
        )
        if not self.core.shared:
            with self.core.write() as tx:
                if tx.execute(_CLAIM, args).rowcount != 1:
                    return None
                rows = tx.all(_DURATIONS, (run_id, run_id, window))
            return [r[0] for r in rows]
        rows = self.core.own_rows(f"{_CLAIM} RETURNING ARRAY({_DURATIONS_OF})", (*args, window))
        return list(rows[0][0]) if rows else None

    def finish_claimed(
        self, run_id: int, chunks: list[tuple[int, bytes]], end: RunEnd
    ) -> list[str]:
        """Record the end of a claimed run with the last ``chunks`` (seq, bytes) of its
        log: ``Runs.finish_run`` and the chunks in one transaction, on PostgreSQL in one
        statement.  Returns the rotated logs' paths to delete."""
        if not self.core.shared:
            with self.core.batch():
                with self.core.write() as tx:
                    tx.executemany(
                        "INSERT INTO run_logs (run_id, seq, data) VALUES (?, ?, ?)"
                        " ON CONFLICT DO NOTHING",
                        [(run_id, seq, data) for seq, data in chunks],
                    )
                return Runs(self.core).finish_run(run_id, end)
        ship = ([seq for seq, _ in chunks], [data for _, data in chunks])
        if end.expire is None:
            self.core.own_rows(_END, (*end.values(), end.log_state_text, run_id, *ship))
            return []
        script, keep, before = end.expire
        sql = _END_KEEP if keep is not None else _END_BEFORE
        old = (script, run_id, keep if keep is not None else before)
        args = (*old, *end.values(), end.log_state_text, run_id, *ship, run_id, run_id)
        return [r[0] for r in self.core.own_rows(sql, args) if r[0]]

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
        ``claim_timeout`` seconds of being recorded (a late claim then finds them ended).
        One query reads only the rows that ended or must be marked (the caller asks
        every few milliseconds while its runs go on)."""
        if not run_ids:
            return []
        cond, args = "status != ? OR heartbeat < ?", [_RUNNING, now - lost_after]
        if claim_timeout is not None:
            cond += " OR (heartbeat IS NULL AND started < ?)"
            args.append(now - claim_timeout)
        rows = self.core.read(
            f"SELECT {Run.COLUMNS}, heartbeat FROM runs"
            f" WHERE id IN ({_marks(run_ids)}) AND ({cond})",
            (*run_ids, *args),
        )
        ended = [Run.from_row(r) for r in rows if r[5] != _RUNNING]
        stale = [r[0] for r in rows if r[5] == _RUNNING and r[-1] is not None]
        waiting = [r[0] for r in rows if r[5] == _RUNNING and r[-1] is None]
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
        if waiting:
            with self.core.write() as tx:
                tx.executemany(
                    "UPDATE runs SET status = ?, ended = ?, duration = 0, detail = ?,"
                    " cancel = 1 WHERE id = ? AND status = ? AND heartbeat IS NULL",
                    [(RunStatus.LOST.value, now, NO_WORKER, i, _RUNNING) for i in waiting],
                )
        marked = stale + waiting
        if marked:  # as they are now: marked here, or ended by their worker meanwhile
            rows = self.core.read(
                f"SELECT {Run.COLUMNS} FROM runs WHERE id IN ({_marks(marked)}) AND status != ?",
                (*marked, _RUNNING),
            )
            ended += [Run.from_row(r) for r in rows]
        return ended

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
