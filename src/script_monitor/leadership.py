"""Which scheduler fires the ticks when several share one store (docs/DISTRIBUTED.md).

Every scheduler beats in the store's ``schedulers`` table; one of them, the leader,
holds the ``scheduler`` lease row, renewed every ``lease_ttl / 3`` seconds (at most
every heartbeat).  A standby tries to take the lease at the same pace and gets it
once the leader has been silent for ``scheduling.lease_ttl`` seconds.  The leader
fires only while its lease is certainly its own: it counts the lease from the moment
it asked for it, by its own monotonic clock, so a leader cut off from the store
stops firing before a standby can take over.  Each tick is then handled through its
unique row of ``ticks`` (``store/leases.py``), which keeps even two leaders (a
paused process coming back) from firing a tick twice.

On SQLite the state folder's lock already allows one scheduler: it takes the lease
whatever its state.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from . import __version__
from .errors import ScriptMonitorError
from .heartbeat import HEARTBEAT_EVERY
from .states import SchedulerRole
from .store import SchedulerMember, Store


class Leadership:
    """One scheduler's part in the lead over a store."""

    def __init__(self, store: Store, ttl: float, config_dir: str, log: logging.Logger):
        self.store = store
        self.ttl = ttl
        self.config_dir = config_dir
        self.log = log
        self.me = store.core.owner_text
        self.shared = store.core.shared
        self.every = min(HEARTBEAT_EVERY, ttl / 3)
        self.started = time.time()
        self.leading = False
        self._valid_until = 0.0  # monotonic: the lease is certainly ours until then
        self._next = 0.0
        self._failing = False

    def due(self) -> float:
        """Real seconds until the next turn is due."""
        return max(0.0, self._next - time.monotonic())

    def turn(self, force: bool = False) -> bool:
        """Beat, and take or renew the lease when its time has come; True when this
        scheduler has just become the leader (its ticks must be found again)."""
        asked = time.monotonic()
        if asked < self._next and not force:
            return False
        self._next = asked + self.every
        try:
            leases = self.store.leases
            leases.beat(
                self.me,
                socket.gethostname(),
                os.getpid(),
                self.config_dir,
                __version__,
                self.started,
            )
            held = leases.hold(self.me, self.ttl, force=not self.shared)
        except ScriptMonitorError as e:
            if not self._failing:
                self.log.error("cannot renew the scheduler lease: %s", e)
            self._failing = True
            self._check_lost()
            return False
        if self._failing:
            self.log.info("the store answers again")
            self._failing = False
        if held:
            self._valid_until = asked + self.ttl
            if not self.leading:
                self.leading = True
                self.log.info(
                    "leading: this scheduler fires the ticks (lease of %gs%s)",
                    self.ttl,
                    " shared with standbys" if self.shared else "",
                )
                return True
            return False
        if self.leading:
            self.leading = False
            self.log.warning("another scheduler took the lead; standing by")
        elif self.shared and not self._announced_standby:
            self._announced_standby = True
            holder = self._holder()
            self.log.info(
                "standing by: %s leads; taking over if it is silent for %gs (scheduling.lease_ttl)",
                holder or "another scheduler",
                self.ttl,
            )
        return False

    _announced_standby = False

    def _holder(self) -> str | None:
        try:
            members = self.store.leases.members(self.ttl * 2)
        except ScriptMonitorError:
            return None
        for m in members:
            if m.role is SchedulerRole.LEADER:
                return f"{m.host} (pid {m.pid})"
        return None

    def _check_lost(self) -> None:
        if self.leading and time.monotonic() >= self._valid_until:
            self.leading = False
            self.log.warning(
                "the lease could not be renewed for %gs: no more ticks are fired here until it is",
                self.ttl,
            )

    def leads(self) -> bool:
        """True while this scheduler holds a lease that has not run out."""
        self._check_lost()
        return self.leading

    def role(self) -> SchedulerRole:
        return SchedulerRole.LEADER if self.leads() else SchedulerRole.STANDBY

    def leave(self) -> None:
        """A clean stop: give the lease up and leave the list (a standby takes over at
        once)."""
        try:
            if self.leading:
                self.store.leases.release(self.me)
            self.store.leases.leave(self.me)
        except ScriptMonitorError as e:
            self.log.warning("could not give the scheduler lease up: %s", e)
        self.leading = False


def members(store: Store, ttl: float) -> list[SchedulerMember]:
    """The schedulers alive on this store (beat within twice the lease), leader first."""
    return store.leases.members(max(2 * ttl, 2 * HEARTBEAT_EVERY))


def with_members(status: dict[str, Any], store: Store, ttl: float) -> dict[str, Any]:
    """The local scheduler's status (``heartbeat.scheduler_status``) with every scheduler
    alive on the store under ``schedulers`` (empty when the store cannot say), and
    whether it is shared by several hosts (``shared``)."""
    try:
        found = members(store, ttl)
    except ScriptMonitorError:
        found = []
    return {**status, "schedulers": found, "shared": store.core.shared}


def leader(status: dict[str, Any]) -> SchedulerMember | None:
    """The leading scheduler in a status made by ``with_members``."""
    for m in status.get("schedulers", []):
        if m.role is SchedulerRole.LEADER:
            return m
    return None


def member_lines(status: dict[str, Any]) -> list[str]:
    """The schedulers of a shared store, one line each (``status``, ``list-schedules``)."""
    if not status.get("shared"):
        return []
    return [
        f"  {m.role:<8} {m.host} (pid {m.pid}), {m.config_dir}, heartbeat {m.age:.0f}s ago"
        for m in status.get("schedulers", [])
    ]
