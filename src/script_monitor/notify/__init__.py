"""Notifications (docs/NOTIFICATIONS.md): events of finished run units, recorded in an outbox in the
store and delivered through Apprise channels.

This module is imported after every run, so it imports nothing heavy: without a
configured channel ``unit_finished`` returns at once, and Apprise is loaded only when
a message is actually sent.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from ..states import FAILURES, RunStatus
from .spec import spec_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import Config
    from ..store import Store


def unit_finished(
    config: Config,
    store: Store,
    outcome: Any,
    unit: str | None = None,
    trigger: str = "manual",
    wait: bool = True,
) -> None:
    """A run unit ended: record the messages its events fire, then deliver what is due.

    ``outcome`` is the engine's GroupResult (``unit`` names it, e.g. ``(all)``) or
    RunResult.  With ``wait`` the caller waits at most ``notifications.timeout`` for
    delivery; the scheduler does not wait.  Never raises: a notification problem
    never changes a run's result or the exit code.
    """
    if not config.settings.notifications.channels:
        return
    try:
        new = []
        if _may_fire(config, store, outcome, unit):  # else nothing more is imported
            from .events import record_unit, unit_of

            new = record_unit(config, store, unit_of(outcome, unit, trigger))
        if new or store.outbox.due(time.time()):
            deliver(config, store, wait)
    except Exception as e:
        _warn(e)


def unit_messages(
    config: Config, store: Store, outcome: Any, unit: str | None = None, trigger: str = "manual"
) -> list[Any]:
    """The messages a finished unit fires, built but not recorded: the engine records a
    group run's in the transaction that ends it, so that no orchestrator killed between
    the two leaves a failure untold (``unit_finished`` then finds them recorded and
    delivers them).  Never raises."""
    if not config.settings.notifications.channels:
        return []
    try:
        if not _may_fire(config, store, outcome, unit):
            return []
        from .events import unit_of, unit_rows

        return unit_rows(config, store, unit_of(outcome, unit, trigger))
    except Exception as e:
        _warn(e)
        return []


def _may_fire(config: Config, store: Store, outcome: Any, unit: str | None) -> bool:
    """Whether a finished unit may fire an event (events.record_unit decides which)."""
    group = hasattr(outcome, "results")
    name = unit or (outcome.name if group else outcome.script)
    spec = spec_for(config, "group" if group else "script", name)
    if spec is None:
        return False
    on = spec[1]
    results = outcome.results if group else [outcome]
    if "anomaly" in on and any(getattr(r, "anomaly", None) for r in results):
        return True
    if any(r.status in FAILURES for r in results):
        return "failure" in on
    ok = bool(results) and all(r.status == RunStatus.SUCCESS for r in results)
    if "output" in on and any(
        getattr(config.scripts.get(r.script), "alerts", None) for r in results
    ):
        return True
    if ok and "success" in on:
        return True
    return (
        ok
        and "recovery" in on
        and (store.outbox.last_unit_event(name, ("failure", "recovery")) == "failure")
    )


def deliver(config: Config, store: Store, wait: bool = True, force: bool = False) -> bool:
    """Deliver due messages (``force``: every pending one) on the delivery thread; with
    ``wait``, wait for it at most ``notifications.timeout``.  True when it ended."""
    from .outbox import COURIER

    COURIER.start(config, store, force)
    if wait:
        return COURIER.wait(config.settings.notifications.timeout)
    return False


def settle(config: Config) -> bool:
    """A long-running process (scheduler, web server) is stopping: let delivery go on
    at most ``notifications.timeout``, wait for a send under way and the record of its
    answer, and start none after.  True when nothing was left in flight."""
    from .outbox import COURIER

    return COURIER.wait(config.settings.notifications.timeout, final=True)


def lost_hook(
    config: Config, store: Store, wait: bool = True
) -> Callable[[list[int], list[int]], None]:
    """What ``Store.reap_lost`` calls with the runs it marked lost: notify ``failure``
    (with ``wait``, the finding command waits for delivery, bounded: it is rare)."""

    def on_lost(runs: list[int], groups: list[int]) -> None:
        try:
            from .events import lost_units, record_unit

            new = []
            for unit in lost_units(config, store, runs, groups):
                new += record_unit(config, store, unit)
            if new:
                deliver(config, store, wait)
        except Exception as e:
            _warn(e)

    return on_lost


def watch_store(config: Config, store: Store, wait: bool = True) -> Store:
    """Let ``store`` notify the runs it finds lost (only when channels are configured)."""
    channels = config.settings.notifications.channels
    store.runs.on_lost = lost_hook(config, store, wait) if channels else None
    return store


def _warn(e: Exception) -> None:
    try:
        print(f"script-monitor: notifications: {e}", file=sys.stderr)
    except (OSError, ValueError):
        pass
