"""The newest run of every script (``store.reads.last_runs``), kept up to date from
the runs recorded since instead of read afresh after every change of the history.

Reading the newest run of 5 000 scripts touches a row of each (0.1–1 s on a large
history whose pages another process's write has just made cold); the overview needs it
on every change.  This copy reads it once, then only the runs above the highest id it
has seen (a window of ``BACK`` ids below it too, for ids that commit out of order on
PostgreSQL) and the rows of the runs it holds as running; and reads it all again every
``FULL_EVERY`` seconds, so that anything else (a prune, a copied store) is caught up.
"""

from __future__ import annotations

import threading
import time

from ..states import RunStatus
from ..store import Run, Store

BACK = 256  # ids re-read below the highest seen
FULL_EVERY = 60.0  # seconds between full reads


class LastRuns:
    """script -> its newest run that was not skipped, as ``Reads.last_runs``."""

    def __init__(self, store: Store):
        self.store = store
        self.lock = threading.Lock()
        self.runs: dict[str, Run] = {}
        self.top = 0
        self.loaded = -FULL_EVERY  # monotonic time of the last full read

    def get(self) -> dict[str, Run]:
        """The current copy (a new dict: the caller may keep it)."""
        with self.lock:
            now = time.monotonic()
            if now - self.loaded >= FULL_EVERY:
                self.runs = self.store.reads.last_runs()
                self.top = max((r.id for r in self.runs.values()), default=0)
                self.loaded = now
            running = [r.id for r in self.runs.values() if r.status is RunStatus.RUNNING]
            top, new, watched = self.store.reads.runs_after(max(0, self.top - BACK), running)
            for r in watched:
                if (held := self.runs.get(r.script)) is not None and held.id == r.id:
                    self.runs[r.script] = r
            for r in new:
                held = self.runs.get(r.script)
                if held is None or r.id >= held.id:
                    self.runs[r.script] = r
            self.top = max(self.top, top)
            return dict(self.runs)
