"""Passive checks: the pings jobs send, recorded as runs, and where each check stands.

A check's runs are rows of ``runs`` with trigger ``ping`` (so ``history``, ``logs``, the
web and the metrics read them as any script's): a start opens a running row, the end
that follows closes it; an end without a start is a row that starts and ends at once.
A ping's body is the run's log, kept in ``run_logs`` as a remote run's output is.
Every ping is also a row of ``check_pings``; ``check_state`` holds each check's newest
ping and the run a start left open.  One ping is one transaction.
"""

from __future__ import annotations

from ..states import LogState, PingKind, RunStatus
from .core import Core, Tx
from .records import CheckState, NewPing, Ping, PingResult
from .runs import _expire

TRIGGER = "ping"  # the trigger of a check's runs
OWNER = "ping"  # the owner of a check's runs: no process, so never reaped as lost
BODY_LIMIT = 10 * 1024  # bytes of a ping's body kept as its run's log
_RUNNING = RunStatus.RUNNING.value
SUPERSEDED = "no end was reported before the next start"


def ended_status(kind: PingKind, exit_code: int | None) -> RunStatus:
    """The status of the run an end ping closes."""
    if kind == PingKind.SUCCESS or (kind == PingKind.EXIT and exit_code == 0):
        return RunStatus.SUCCESS
    return RunStatus.FAILED


def log_path_of(check: str, at: float) -> str:
    """The log path a ping's run is recorded with: its log lives in the history's
    chunks (``logsource`` reads them when no such file exists)."""
    return f"{check}/ping-{at:.6f}.log"


