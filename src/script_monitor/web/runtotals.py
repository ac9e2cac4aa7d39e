"""Per-script running totals of the finished runs, the in-memory half of /metrics
(``metrics.py`` brings them up to date at each scrape and writes them out): counts by
status, the duration histogram, the last start, success and outcome, anomalies, and the
CPU and memory histograms."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from ..states import RunStatus
from ..store import DURATION_BUCKETS
from ..store.totals import CPU_BUCKETS, RSS_BUCKETS

BUCKETS = DURATION_BUCKETS
FINAL = [s.value for s in RunStatus if s is not RunStatus.RUNNING]
# Runs whose duration means something.
TIMED = {RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.INTERRUPTED}
KINDS = ("slow", "fast")  # anomaly.Anomaly values


class Totals:
    """Per-script running totals of the finished runs up to a run id."""

    def __init__(self) -> None:
        self.top = 0  # every run with an id up to here is counted or watched
        self.watched: dict[int, str] = {}  # id -> script of runs that were running
        self.counts: Counter[tuple[str, str]] = Counter()
        self.buckets: dict[str, list[int]] = {}
        self.sums: defaultdict[str, float] = defaultdict(float)
        self.timed: Counter[str] = Counter()
        self.last_started: dict[str, float] = {}
        self.last_success: dict[str, float] = {}
        self.last_final: dict[str, tuple[int, str]] = {}  # script -> (id, status)
        self.changed: set[str] = set()  # scripts whose series changed since the last render
        self.anomalies: Counter[tuple[str, str]] = Counter()  # (script, slow|fast)
        self.cpu = Histogram(CPU_BUCKETS)  # user + system seconds of measured runs
        self.rss = Histogram(RSS_BUCKETS)  # peak resident bytes of measured runs

    def update(self, data: dict[str, Any]) -> None:
        """Add what ``Store.totals.since(self.top, list(self.watched))`` found."""
        for row in data["watched"]:
            run_id, script, status, started, ended, duration = row[:6]
            if status == RunStatus.RUNNING:
                continue
            del self.watched[run_id]
            self.changed.add(script)
            self._add(
                script,
                status,
                1,
                started,
                ended,
                run_id,
                duration or 0.0,
                1 if duration is not None else 0,
                [int(duration is not None and duration <= b) for b in BUCKETS],
            )
            self._add_usage(script, usage_of_run(*row[6:]))
        fixed = 8 + len(BUCKETS)
        for row in data["groups"]:
            script, status, n, started, ended, top_id, dsum, dcount = row[:8]
            if status == RunStatus.RUNNING:
                self._started(script, started)
                continue
            counts = row[8:fixed]
            self._add(script, status, n, started, ended, top_id, dsum or 0.0, dcount, counts)
            self._add_usage(script, row[fixed:])
        for run_id, script in data["running"]:
            self.watched[run_id] = script
            self.changed.add(script)
        self.top = data["top"]

    def _add_usage(self, script: str, usage: Any) -> None:
        """Add a group's usage (``store.totals``: slow, fast, then CPU and memory)."""
        if not usage:
            return
        slow, fast = usage[0], usage[1]
        if slow:
            self.anomalies[(script, "slow")] += slow
        if fast:
            self.anomalies[(script, "fast")] += fast
        end = 4 + len(CPU_BUCKETS)
        self.cpu.add(script, usage[2], usage[3], usage[4:end])
        self.rss.add(script, usage[end], usage[end + 1], usage[end + 2 :])

    def _started(self, script: str, started: float | None) -> None:
        if started is not None and started > self.last_started.get(script, 0.0):
            self.last_started[script] = started
            self.changed.add(script)

    def _add(
        self,
        script: str,
        status: str,
        n: int,
        started: float | None,
        ended: float | None,
        top_id: int,
        dsum: float,
        dcount: int,
        counts: list[int],
    ) -> None:
        self.counts[(script, status)] += n
        self.changed.add(script)
        if status in TIMED and dcount:
            have = self.buckets.setdefault(script, [0] * len(BUCKETS))
            for i, c in enumerate(counts):
                have[i] += c or 0
            self.sums[script] += dsum
            self.timed[script] += dcount
        if status == RunStatus.SKIPPED:
            return
        self._started(script, started)
        if top_id > self.last_final.get(script, (0, ""))[0]:
            self.last_final[script] = (top_id, status)
        if status == RunStatus.SUCCESS and ended is not None:
            self.last_success[script] = max(ended, self.last_success.get(script, 0.0))


def le_label(bound: float) -> str:
    return f"{bound:g}" if bound != int(bound) else f"{int(bound)}.0"


class Histogram:
    """Per-script bucket counts, sums and counts of one measured value."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}
        self.counts: Counter[str] = Counter()

    def add(self, script: str, total: float | None, n: int | None, counts: Any) -> None:
        if not n:
            return
        have = self.buckets.setdefault(script, [0] * len(self.bounds))
        for i, c in enumerate(counts):
            have[i] += c or 0
        self.sums[script] = self.sums.get(script, 0.0) + float(total or 0.0)
        self.counts[script] += n

    def exposition(self, name: str, text: str, scripts: list[str], out: list[str]) -> None:
        """The histogram in the text format, for the scripts with a measured run (a series
        of zeros for each of thousands of scripts never measured would only weigh on
        every scrape)."""
        out.append(f"# HELP {name} {text}\n# TYPE {name} histogram\n")
        les = [le_label(b) for b in self.bounds]
        for s in scripts:
            n = self.counts.get(s, 0)
            if not n:
                continue
            label = f'{name}_bucket{{script="{s}",le="'
            out.extend(
                f'{label}{le}"}} {float(c)!r}\n' for le, c in zip(les, self.buckets[s], strict=True)
            )
            out.append(f'{label}+Inf"}} {float(n)!r}\n')
            out.append(f'{name}_count{{script="{s}"}} {float(n)!r}\n')
            out.append(f'{name}_sum{{script="{s}"}} {float(self.sums.get(s, 0.0))!r}\n')


def usage_of_run(
    anomaly: str | None, cpu_user: float | None, cpu_system: float | None, max_rss: int | None
) -> list:
    """One run's usage in the layout of a group's (``store.totals._USAGE``)."""
    cpu = None if cpu_user is None else cpu_user + (cpu_system or 0.0)
    return [
        int(anomaly == "slow"),
        int(anomaly == "fast"),
        cpu or 0.0,
        int(cpu is not None),
        *(int(cpu is not None and cpu <= b) for b in CPU_BUCKETS),
        max_rss or 0,
        int(max_rss is not None),
        *(int(max_rss is not None and max_rss <= b) for b in RSS_BUCKETS),
    ]
