"""The protocols of the history's repositories: what callers may use of each.

``Store`` exposes each repository typed by its protocol, so a caller depends on the
few methods of the concern it needs, and a second implementation (a test double, or
another backend) is checked against the same interface by mypy.  ``Recorder`` (the
engine's) lives beside ``Runs`` in ``runs.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from ..states import (
    AuditAction,
    AuditResult,
    GroupStatus,
    LogState,
    MessageState,
    RunStatus,
    TickOutcome,
)
from .records import (
    AlertMatch,
    AuditRow,
    CheckState,
    GroupRun,
    Message,
    NewMessage,
    NewPing,
    Ping,
    PingResult,
    PruneReport,
    Run,
    RunSummary,
    SchedulerMember,
    WatchEvent,
)

if TYPE_CHECKING:
    from ..anomaly import Band


class Recorder(Protocol):
    """What the engine and the executors need to record runs."""

    def start_group(self, group: str, trigger: str, now: float | None = None) -> int: ...
    def finish_group(
        self, group_run_id: int, status: GroupStatus | str, detail: str | None = None
    ) -> None: ...
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
        status: RunStatus | str,
        ended: float,
        duration: float,
        exit_code: int | None = None,
        signal: int | None = None,
        pid: int | None = None,
        detail: str | None = None,
        log_state: LogState | str | None = None,
        expire: tuple[str, int | None, float | None] | None = None,
        usage: tuple[float, float, int] | None = None,
        anomaly: str | None = None,
    ) -> list[str]: ...
    def duration_band(
        self,
        script: str,
        window: int = 50,
        min_runs: int = 10,
        slow: float = 3.0,
        fast: float = 0.2,
        before: int | None = None,
    ) -> Band | None: ...
    def add_skipped(
        self,
        scripts: list[str],
        trigger: str,
        group_run_id: int | None = None,
        group: str | None = None,
        detail: str | None = None,
    ) -> None: ...


class History(Protocol):
    """What the engine and its executors need of a history: a recorder, the output
    alerts and batches."""

    @property
    def runs(self) -> Recorder: ...
    @property
    def alerts(self) -> AlertsApi: ...
    def batch(self) -> AbstractContextManager[None]: ...


class RunsApi(Recorder, Protocol):
    """Runs and group runs: recording (``Recorder``), log rotation, and reading back."""

    on_lost: Callable[[list[int], list[int]], None] | None

    def expire_logs(self, script: str, keep: int | None, before: float | None) -> list[str]: ...
    def mark_logs_cleared(self, script: str | None) -> list[str]: ...
    def reap_lost(self) -> int: ...
    def run(self, run_id: int) -> Run | None: ...
    def history(self, script: str, limit: int | None = None) -> list[Run]: ...
    def latest_run(self, script: str, with_log: bool = False) -> Run | None: ...
    def group_run(self, group_run_id: int) -> GroupRun | None: ...
    def group_history(self, group: str, limit: int = 20) -> list[GroupRun]: ...
    def runs_of_group_run(self, group_run_id: int) -> list[Run]: ...


class ClaimsApi(Protocol):
    """The ``heartbeat``, ``host`` and ``cancel`` columns of ``runs``."""

    def beat(self, run_ids: list[int], now: float) -> list[int]: ...
    def cancel_runs(self, run_ids: list[int], status: RunStatus | str, detail: str) -> None: ...
    def claim_run(
        self, run_id: int, host: str, owner: str, started: float, log_path: str | None
    ) -> bool: ...
    def claim_with_durations(
        self,
        run_id: int,
        host: str,
        owner: str,
        started: float,
        log_path: str | None,
        window: int,
    ) -> list[float] | None: ...
    def ended_or_stale(
        self,
        run_ids: list[int],
        lost_after: float,
        now: float,
        claim_timeout: float | None = None,
    ) -> list[Run]: ...
    def unclaimed(self, run_ids: list[int]) -> list[int]: ...
    def finish_claimed(
        self,
        run_id: int,
        chunks: list[tuple[int, bytes]],
        status: RunStatus | str,
        ended: float,
        duration: float,
        exit_code: int | None = None,
        signal: int | None = None,
        pid: int | None = None,
        detail: str | None = None,
        log_state: LogState | str | None = None,
        expire: tuple[str, int | None, float | None] | None = None,
        usage: tuple[float, float, int] | None = None,
        anomaly: str | None = None,
    ) -> list[str]: ...
    def give_up_runs(self, run_ids: list[int], status: RunStatus | str, detail: str) -> None: ...


class LeasesApi(Protocol):
    """The ``leases``, ``schedulers`` and ``ticks`` tables (schedulers sharing a store)."""

    def hold(self, holder: str, ttl: float, force: bool = False, name: str = ...) -> bool: ...
    def release(self, holder: str, name: str = ...) -> None: ...
    def holder(self, name: str = ...) -> str | None: ...
    def beat(
        self, owner: str, host: str, pid: int, config_dir: str, version: str, started: float
    ) -> None: ...
    def leave(self, owner: str) -> None: ...
    def members(self, within: float) -> list[SchedulerMember]: ...
    def claim_ticks(
        self, group: str, dues: list[float], outcome: TickOutcome, holder: str
    ) -> list[float]: ...
    def handled(self, group: str, dues: list[float]) -> set[float]: ...
    def last_tick(self, group: str) -> float | None: ...
    def ticks(self, group: str, since: float) -> list[tuple[float, str, str]]: ...
    def prune(self, keep: float) -> int: ...
    def lease_groups(self, group_run_ids: list[int], holder: str, ttl: float) -> list[int]: ...
    def orphaned_groups(self) -> list[GroupRun]: ...
    def adopt_group(self, group_run_id: int, holder: str, ttl: float) -> bool: ...


class LogsApi(Protocol):
    """The ``run_logs`` table: a remote run's output, chunk by chunk."""

    def add(self, run_id: int, seq: int, data: bytes) -> None: ...
    def sizes(self, run_id: int, after: int = -1) -> list[tuple[int, int]]: ...
    def span(self, run_id: int, first: int, last: int) -> bytes: ...