class Checks:
    """The ``check_state`` and ``check_pings`` tables, and the ``runs`` rows of pings."""

    def __init__(self, core: Core):
        self.core = core

    def record(
        self, ping: NewPing, keep: int | None = None, before: float | None = None
    ) -> tuple[PingResult, list[str]]:
        """Record one ping; with ``keep`` (or ``before``) rotate the check's older logs
        in the same commit.  Returns what it did and the rotated log paths."""
        at, name = ping.at, ping.check
        body = ping.body[-BODY_LIMIT:]
        with self.core.write() as tx:
            # The upsert takes the check's row lock (PostgreSQL): its pings queue here.
            tx.execute(
                "INSERT INTO check_state (name, first_seen, pings) VALUES (?, ?, 1)"
                " ON CONFLICT (name) DO UPDATE SET pings = check_state.pings + 1",
                (name, at),
            )
            row = tx.one("SELECT open_run_id FROM check_state WHERE name = ?", (name,))
            open_id = row[0] if row else None
            opened = None
            if open_id is not None:
                opened = tx.one(
                    "SELECT started FROM runs WHERE id = ? AND status = ?", (open_id, _RUNNING)
                )
            log_path = log_path_of(name, at) if body else None
            superseded = None
            if ping.kind == PingKind.START:
                status = RunStatus.RUNNING
                if opened is not None:
                    superseded = open_id
                    tx.execute(
                        "UPDATE runs SET status = ?, ended = ?, duration = ?, detail = ?"
                        " WHERE id = ? AND status = ?",
                        (RunStatus.LOST.value, at, max(at - opened[0], 0.0), SUPERSEDED,
                         open_id, _RUNNING),
                    )  # fmt: skip
                run_id = self._insert(tx, ping, status, log_path, ended=False)
                new_open: int | None = run_id
            else:
                status = ended_status(ping.kind, ping.exit_code)
                detail = "the job reported a failure" if ping.kind == PingKind.FAIL else None
                if opened is not None and open_id is not None:
                    run_id = open_id
                    logged = ", log_path = COALESCE(log_path, ?), log_state = ?" if body else ""
                    more = (log_path, LogState.OK.value) if body else ()
                    tx.execute(
                        "UPDATE runs SET status = ?, ended = ?, duration = ?, exit_code = ?,"
                        f" detail = ?{logged} WHERE id = ?",
                        (status.value, at, max(at - opened[0], 0.0), ping.exit_code, detail,
                         *more, run_id),
                    )  # fmt: skip
                else:
                    run_id = self._insert(tx, ping, status, log_path, ended=True, detail=detail)
                new_open = None
            if body:
                seq = tx.one(
                    "SELECT COALESCE(MAX(seq) + 1, 0) FROM run_logs WHERE run_id = ?", (run_id,)
                )[0]
                tx.execute(
                    "INSERT INTO run_logs (run_id, seq, data) VALUES (?, ?, ?)",
                    (run_id, seq, body),
                )
            ping_id = tx.insert(
                "INSERT INTO check_pings (check_name, at, kind, exit_code, client, run_id,"
                " body_size) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, at, ping.kind.value, ping.exit_code, ping.client, run_id, len(body)),
            )
            tx.execute(
                "UPDATE check_state SET last_ping = ?, last_kind = ?, last_run_id = ?,"
                " open_run_id = ? WHERE name = ?",
                (at, ping.kind.value, run_id, new_open, name),
            )
            rotate = body and (keep is not None or before is not None)
            gone = _expire(tx, name, keep, before) if rotate else []  # a new log: the limit
        assert ping_id is not None
        return PingResult(ping_id, run_id, status, superseded), gone

    def _insert(
        self,
        tx: Tx,
        ping: NewPing,
        status: RunStatus,
        log_path: str | None,
        ended: bool,
        detail: str | None = None,
    ) -> int:
        new = tx.insert(
            "INSERT INTO runs (script, trigger, status, started, ended, exit_code, owner,"
            " log_path, log_state, detail, attempt, host)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
            (
                ping.check,
                TRIGGER,
                status.value,
                ping.at,
                ping.at if ended else None,
                ping.exit_code,
                OWNER,
                log_path,
                (LogState.OK if log_path else LogState.NONE).value,
                detail,
                ping.client,
            ),
        )
        assert new is not None
        return new

    def seen(self, names: list[str], now: float) -> None:
        """Note checks not seen before, from ``now``: a check that never pings is late
        one period (or schedule tick) and its grace after it was first seen."""
        if not names:
            return
        with self.core.write() as tx:
            tx.executemany(
                "INSERT INTO check_state (name, first_seen) VALUES (?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                [(n, now) for n in names],
            )

    def states(self) -> dict[str, CheckState]:
        """Every check known to the history, by name."""
        rows = self.core.read(f"SELECT {CheckState.COLUMNS} FROM check_state")
        return {r[0]: CheckState.from_row(r) for r in rows}

    def state(self, name: str) -> CheckState | None:
        rows = self.core.read(
            f"SELECT {CheckState.COLUMNS} FROM check_state WHERE name = ?", (name,)
        )
        return CheckState.from_row(rows[0]) if rows else None

    def pings(self, name: str, limit: int = 20) -> list[Ping]:
        """The check's newest pings, newest first."""
        rows = self.core.read(
            f"SELECT {Ping.COLUMNS} FROM check_pings WHERE check_name = ? ORDER BY id DESC LIMIT ?",
            (name, limit),
        )
        return [Ping.from_row(r) for r in rows]

    def count(self, name: str) -> int:
        """How many pings of the check the history holds."""
        return self.core.read("SELECT COUNT(*) FROM check_pings WHERE check_name = ?", (name,))[0][
            0
        ]

    def last_alarm(self, name: str, events: tuple[str, ...]) -> tuple[int, str] | None:
        """The newest of ``events`` notified for the check: (message id, event)."""
        marks = ", ".join("?" * len(events))
        rows = self.core.read(
            f"SELECT id, event FROM notifications WHERE unit = ? AND event IN ({marks})"
            " ORDER BY id DESC LIMIT 1",
            (name, *events),
        )
        return (rows[0][0], rows[0][1]) if rows else None
