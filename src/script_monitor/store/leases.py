"""Several schedulers on one store: the leader's lease, every scheduler's beat, and
the due ticks handled, each once (docs/DISTRIBUTED.md).

Times in these tables are the store's own clock (``Dialect.now``), so hosts whose
clocks disagree still agree on when a lease has expired.
"""

from __future__ import annotations

from ..states import GroupStatus, RunStatus, SchedulerRole, TickOutcome
from .core import Core
from .records import GroupRun, SchedulerMember

SCHEDULER_LEASE = "scheduler"
_FORGET_AFTER = 86400.0  # a scheduler silent this long is dropped from the list


class Leases:
    """The ``leases``, ``schedulers`` and ``ticks`` tables."""

    def __init__(self, core: Core):
        self.core = core
        self.now = core.dialect.now

    # ------------------------------------------------------------ the lease

    def hold(
        self, holder: str, ttl: float, force: bool = False, name: str = SCHEDULER_LEASE
    ) -> bool:
        """Take the lease, or renew it, for ``ttl`` seconds; False while another holder's
        lease has not expired.  ``force`` takes it whatever its state (a SQLite store,
        whose one scheduler already holds the state folder's lock)."""
        now = self.now
        guard = "" if force else f" WHERE leases.holder = excluded.holder OR leases.expires < {now}"
        with self.core.write() as tx:
            cur = tx.execute(
                "INSERT INTO leases (name, holder, expires, acquired)"
                f" VALUES (?, ?, {now} + ?, {now})"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                " expires = excluded.expires,"
                " acquired = CASE WHEN leases.holder = excluded.holder THEN leases.acquired"
                " ELSE excluded.acquired END" + guard,
                (name, holder, float(ttl)),
            )
            return cur.rowcount == 1

    def release(self, holder: str, name: str = SCHEDULER_LEASE) -> None:
        """Give the lease up at once (a clean stop), so a standby need not wait."""
        with self.core.write() as tx:
            tx.execute(
                "UPDATE leases SET expires = 0 WHERE name = ? AND holder = ?", (name, holder)
            )

    def holder(self, name: str = SCHEDULER_LEASE) -> str | None:
        """Who holds the lease now (None when nobody's lease is current)."""
        rows = self.core.read(
            f"SELECT holder FROM leases WHERE name = ? AND expires >= {self.now}", (name,)
        )
        return rows[0][0] if rows else None

    # ------------------------------------------------------------ the members

    def beat(
        self, owner: str, host: str, pid: int, config_dir: str, version: str, started: float
    ) -> None:
        """Say that this scheduler is alive (and forget those silent for a day)."""
        now = self.now
        with self.core.write() as tx:
            tx.execute(
                "INSERT INTO schedulers (owner, host, pid, config_dir, version, started, beat)"
                f" VALUES (?, ?, ?, ?, ?, ?, {now})"
                " ON CONFLICT (owner) DO UPDATE SET beat = excluded.beat,"
                " config_dir = excluded.config_dir, version = excluded.version",
                (owner, host, pid, config_dir, version, started),
            )
            tx.execute(f"DELETE FROM schedulers WHERE beat < {now} - ?", (_FORGET_AFTER,))

    def leave(self, owner: str) -> None:
        """Take a stopped scheduler off the list."""
        with self.core.write() as tx:
            tx.execute("DELETE FROM schedulers WHERE owner = ?", (owner,))

    def members(self, within: float) -> list[SchedulerMember]:
        """The schedulers that beat in the last ``within`` seconds, the leader first."""
        now = self.now
        rows = self.core.read(
            "SELECT s.owner, s.host, s.pid, s.config_dir, s.version, s.started, s.beat,"
            f" {now} - s.beat, l.holder FROM schedulers s LEFT JOIN leases l"
            f" ON l.name = ? AND l.holder = s.owner AND l.expires >= {now}"
            f" WHERE s.beat >= {now} - ? ORDER BY s.started",
            (SCHEDULER_LEASE, within),
        )
        out = [
            SchedulerMember(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                SchedulerRole.LEADER if r[8] is not None else SchedulerRole.STANDBY,
                max(0.0, r[7]),
            )
            for r in rows
        ]
        return sorted(out, key=lambda m: m.role is not SchedulerRole.LEADER)

    # ------------------------------------------------------------ ticks

    def claim_ticks(
        self, group: str, dues: list[float], outcome: TickOutcome, holder: str
    ) -> list[float]:
        """Record each due tick of ``group`` as handled; the ones no scheduler had
        handled before (the others were someone else's and must not be handled again)."""
        won = []
        with self.core.write() as tx:
            for due in dues:
                cur = tx.execute(
                    "INSERT INTO ticks (group_name, due, outcome, scheduler, handled)"
                    f" VALUES (?, ?, ?, ?, {self.now}) ON CONFLICT (group_name, due) DO NOTHING",
                    (group, due, str(outcome), holder),
                )
                if cur.rowcount == 1:
                    won.append(due)
        return won

    def handled(self, group: str, dues: list[float]) -> set[float]:
        """Which of these ticks of ``group`` a scheduler has already handled."""
        if not dues:
            return set()
        rows = self.core.read(
            "SELECT due FROM ticks WHERE group_name = ? AND due BETWEEN ? AND ?",
            (group, min(dues), max(dues)),
        )
        return {r[0] for r in rows}

    def last_tick(self, group: str) -> float | None:
        """The latest tick of ``group`` any scheduler handled."""
        rows = self.core.read("SELECT MAX(due) FROM ticks WHERE group_name = ?", (group,))
        return rows[0][0] if rows else None

    def ticks(self, group: str, since: float) -> list[tuple[float, str, str]]:
        """(due, outcome, scheduler) of the ticks of ``group`` due since ``since``."""
        rows = self.core.read(
            "SELECT due, outcome, scheduler FROM ticks WHERE group_name = ? AND due >= ?"
            " ORDER BY due",
            (group, since),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def prune(self, keep: float) -> int:
        """Forget ticks handled more than ``keep`` seconds ago, but each group's latest."""
        with self.core.write() as tx:
            cur = tx.execute(
                f"DELETE FROM ticks WHERE handled < {self.now} - ? AND due < "
                "(SELECT MAX(t.due) FROM ticks t WHERE t.group_name = ticks.group_name)",
                (keep,),
            )
            return cur.rowcount

    # ------------------------------------------------------------ group runs

    def lease_groups(self, group_run_ids: list[int], holder: str, ttl: float) -> list[int]:
        """Take or renew the lease of these running group runs for ``ttl`` seconds; the
        ones this holder holds now (a group run adopted by another is not taken back)."""
        if not group_run_ids:
            return []
        marks = ",".join("?" * len(group_run_ids))
        running = GroupStatus.RUNNING.value
        with self.core.write() as tx:
            tx.execute(
                f"UPDATE group_runs SET lease_holder = ?, lease_until = {self.now} + ?"
                f" WHERE id IN ({marks}) AND status = ?"
                " AND (lease_holder IS NULL OR lease_holder = ?)",
                (holder, float(ttl), *group_run_ids, running, holder),
            )
            rows = tx.all(
                f"SELECT id FROM group_runs WHERE id IN ({marks}) AND lease_holder = ?",
                (*group_run_ids, holder),
            )
        return [r[0] for r in rows]

    def orphaned_groups(self) -> list[GroupRun]:
        """Running group runs whose orchestrator let its lease run out."""
        rows = self.core.read(
            f"SELECT {GroupRun.COLUMNS} FROM group_runs WHERE status = "
            f"'{GroupStatus.RUNNING}' AND lease_holder IS NOT NULL AND lease_until < {self.now}"
        )
        return [GroupRun.from_row(r) for r in rows]

    def adopt_group(self, group_run_id: int, holder: str, ttl: float) -> bool:
        """Take over a group run whose lease ran out, and the runs its orchestrator sent
        that no worker has claimed yet; False when another adopter was first."""
        running = GroupStatus.RUNNING.value
        with self.core.write() as tx:
            cur = tx.execute(
                f"UPDATE group_runs SET lease_holder = ?, owner = ?, lease_until = {self.now} + ?"
                f" WHERE id = ? AND status = ? AND lease_until < {self.now}",
                (holder, holder, float(ttl), group_run_id, running),
            )
            if cur.rowcount != 1:
                return False
            tx.execute(
                "UPDATE runs SET owner = ? WHERE group_run_id = ? AND status = ?"
                " AND heartbeat IS NULL",
                (holder, group_run_id, RunStatus.RUNNING.value),
            )
        return True
