"""Prometheus metrics counted from the history (docs/WEB.md), so runs made by any
process count, and counters never go down.

The totals are kept in memory (``runtotals.Totals``) and brought up to date at each
scrape from the runs added since the last one (``Store.totals.since``: one GROUP BY over
the new id range) and the runs that were still running then.  A finished run's row
never changes, so nothing is counted twice.  A new server starts from the totals the
history keeps up to a run id (rolled forward by the scheduler and by pruning), so
neither the first scrape of ten million runs nor pruning old ones costs a full scan or
lowers a counter.  A history that shrank (moved aside, replaced) starts the totals
afresh, which Prometheus sees as a counter reset.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from ..states import RunStatus
from .runtotals import BUCKETS, FINAL, KINDS, Totals, le_label
from .service import Payload, Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def usage_exposition(t: Totals, scripts: list[str]) -> bytes:
    """The anomaly counter and the CPU and memory histograms in the text format, written
    here rather than by prometheus_client: at thousands of scripts they are most of the
    samples, and its writer costs several times this per sample.  Script names need no
    escaping (config.NAME_PATTERN: letters, digits, ``_.-``)."""
    name = "script_monitor_run_anomalies_total"
    out = [
        f"# HELP {name} Successful runs whose duration left the script's usual band, by kind"
        f" (slow, fast).\n# TYPE {name} counter\n"
    ]
    for s in scripts:
        for kind in KINDS:
            out.append(
                f'{name}{{script="{s}",kind="{kind}"}} {float(t.anomalies.get((s, kind), 0))!r}\n'
            )
    t.cpu.exposition(
        "script_monitor_run_cpu_seconds",
        "CPU seconds (user + system) of each finished run's process tree.",
        scripts,
        out,
    )
    t.rss.exposition(
        "script_monitor_run_max_rss_bytes",
        "Peak resident memory of each finished run's largest process, in bytes.",
        scripts,
        out,
    )
    return "".join(out).encode()


# The per-script families: (name as exposed, type, help). Their samples are rendered by
# ``ScriptSeries`` in prometheus_client's text format, one script at a time.
SCRIPT_FAMILIES = (
    (
        "script_monitor_runs_total",
        "counter",
        "Finished runs by script and status (skipped included).",
    ),
    (
        "script_monitor_run_duration_seconds",
        "histogram",
        "Duration of finished runs that ran (success, failed, timeout, interrupted).",
    ),
    (
        "script_monitor_last_run_timestamp_seconds",
        "gauge",
        "Start of the latest run (0: never).",
    ),
    (
        "script_monitor_last_success_timestamp_seconds",
        "gauge",
        "End of the latest successful run (0: never).",
    ),
    (
        "script_monitor_last_run_success",
        "gauge",
        "1 if the latest finished run succeeded, else 0 (also never run).",
    ),
    ("script_monitor_running", "gauge", "Runs in progress."),
)
BUCKET_LABELS = [f'le="{b}",' for b in (*map(le_label, BUCKETS), "+Inf")]


class ScriptSeries:
    """The per-script families' text, kept per script and re-rendered only for the
    scripts whose totals changed: a scrape after one new run renders one script's lines,
    not the hundreds of thousands of samples of a large configuration."""

    def __init__(self) -> None:
        self.texts: dict[str, tuple[str, ...]] = {}  # script -> its lines in each family
        self.running: Counter[str] = Counter()

    def render(self, totals: Totals, scripts: list[str]) -> str:
        running = Counter(totals.watched.values())
        stale = totals.changed | {
            s for s in running.keys() | self.running.keys() if running[s] != self.running[s]
        }
        totals.changed = set()
        self.running = running
        texts = self.texts
        for s in scripts:
            if s in stale or s not in texts:
                texts[s] = _script_lines(s, totals, running[s])
        out = []
        for i, (name, kind, text) in enumerate(SCRIPT_FAMILIES):
            out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")
            out.extend(texts[s][i] for s in scripts)
        if len(texts) > 2 * len(scripts):  # scripts removed from the configuration
            self.texts = {s: texts[s] for s in scripts}
        return "".join(out)


def _script_lines(s: str, t: Totals, running: int) -> tuple[str, ...]:
    """One script's samples in each of ``SCRIPT_FAMILIES``, as prometheus_client writes
    them (labels sorted by name, values as Go prints floats)."""
    label = f'script="{_escape(s)}"'
    runs = "".join(
        f'script_monitor_runs_total{{{label},status="{status}"}} '
        f"{floatToGoString(t.counts.get((s, status), 0))}\n"
        for status in FINAL
    )
    counts = t.buckets.get(s, [0] * len(BUCKETS))
    timed = t.timed.get(s, 0)
    name = "script_monitor_run_duration_seconds"
    hist = "".join(
        f"{name}_bucket{{{le}{label}}} {floatToGoString(c)}\n"
        for le, c in zip(BUCKET_LABELS, [*counts, timed], strict=True)
    )
    hist += (
        f"{name}_count{{{label}}} {floatToGoString(timed)}\n"
        f"{name}_sum{{{label}}} {floatToGoString(t.sums.get(s, 0.0))}\n"
    )
    ok = 1.0 if t.last_final.get(s, (0, ""))[1] == RunStatus.SUCCESS else 0
    gauges = (
        ("script_monitor_last_run_timestamp_seconds", t.last_started.get(s, 0.0)),
        ("script_monitor_last_success_timestamp_seconds", t.last_success.get(s, 0.0)),
        ("script_monitor_last_run_success", ok),
        ("script_monitor_running", running),
    )
    return (
        runs,
        hist,
        *(f"{g}{{{label}}} {floatToGoString(v)}\n" for g, v in gauges),
    )


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class StoreCollector:
    """A prometheus_client collector over the Totals and the configuration."""

    def __init__(self, service: Service):
        self.service = service
        self.totals = Totals()
        self.series = ScriptSeries()

    def update(self) -> None:
        store = self.service.store
        data = store.totals.since(self.totals.top, list(self.totals.watched))
        if data["top"] < self.totals.top:  # the history was replaced: count afresh
            self.totals = Totals()
            self.series = ScriptSeries()
            data = store.totals.since(0, [])
        self.totals.update(data)

    def collect(self) -> Iterator[Metric]:
        """The families beyond the per-script ones (``ScriptSeries`` renders those)."""
        yield from self._groups()
        yield self._next_runs()
        yield self._heartbeat()
        yield self._schedulers()
        yield self._notifications()
        yield self._refusals()
        yield from self._checks()

    def _checks(self) -> Iterator[Metric]:
        """Each passive check: its newest ping, when the next is due, where it stands."""
        from ..states import CheckStatus
        from .ping import views

        last = GaugeMetricFamily(
            "script_monitor_check_last_ping_timestamp_seconds",
            "When the check's newest ping came (0: never).",
            labels=["check"],
        )
        due = GaugeMetricFamily(
            "script_monitor_check_next_due_timestamp_seconds",
            "When the check's next ping is due (no sample: its schedule never fires again).",
            labels=["check"],
        )
        status = GaugeMetricFamily(
            "script_monitor_check_status",
            "1 for the check's status (new, up, started, down, late), 0 for the others.",
            labels=["check", "status"],
        )
        pings = CounterMetricFamily(
            "script_monitor_check_pings", "Pings the check has received.", labels=["check"]
        )
        for v in views(self.service):
            name = v.check.name
            last.add_metric([name], (v.state.last_ping or 0.0) if v.state else 0.0)
            if v.next_due is not None:
                due.add_metric([name], v.next_due)
            for s in CheckStatus:
                status.add_metric([name, s.value], 1.0 if v.status is s else 0.0)
            pings.add_metric([name], v.state.pings if v.state else 0)
        yield from (last, due, status, pings)

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

    def _groups(self) -> Iterator[GaugeMetricFamily]:
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
        # next-run times move on as time passes, and checks become late
        minute = int(time.time() // (10 if self.service.config.checks else 60))
        return self.service.cached("metrics", self._render, extra=(beat, minute))

    def _render(self) -> Payload:
        with self.lock:
            self.collector.update()
            collector = self.collector
            config = self.service.config
            names = [*config.scripts, *config.checks]  # a check's pings are its runs
            scripts = collector.series.render(collector.totals, names)
            usage = usage_exposition(collector.totals, names)
            return Payload(scripts.encode() + generate_latest(self.registry) + usage, CONTENT_TYPE)
