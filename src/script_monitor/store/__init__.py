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
``reads``    what ``list``, ``status``, the dashboard show
``totals``   running totals for ``/metrics``
``retention`` deleting what is older than the retention period
========== ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from .alerts import Alerts
from .api import (
    AlertsApi,
    ClaimsApi,
    LogsApi,
    OutboxApi,
    ReadsApi,
    RetentionApi,
    RunsApi,
    TotalsApi,
    WatchApi,
)
from .claims import Claims
from .core import DB_NAME, RETRY_FOR, Core, Owner, busy_timeout_ms
from .logs import LogChunks
from .outbox import Outbox
from .reads import Reads
from .records import AlertMatch, GroupRun, Message, NewMessage, PruneReport, Run, RunSummary
from .retention import Retention
from .runs import Recorder, Runs
from .schema import MIGRATIONS
from .totals import DURATION_BUCKETS, Totals
from .watch import Watch

__all__ = [
    "DB_NAME",
    "DURATION_BUCKETS",
    "MIGRATIONS",
    "AlertMatch",
    "GroupRun",
    "History",
    "Message",
    "NewMessage",
    "Owner",
    "PruneReport",
    "Recorder",
    "Run",
    "RunSummary",
    "Store",
    "busy_timeout_ms",
]


class History(Protocol):
    """What the engine and its executors need of a history: a recorder, the output
    alerts and batches."""

    @property
    def runs(self) -> Recorder: ...
    @property
    def alerts(self) -> AlertsApi: ...
    def batch(self) -> AbstractContextManager[None]: ...


class Store:
    """The run history of one config directory."""

    def __init__(self, state_dir: Path, url: str | None = None, retry_for: float = RETRY_FOR):
        self.core = core = Core(state_dir, url, retry_for)
        self.runs: RunsApi = Runs(core)
        self.logs: LogsApi = LogChunks(core)
        self.claims: ClaimsApi = Claims(core)
        self.outbox: OutboxApi = Outbox(core)
        self.alerts: AlertsApi = Alerts(core)
        self.watch: WatchApi = Watch(core)
        self.reads: ReadsApi = Reads(core)
        totals = Totals(core)
        self.totals: TotalsApi = totals
        self.retention: RetentionApi = Retention(core, totals)

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

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every write inside the block in one transaction (``Core.batch``)."""
        with self.core.batch():
            yield

    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; return (version before, version now)."""
        return self.core.migrate()

    def close(self) -> None:
        self.core.close()
