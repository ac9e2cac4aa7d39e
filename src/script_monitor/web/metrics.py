"""Prometheus metrics counted from the history (docs/WEB.md), so runs made by any
process count, and counters never go down.

The totals are kept in memory and brought up to date at each scrape from the runs
added since the last one (``Store.totals.since``: one GROUP BY over the new id range)
and the runs that were still running then.  A finished run's row never changes, so
nothing is counted twice.  A new server starts from the totals the history keeps up
to a run id (rolled forward by the scheduler and by pruning), so neither the first
scrape of ten million runs nor pruning old ones costs a full scan or lowers a
counter.  A history that shrank (moved aside, replaced) starts the totals afresh,
which Prometheus sees as a counter reset.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from ..states import RunStatus
from ..store import DURATION_BUCKETS
from .service import Payload, Service

BUCKETS = DURATION_BUCKETS
FINAL = [s.value for s in RunStatus if s is not RunStatus.RUNNING]
# Runs whose duration means something.
TIMED = {RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.INTERRUPTED}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Totals:
    """Per-script running totals of the finished runs up to a run id."""

    def __init__(self) -> None:
        self.top = 0  # every run with an id up to here is counted or watched
        self.watched: dict[int, str] = {}  # id -> script of runs that were running
        self.counts: Counter[tuple[str, str]] = Counter()
        self.buckets: dict[str, list[int]] = {}
        self.sums: Counter[str] = Counter()
        self.timed: Counter[str] = Counter()
        self.last_started: dict[str, float] = {}
        self.last_success: dict[str, float] = {}
        self.last_final: dict[str, tuple[int, str]] = {}  # script -> (id, status)

    def update(self, data: dict[str, Any]) -> None:
        """Add what ``Store.run_totals(self.top, list(self.watched), BUCKETS)`` found."""
        for run_id, script, status, started, ended, duration in data["watched"]:
            if status == RunStatus.RUNNING:
                continue
            del self.watched[run_id]
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
        for script, status, n, started, ended, top_id, dsum, dcount, *counts in data["groups"]:
            if status == RunStatus.RUNNING:
                self._started(script, started)
                continue
            self._add(script, status, n, started, ended, top_id, dsum or 0.0, dcount, counts)
        for run_id, script in data["running"]:
            self.watched[run_id] = script
        self.top = data["top"]

    def _started(self, script: str, started: float | None) -> None:
        if started is not None and started > self.last_started.get(script, 0.0):
            self.last_started[script] = started

    def _add(self, script, status, n, started, ended, top_id, dsum, dcount, counts) -> None:
        self.counts[(script, status)] += n
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


class StoreCollector:
    """A prometheus_client collector over the Totals and the configuration."""

    def __init__(self, service: Service):
        self.service = service
        self.totals = Totals()

    def update(self) -> None:
        store = self.service.store
        data = store.totals.since(self.totals.top, list(self.totals.watched))
        if data["top"] < self.totals.top:  # the history was replaced: count afresh
            self.totals = Totals()
            data = store.totals.since(0, [])
        self.totals.update(data)

    def collect(self):
        t = self.totals
        config = self.service.config
        scripts = list(config.scripts)
        runs = CounterMetricFamily(
            "script_monitor_runs",
            "Finished runs by script and status (skipped included).",
            labels=["script", "status"],
        )
        hist = HistogramMetricFamily(
            "script_monitor_run_duration_seconds",
            "Duration of finished runs that ran (success, failed, timeout, interrupted).",
            labels=["script"],
        )
        last_run = _gauge("last_run_timestamp_seconds", "Start of the latest run (0: never).")
        last_ok = _gauge(
            "last_success_timestamp_seconds", "End of the latest successful run (0: never)."
        )
        last_result = _gauge(
            "last_run_success", "1 if the latest finished run succeeded, else 0 (also never run)."
        )
        running = _gauge("running", "Runs in progress.")
        now_running = Counter(t.watched.values())
        for s in scripts:
            for status in FINAL:
                runs.add_metric([s, status], t.counts.get((s, status), 0))
            counts = t.buckets.get(s, [0] * len(BUCKETS))
            hist.add_metric(
                [s],
                [
                    *((_le(b), c) for b, c in zip(BUCKETS, counts, strict=True)),
                    ("+Inf", t.timed.get(s, 0)),
                ],
                t.sums.get(s, 0.0),
            )
            last_run.add_metric([s], t.last_started.get(s, 0.0))
            last_ok.add_metric([s], t.last_success.get(s, 0.0))
            last_result.add_metric(
                [s], 1.0 if t.last_final.get(s, (0, ""))[1] == RunStatus.SUCCESS else 0
            )
            running.add_metric([s], now_running.get(s, 0))
        yield from (runs, hist, last_run, last_ok, last_result, running)
        yield from self._groups()
        yield self._next_runs()
        yield self._heartbeat()
        yield self._schedulers()
        yield self._notifications()
        yield self._refusals()

    def _refusals(self) -> CounterMetricFamily:
        from ..states import Refusal

        family = CounterMetricFamily(
            "script_monitor_web_refusals",
            "Requests the web server refused, by reason (from the audit trail).",
            labels=["reason"],
        )
        counts = self.service.store.audit.refusals()
        for reason in sorted({*map(str, Refusal), *counts}):
            family.add_metric([reason], counts.get(reason, 0))
        return family

    def _groups(self):
        """Each configured group's latest finished run (beyond the per-script series: for alerts on
        a failing group)."""
        success = GaugeMetricFamily(
            "script_monitor_group_last_run_success",
            "1 if the group's latest finished run succeeded, else 0 (also never run).",
            labels=["group"],
        )
        when = GaugeMetricFamily(
            "script_monitor_group_last_run_timestamp_seconds",
            "Start of the group's latest finished run (0: never).",
            labels=["group"],
        )
        last = self.service.store.reads.last_ended_group_runs()
        for name in self.service.config.groups:
            run = last.get(name)
            success.add_metric([name], 1.0 if run and run.status == RunStatus.SUCCESS else 0.0)
            when.add_metric([name], run.started if run else 0.0)
        yield success
        yield when

    def _next_runs(self) -> GaugeMetricFamily:
        from ..schedule_time import schedule_rows

        family = GaugeMetricFamily(
            "script_monitor_group_next_run_timestamp_seconds",
            "When the scheduler next starts the group (scheduled groups, scheduling enabled).",
            labels=["group"],
        )
        config = self.service.config
        if config.settings.scheduling.enabled:
            for row in schedule_rows(config, {}, datetime.now(UTC)):
                if row["next"] is not None:
                    family.add_metric([row["name"]], row["next"].timestamp())
        return family

    def _heartbeat(self) -> GaugeMetricFamily:
        from ..heartbeat import read_heartbeat

        family = GaugeMetricFamily(
            "script_monitor_scheduler_heartbeat_timestamp_seconds",
            "The scheduler's last heartbeat (no sample when none has been written).",
        )
        beat = read_heartbeat(self.service.config.state_dir) or {}
        if isinstance(beat.get("updated"), int | float):
            family.add_metric([], beat["updated"])
        return family

    def _schedulers(self) -> GaugeMetricFamily:
        from ..leadership import members

        family = GaugeMetricFamily(
            "script_monitor_scheduler_up",
            "1 for each scheduler alive on the store, by host, pid and role (leader or standby).",
            labels=["host", "pid", "role"],
        )
        ttl = self.service.config.settings.scheduling.lease_ttl
        for m in members(self.service.store, ttl):
            family.add_metric([m.host, str(m.pid), m.role.value], 1)
        return family

    def _notifications(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "script_monitor_notifications_total",
            "Notification messages by channel and delivery state (pending, sent, failed).",
            labels=["channel", "state"],
        )
        for channel, state, n in self.service.store.outbox.counts():
            family.add_metric([str(channel), str(state)], n)
        return family


def _gauge(name: str, text: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"script_monitor_{name}", text, labels=["script"])


def _le(bound: float) -> str:
    return f"{bound:g}" if bound != int(bound) else f"{int(bound)}.0"


class Metrics:
    """The /metrics body: rendered at most once per change of the data (or minute)."""

    def __init__(self, service: Service):
        self.service = service
        self.collector = StoreCollector(service)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.lock = threading.Lock()

    def payload(self) -> Payload:
        from ..heartbeat import HEARTBEAT_FILE

        try:
            beat = (self.service.config.state_dir / HEARTBEAT_FILE).stat().st_mtime_ns
        except OSError:
            beat = None
        minute = int(time.time() // 60)  # next-run times move on as time passes
        return self.service.cached("metrics", self._render, extra=(beat, minute))

    def _render(self) -> Payload:
        with self.lock:
            self.collector.update()
            return Payload(generate_latest(self.registry), CONTENT_TYPE)