class OutboxApi(Protocol):
    """The ``notifications`` table."""

    def add(self, messages: list[NewMessage]) -> list[int]: ...
    def claim(
        self, now: float, lease: float, limit: int = 20, force: bool = False, after: int = 0
    ) -> list[Message]: ...
    def counts(self) -> list[tuple[str, str, int]]: ...
    def due(self, now: float) -> bool: ...
    def finish_attempt(
        self, note_id: int, state: MessageState, accepted: str, error: str | None, next_try: float
    ) -> None: ...
    def last_unit_event(self, unit: str, events: tuple[str, ...]) -> str | None: ...
    def messages(self, limit: int = 20) -> list[Message]: ...
    def record_sent(self, messages: list[NewMessage]) -> None: ...


class AlertsApi(Protocol):
    """The ``alert_matches`` and ``alert_overflow`` tables."""

    def add(self, run_id: int, script: str, matches: list[tuple], dropped: int) -> None: ...
    def dropped(self, run_ids: list[int]) -> dict[int, int]: ...
    def first(
        self, run_ids: list[int], per_run: int
    ) -> tuple[list[AlertMatch], dict[int, int]]: ...
    def matches(
        self, script: str | None = None, limit: int = 20, run_ids: list[int] | None = None
    ) -> list[AlertMatch]: ...


class WatchApi(Protocol):
    """The ``watch_positions`` and ``watch_events`` tables."""

    def add_event(self, key: str, kind: str, subject: str, detail: str) -> bool: ...
    def events(self, limit: int = 50) -> list[WatchEvent]: ...
    def advance(self, group: str, schedule: str, old: float, new: float) -> bool: ...
    def position(self, group: str, schedule: str, floor: float) -> float | None: ...
    def running_units(self) -> tuple[list[Run], list[GroupRun]]: ...
    def scheduled_starts(self, group: str, since: float, until: float) -> list[float]: ...
    def set_state(self, name: str, value: float) -> None: ...
    def state(self, name: str) -> float | None: ...


class ChecksApi(Protocol):
    """Passive checks: pings recorded as runs, and where each check stands."""

    def record(
        self, ping: NewPing, keep: int | None = None, before: float | None = None
    ) -> tuple[PingResult, list[str]]: ...
    def seen(self, names: list[str], now: float) -> None: ...
    def states(self) -> dict[str, CheckState]: ...
    def state(self, name: str) -> CheckState | None: ...
    def pings(self, name: str, limit: int = 20) -> list[Ping]: ...
    def count(self, name: str) -> int: ...
    def last_alarm(self, name: str, events: tuple[str, ...]) -> tuple[int, str] | None: ...


class ReadsApi(Protocol):
    """Queries across scripts and groups."""

    def data_version(self) -> tuple[Any, int]: ...
    def last_ended_group_runs(self, trigger: str | None = None) -> dict[str, GroupRun]: ...
    def last_group_runs(self) -> dict[str, GroupRun]: ...
    def last_runs(self, scripts: Iterable[str] | None = None) -> dict[str, Run]: ...
    def runs_after(self, after_id: int, ids: list[int]) -> tuple[int, list[Run], list[Run]]: ...
    def latest_runs_by_script(
        self, scripts: list[str], per_script: int
    ) -> dict[str, list[RunSummary]]: ...
    def latest_group_runs(self, groups: list[str], per_group: int) -> dict[str, list[GroupRun]]: ...
    def recent_runs(self, statuses: list[RunStatus], since: float, limit: int) -> list[Run]: ...
    def running_runs(self) -> list[Run]: ...


class AuditApi(Protocol):
    """The web server's audit trail and revoked sessions."""

    def record(
        self,
        token_name: str,
        client: str,
        action: AuditAction,
        target: str,
        result: AuditResult,
        reason: str = "",
    ) -> None: ...
    def rows(self, since: float | None = None, limit: int = 1000) -> list[AuditRow]: ...
    def refusals(self) -> dict[str, int]: ...
    def revoke(self, sid: str, expires: float) -> None: ...
    def revoked(self) -> set[str]: ...


class TotalsApi(Protocol):
    """The ``run_totals`` table and the scrape's snapshot."""

    def since(self, after_id: int, watched: list[int]) -> dict[str, Any]: ...


class RetentionApi(Protocol):
    """Deleting what is older than the retention period."""

    def prune(
        self,
        cutoff: float,
        keep: int,
        dry_run: bool = False,
        batch: int | None = None,
        remove: Callable[[list[str]], None] | None = None,
    ) -> PruneReport: ...
