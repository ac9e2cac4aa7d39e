"""The run history: a small core and one repository per concern.

``Store`` opens one history (SQLite in the state folder, or PostgreSQL at
``store.url``) and hands out its repositories; callers use the repository they
need, typed by its protocol, never the connection:

========== ==========================================================
``runs``     recording runs and group runs, rotating logs, reading them
``logs``     log chunks of runs made on other hosts
``claims``   claims and heartbeats of runs sent to workers
``outbox``   notifications, recorded once and sent by whoever claims them
``alerts``   output alert matches
``watch``    the watchdog's positions and findings
``checks``   passive checks: their pings (as runs) and where each stands
``reads``    what ``list``, ``status``, the dashboard show
``totals``   running totals for ``/metrics``
``retention`` deleting what is older than the retention period
``leases``   schedulers sharing the store: the leader's lease, their beats, ticks handled
========== ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core import DB_NAME, RETRY_FOR, Core, busy_timeout_ms
from .owner import Owner
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
    RunEnd,
    RunSummary,
    SchedulerMember,
    WatchEvent,
)
from .runs import Runs

if TYPE_CHECKING:
    from .api import (
        AlertsApi,
        AuditApi,
        ChecksApi,
        ClaimsApi,
        History,
        LeasesApi,
        LogsApi,
        OutboxApi,
        ReadsApi,
        Recorder,
        RetentionApi,
        RunsApi,
        TotalsApi,
        WatchApi,
    )

__all__ = [
    "DB_NAME",
    "DURATION_BUCKETS",
    "MIGRATIONS",
    "AlertMatch",
    "AuditRow",
    "CheckState",
    "GroupRun",
    "History",
    "Message",
    "NewMessage",
    "NewPing",
    "Owner",
    "Ping",
    "PingResult",
    "PruneReport",
    "Recorder",
    "Run",
    "RunEnd",
    "RunSummary",
    "SchedulerMember",
    "Store",
    "WatchEvent",
    "busy_timeout_ms",
]


def __getattr__(name: str) -> Any:
    """Names whose modules only some commands need, imported on first use (start-up)."""
    if name == "MIGRATIONS":
        from .schema import MIGRATIONS

        return MIGRATIONS
    if name == "DURATION_BUCKETS":
        from .totals import DURATION_BUCKETS

        return DURATION_BUCKETS
    if name in ("History", "Recorder"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Store:
    """The run history of one config directory.

    ``runs`` is made at once (every command records or reaps runs); the other
    repositories on first use, so a command imports only the modules it needs.
    """

    def __init__(self, state_dir: Path, url: str | None = None, retry_for: float = RETRY_FOR):
        self.core = core = Core(state_dir, url, retry_for)
        self.runs: RunsApi = Runs(core)
        # Every write inside the block in one transaction (``Core.batch``).
        self.batch: Callable[[], AbstractContextManager[None]] = core.batch

    @cached_property
    def reads(self) -> ReadsApi:
        from .reads import Reads

        return Reads(self.core)

    @cached_property
    def leases(self) -> LeasesApi:
        from .leases import Leases

        return Leases(self.core)

    @cached_property
    def logs(self) -> LogsApi:
        from .logs import LogChunks

        return LogChunks(self.core)

    @cached_property
    def claims(self) -> ClaimsApi:
        from .claims import Claims

        return Claims(self.core)

    @cached_property
    def outbox(self) -> OutboxApi:
        from .outbox import Outbox

        return Outbox(self.core)

    @cached_property
    def alerts(self) -> AlertsApi:
        from .alerts import Alerts

        return Alerts(self.core)

    @cached_property
    def watch(self) -> WatchApi:
        from .watch import Watch

        return Watch(self.core)

    @cached_property
    def checks(self) -> ChecksApi:
        from .checks import Checks

        return Checks(self.core)

    @cached_property
    def audit(self) -> AuditApi:
        from .audit import Audit

        return Audit(self.core)

    @cached_property
    def totals(self) -> TotalsApi:
        from .totals import Totals

        return Totals(self.core)

    @cached_property
    def retention(self) -> RetentionApi:
        from .retention import Retention
        from .totals import Totals

        return Retention(self.core, Totals(self.core))

    @property
    def path(self) -> Path:
        return self.core.path

    @property
    def url(self) -> str | None:
        return self.core.url

    @property
    def where(self) -> str:
        """The history's place for messages (a path, or the URL without its password)."""
        return self.core.where

    @property
    def owner(self) -> Owner:
        return self.core.owner

    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; return (version before, version now)."""
        return self.core.migrate()

    def close(self) -> None:
        self.core.close()
