"""The scheduler's housekeeping: once an hour, old history leaves the store.

Pruning runs on a thread of its own with a connection of its own, in small
transactions, so the scheduler's loop never waits for it and runs recorded
meanwhile wait at most one batch for the writer lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .config import Config

PRUNE_EVERY = 3600.0  # real seconds between prunes
FIRST_AFTER = 60.0  # the first one, a minute after the scheduler starts


class Housekeeper:
    """Starts a prune when one is due and none is going."""

    def __init__(self, log: Any):
        self.log = log
        self.due = time.monotonic() + FIRST_AFTER
        self.thread: threading.Thread | None = None

    def turn(self, config: Config) -> None:
        now = time.monotonic()
        if now < self.due or (self.thread is not None and self.thread.is_alive()):
            return
        self.due = now + PRUNE_EVERY
        if config.settings.history.rule.days == 0:
            return
        self.thread = threading.Thread(
            target=self._prune, args=(config,), name="prune", daemon=True
        )
        self.thread.start()

    def _prune(self, config: Config) -> None:
        from . import logs
        from .errors import ScriptMonitorError
        from .store import Store
        from .store.retention import cutoff_for

        rule = config.settings.history.rule
        store = Store(config.state_dir, config.store_url, config.settings.store.retry_for)
        try:
            report = store.retention.prune(
                cutoff_for(rule.days),
                rule.keep_last,
                remove=lambda paths: logs.remove(config.log_dir, paths),
            )
            if report.runs or report.group_runs or report.messages:
                self.log.info(
                    "history: pruned %d runs, %d group runs, %d notifications",
                    report.runs,
                    report.group_runs,
                    report.messages,
                )
        except ScriptMonitorError as e:  # a locked or unreachable store: next hour
            self.log.error("history: prune failed: %s", e)
        finally:
            store.close()
