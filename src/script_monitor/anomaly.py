"""The band of a script's usual durations, and whether a run falls outside it.

Pure functions over numbers: the engine uses them to mark a finished run ``slow`` or
``fast``, the watchdog to learn an ``overdue`` limit, and the web chart to draw the
band (docs/MONITORING.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import msgspec


class Anomaly(StrEnum):
    """How a successful run's duration left the usual band."""

    SLOW = "slow"
    FAST = "fast"


class Band(msgspec.Struct, frozen=True):
    """The median of the recent successful durations and the limits around it."""

    median: float
    low: float  # ``fast ×`` the median: a run quicker than this is ``fast``
    high: float  # ``slow ×`` the median: a run slower than this is ``slow``
    runs: int  # how many durations the median was taken over


def duration_band(
    durations: Iterable[float],
    *,
    slow: float = 3.0,
    fast: float = 0.2,
    min_runs: int = 10,
) -> Band | None:
    """The band over ``durations`` (the last ``window`` successful runs), or None
    while fewer than ``min_runs`` of them exist."""
    values = [d for d in durations if d is not None and d >= 0]
    n = len(values)
    if not n or n < min_runs:
        return None
    median = _median(values)
    return Band(median=median, low=median * fast, high=median * slow, runs=n)


def _median(values: list[float]) -> float:
    """The median, as ``statistics.median`` gives it (that module costs a run's start-up
    more than this costs a thousand runs)."""
    values.sort()
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def classify(duration: float, band: Band | None) -> Anomaly | None:
    """``slow`` above the band, ``fast`` below it, None inside it or without a band."""
    if band is None:
        return None
    if duration > band.high:
        return Anomaly.SLOW
    if duration < band.low:
        return Anomaly.FAST
    return None
