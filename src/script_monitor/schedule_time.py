"""The scheduler's clock and due-time maths: pure functions of an expression and a time.

Nothing here sleeps or touches files; the daemon loop (``scheduler.py``) reads the
clock and acts on what these functions decide.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from . import cron
from .errors import ScriptMonitorError

if TYPE_CHECKING:
    from .config import Config, Group
    from .store import GroupRun

ON_TIME = 60.0  # a tick handled within this many seconds of its due time is on time
CLOCK_ENV = "SCRIPT_MONITOR_CLOCK"  # test hook: "EPOCH" or "EPOCHxSPEED"
MISSED_LIMIT = 10_000


# ---------------------------------------------------------------- clocks


class Clock:
    """Wall-clock time for the scheduler; tests may accelerate it."""

    speed = 1.0

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def real(self, seconds: float) -> float:
        """How many real seconds pass while this clock advances ``seconds``."""
        return seconds / self.speed


class AcceleratedClock(Clock):
    """A clock that starts at ``start`` and runs ``speed`` times faster than real time."""

    def __init__(self, start: float, speed: float = 1.0, anchor: float | None = None):
        self.start = start
        self.speed = speed
        self.anchor = anchor  # the real epoch time at which the clock read ``start``
        self._origin = time.monotonic()

    def now(self) -> float:
        """Simulated seconds since the epoch."""
        if self.anchor is not None:  # processes given the same anchor share one clock
            return self.start + (time.time() - self.anchor) * self.speed
        return self.start + (time.monotonic() - self._origin) * self.speed


def clock_from_env(environ: dict[str, str] | os._Environ = os.environ) -> Clock:
    """The real clock, or an accelerated one when ``SCRIPT_MONITOR_CLOCK`` is set (tests)."""
    text = environ.get(CLOCK_ENV, "").strip()
    if not text:
        return Clock()
    text, _, anchor = text.partition("@")
    start, _, speed = text.partition("x")
    try:
        return AcceleratedClock(float(start), float(speed or 1), float(anchor) if anchor else None)
    except ValueError:
        raise ScriptMonitorError(
            f"{CLOCK_ENV}: expected EPOCH, EPOCHxSPEED or EPOCHxSPEED@REAL_EPOCH, got {text!r}"
        ) from None


# ---------------------------------------------------------------- pure decisions


@dataclass
class Entry:
    """One scheduled group as the scheduler tracks it."""

    name: str
    expr: str
    zone: str
    tz: tzinfo
    last_tick: float  # every tick up to here has been handled
    next_due: float | None = None

    def __post_init__(self) -> None:
        self.next_due = next_due(self.expr, self.tz, self.last_tick)


@dataclass
class Decision:
    """What to do with the ticks found due: run one, record the others as missed."""

    run: float | None
    missed: list[float] = field(default_factory=list)
    reason: str = ""


def next_due(expr: str, tz: tzinfo, after: float) -> float | None:
    """The first fire time strictly after ``after`` (epoch seconds), or None."""
    nxt = cron.next_fire(expr, tz, datetime.fromtimestamp(after, tz))
    return nxt.timestamp() if nxt is not None else None


def due_ticks(entry: Entry, now: float) -> tuple[list[float], bool]:
    """The entry's fire times in (last_tick, now]; and whether the list was cut short."""
    if entry.next_due is None or entry.next_due > now:
        return [], False
    found, cut = cron.fires_between(
        entry.expr,
        entry.tz,
        datetime.fromtimestamp(entry.last_tick, entry.tz),
        datetime.fromtimestamp(now, entry.tz),
        MISSED_LIMIT,
    )
    return [t.timestamp() for t in found], cut


def decide(ticks: list[float], now: float, catchup: str, grace: float) -> Decision:
    """Run the latest tick when on time (or, with catchup: latest, within grace)."""
    if not ticks:
        return Decision(None)
    latest = ticks[-1]
    late = now - latest
    if late <= ON_TIME:
        return Decision(latest, ticks[:-1], "only the latest tick is run")
    if catchup == "latest" and late <= grace:
        return Decision(latest, ticks[:-1], "catchup: latest runs only the latest tick")
    if catchup == "latest":
        why = f"older than scheduling.catchup_grace ({grace:g}s)"
    else:
        why = "catchup: skip"
    return Decision(None, ticks, why)


def overlap_action(policy: str, running: int, queued: bool) -> str:
    """'start', 'queue' or 'skip' for a tick of a group with ``running`` runs going."""
    if running == 0 or policy == "allow":
        return "start"
    if policy == "queue" and not queued:
        return "queue"
    return "skip"


# ---------------------------------------------------------------- scheduled groups


def scheduled_groups(config: Config) -> list[Group]:
    """The groups with a ``schedule``, in configuration order."""
    return [g for g in config.groups.values() if g.schedule]


def schedule_row(
    config: Config, group: Group, last: GroupRun | None, now: datetime
) -> dict[str, Any]:
    """A scheduled group's expression, time zone and next fire time after ``now``."""
    zone = config.zone_of(group)
    tz = cron.resolve_timezone(zone)
    return {
        "name": group.name,
        "schedule": group.schedule,
        "expression": cron.expand(group.schedule or ""),
        "timezone": zone,
        "tz": tz,
        "next": cron.next_fire(group.schedule or "", tz, now),
        "last": last,
    }


def schedule_rows(config: Config, last: dict[str, GroupRun], now: datetime) -> list[dict[str, Any]]:
    """Every scheduled group with its next fire time and last run (``last`` by group name):
    ``list-schedules``, ``status``, the dashboard, the API and the metrics."""
    return [schedule_row(config, g, last.get(g.name), now) for g in scheduled_groups(config)]
