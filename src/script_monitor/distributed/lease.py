"""The lease an orchestrator holds on a group run whose runs go to workers.

The caller of ``run-group`` (or the scheduler's thread for a tick) renews it every
``scheduling.lease_ttl / 3`` seconds on a thread of its own.  When it stops being
renewed (the process was killed, its host or its store connection was lost), the
leading scheduler adopts the group run and carries its plan on
(``scheduler.Scheduler._adopt``, ``engine.GroupRun.resume``).  The holder counts the
lease by its own clock from the moment it asked, so it stops starting runs before an
adopter can take over: ``check`` raises once it is out.
"""

from __future__ import annotations

import threading
import time

from ..errors import ScriptMonitorError
from ..store import Store


class LeaseLost(ScriptMonitorError):
    """This process no longer holds the lease of the group run it orchestrates."""


class GroupLease:
    """One group run's lease, renewed until ``stop``."""

    def __init__(self, store: Store, group_run_id: int, ttl: float):
        self.store = store
        self.group_run_id = group_run_id
        self.ttl = ttl
        self.holder = store.core.owner_text
        self._valid_until = 0.0
        self._lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"lease-{group_run_id}", daemon=True
        )

    def start(self) -> None:
        self._renew()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _renew(self) -> None:
        asked = time.monotonic()
        try:
            held = self.store.leases.lease_groups([self.group_run_id], self.holder, self.ttl)
        except ScriptMonitorError:
            return  # tried again at the next turn; the lease runs out meanwhile
        if self.group_run_id in held:
            self._valid_until = asked + self.ttl
        else:
            self._lost = True

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            self._renew()

    def check(self) -> None:
        """Raise LeaseLost when the lease is someone else's now.  A lease that ran out
        while the store was out of reach is taken back if nobody adopted it meanwhile
        (the conditional renewal decides, so this holder and an adopter never both
        go on)."""
        if not self._lost and time.monotonic() >= self._valid_until:
            self._renew()
        if self._lost or time.monotonic() >= self._valid_until:
            raise LeaseLost(
                f"group run {self.group_run_id}: its lease ran out (scheduling.lease_ttl,"
                f" {self.ttl:g}s) and a scheduler carries it on, or will once it can reach"
                " the store"
            )
