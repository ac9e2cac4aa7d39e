"""When a passive check's next ping is due, and where the check stands: pure functions of
its configuration, its state in the history and a time (docs/MONITORING.md).

A ping is due one ``period`` after the check's newest ping, or at the first tick of its
``schedule`` after that ping (a ping up to ``EARLY`` seconds before a tick counts for
that tick: clock skew); before its first ping, the check counts from when it was first
seen.  It is late once ``grace`` seconds have passed since then without a ping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from .states import CheckStatus, PingKind

if TYPE_CHECKING:
    from .config import Check, Config
    from .store.records import CheckState, Run

EARLY = 5.0  # seconds: a ping this much before a tick counts for that tick


def due_after(config: Config, check: Check, since: float) -> float | None:
    """When the first ping after ``since`` is due (None: the schedule never fires again)."""
    if check.period is not None:
        return since + check.period
    from . import cron
    from .schedule_time import next_due

    tz = cron.resolve_timezone(config.zone_of(check))
    return next_due(cron.expand(check.schedule or ""), tz, since + EARLY)


def since_of(state: CheckState | None, now: float) -> float:
    """The time a check's next due ping counts from: its newest ping, else when first seen."""
    if state is None:
        return now
    return state.last_ping if state.last_ping is not None else state.first_seen


def deadline(config: Config, check: Check, state: CheckState | None, now: float) -> float | None:
    """When the check becomes late without a ping (None: never)."""
    due = due_after(config, check, since_of(state, now))
    return None if due is None else due + config.grace_of(check)


def started_at(state: CheckState | None) -> float | None:
    """When the start that has no end yet was pinged (None: no such start)."""
    if state is None or state.open_run_id is None or state.last_kind != PingKind.START:
        return None
    return state.last_ping


def status(
    config: Config,
    check: Check,
    state: CheckState | None,
    now: float,
    last_failed: bool = False,
) -> CheckStatus:
    """Where the check stands at ``now``; ``last_failed`` when its newest ended run failed."""
    grace = config.grace_of(check)
    started = started_at(state)
    if started is not None and now - started > grace:
        return CheckStatus.LATE  # a start without its end
    limit = deadline(config, check, state, now)
    if limit is not None and now > limit:
        return CheckStatus.LATE
    if started is not None:
        return CheckStatus.STARTED
    if state is None or state.last_ping is None:
        return CheckStatus.NEW
    return CheckStatus.DOWN if last_failed else CheckStatus.UP


class CheckView(msgspec.Struct):
    """A check as ``list``, ``status``, the dashboard, the API and the metrics show it."""

    check: Check
    state: CheckState | None
    last_run: Run | None  # its newest run
    status: CheckStatus
    next_due: float | None  # when its next ping is due
    late_at: float | None  # when it is late without one


def view(
    config: Config, check: Check, state: CheckState | None, last_run: Run | None, now: float
) -> CheckView:
    from .states import FAILURES

    failed = last_run is not None and last_run.status in FAILURES
    due = due_after(config, check, since_of(state, now))
    late_at = None if due is None else due + config.grace_of(check)
    return CheckView(
        check, state, last_run, status(config, check, state, now, failed), due, late_at
    )


def views(
    config: Config, states: dict[str, CheckState], last_runs: dict[str, Run], now: float
) -> list[CheckView]:
    """Every configured check, in configuration order."""
    return [
        view(config, c, states.get(c.name), last_runs.get(c.name), now)
        for c in config.checks.values()
    ]


def problem(v: CheckView) -> str | None:
    """What is wrong with a check, in words (``status``), or None."""
    name = v.check.name
    if v.status == CheckStatus.LATE:
        return f"check '{name}' is late: no ping within its grace of its due time"
    if v.status == CheckStatus.DOWN and v.last_run is not None:
        return f"check '{name}' reported a failure (run {v.last_run.id})"
    return None
