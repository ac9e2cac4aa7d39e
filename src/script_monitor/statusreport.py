"""The facts of ``status`` (what is going on now, and the problems among them) and the
other lists the web's status page shows beside them: the watchdog's findings, the
notification outbox and recent output alerts.  Read by ``commands.status`` and by the
web server alike, so the two never disagree (docs/CONTRACT.md, ``status``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .states import FAILURES, MessageState

if TYPE_CHECKING:
    from .config import Config
    from .store import Store

FAILURE_WINDOW = 24 * 3600.0  # "latest failures" looks this far back
FAILURE_LIMIT = 5


def gather(config: Config, store: Store, now: float) -> dict[str, Any]:
    """Every fact ``status`` shows, and the problems among them."""
    from .heartbeat import LOCK_FILE, scheduler_status
    from .leadership import leader, with_members
    from .schedule_time import schedule_rows, scheduled_groups

    store.runs.reap_lost()
    scheduled = scheduled_groups(config)
    rows = schedule_rows(config, store.reads.last_group_runs(), datetime.fromtimestamp(now, UTC))
    far = datetime.max.replace(tzinfo=UTC)
    rows.sort(key=lambda r: (r["next"] or far, r["name"]))
    ttl = config.settings.scheduling.lease_ttl
    status = with_members(scheduler_status(config.state_dir, now), store, ttl)
    enabled = config.settings.scheduling.enabled
    problems = []
    finished = store.reads.last_ended_group_runs("schedule")
    for g in scheduled:
        run = finished.get(g.name)
        if run is not None and run.status in FAILURES:
            problems.append(
                f"the latest scheduled run of group '{g.name}' {run.status}"
                f" (group run {run.id}, {_clock(config, run.started)})"
            )
    ran_before = (config.state_dir / LOCK_FILE).exists()  # only a scheduler creates it
    elsewhere = status["shared"] and leader(status) is not None  # another host leads
    if (
        scheduled
        and enabled
        and ran_before
        and not elsewhere
        and (not status["running"] or status["stale"])
    ):
        problems.append(
            "the scheduler is not running"
            if not status["running"]
            else "the scheduler's heartbeat is stale: it may be hung"
        )
    checks = []
    if config.checks:
        from .check_time import problem, views

        checks = views(config, store.checks.states(), store.reads.last_runs(), now)
        problems += [p for v in checks if (p := problem(v))]
    return {
        "now": now,
        "config": config,
        "checks": checks,
        "scheduler": status,
        "enabled": enabled,
        "scheduled": bool(scheduled),
        "ran_before": ran_before,
        "running": store.reads.running_runs(),
        "failures": store.reads.recent_runs(sorted(FAILURES), now - FAILURE_WINDOW, FAILURE_LIMIT),
        "next_runs": rows,
        "problems": problems,
    }


def _clock(config: Config, ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime(config.settings.display.date_format)


OUTBOX_ROWS = 200  # recent messages the outbox summary looks at
ALERT_ROWS = 50
WATCH_ROWS = 50


def outbox(store: Store) -> dict[str, Any]:
    """The notification outbox: counts by channel and state, the messages not delivered
    (pending or failed) among the recent ones, and each channel's newest error."""
    counts: dict[str, dict[str, int]] = {}
    for channel, state, n in store.outbox.counts():
        counts.setdefault(channel, {})[str(state)] = int(n)
    recent = store.outbox.messages(OUTBOX_ROWS)
    undelivered = [m for m in recent if m.state in (MessageState.PENDING, MessageState.FAILED)]
    last_error: dict[str, Any] = {}
    for m in recent:  # newest first: the first error seen per channel is its last
        if m.last_error and m.channel not in last_error:
            last_error[m.channel] = m
    return {"counts": counts, "undelivered": undelivered, "last_error": last_error}


def extras(store: Store) -> dict[str, Any]:
    """What the status page shows beside ``gather``'s facts."""
    return {
        "watchdog": store.watch.events(WATCH_ROWS),
        "outbox": outbox(store),
        "alerts": store.alerts.matches(None, ALERT_ROWS),
        "checked": time.time(),
    }
