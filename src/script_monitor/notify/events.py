"""Which events a finished run unit fires, and the messages they record (docs/NOTIFICATIONS.md).

A run unit is a group run (``run-group``, the scheduler, ``run-all`` as ``(all)``) or
a single ``run NAME``: one unit sends at most one message per event and channel,
listing every failed script; it is told once it has ended (after its last attempt).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..states import FAILURES, RunStatus
from ..store.records import NewMessage
from . import message
from .message import Entry, Unit
from .spec import spec_for

if TYPE_CHECKING:
    from ..config import Config
    from ..store import Store


def unit_of(outcome: Any, unit: str | None = None, trigger: str = "manual") -> Unit:
    """A Unit from the engine's GroupResult or RunResult."""
    if hasattr(outcome, "results"):
        entries = [
            Entry(
                r.script,
                r.status,
                r.exit_code,
                r.duration if r.status != RunStatus.SKIPPED else None,
                r.run_id,
                str(r.log_path) if r.log_path else None,
                r.detail,
                r.anomaly,
            )
            for r in outcome.results
        ]
        return Unit(
            unit or outcome.name, "group", outcome.group_run_id, outcome.status, trigger, entries
        )
    entry = Entry(
        outcome.script,
        outcome.status,
        outcome.exit_code,
        outcome.duration,
        outcome.run_id,
        str(outcome.log_path) if outcome.log_path else None,
        outcome.detail,
        outcome.anomaly,
    )
    return Unit(unit or outcome.script, "script", outcome.run_id, outcome.status, trigger, [entry])


def record_unit(config: Config, store: Store, unit: Unit) -> list[int]:
    """Record the messages of the events a finished unit fires; return the ids of those
    not recorded before."""
    rows = unit_rows(config, store, unit)
    return store.outbox.add(rows) if rows else []


def unit_rows(config: Config, store: Store, unit: Unit) -> list[NewMessage]:
    """The messages of the events a finished unit fires."""
    spec = spec_for(config, unit.kind, unit.name)
    if spec is None or unit.ref_id is None:
        return []
    channels, on = spec
    failed = [e for e in unit.entries if e.status in FAILURES]
    rows: list[NewMessage] = []
    mask = None
    if failed and "failure" in on:
        from .channels import masker

        mask = masker(config)
        rows += _rows(unit, "failure", channels, message.failure_body(config, unit, mask))
    ok = bool(unit.entries) and all(e.status == RunStatus.SUCCESS for e in unit.entries)
    if (
        ok
        and "recovery" in on
        and store.outbox.last_unit_event(unit.name, ("failure", "recovery")) == ("failure")
    ):
        rows += _rows(unit, "recovery", channels, message.success_body(unit, "recovery"))
    if ok and "success" in on:
        rows += _rows(unit, "success", channels, message.success_body(unit, "success"))
    if "output" in on:
        rows += _output_rows(config, store, unit, channels)
    if "anomaly" in on:
        rows += _anomaly_rows(config, store, unit, channels)
    return rows


def _anomaly_rows(
    config: Config, store: Store, unit: Unit, channels: list[str]
) -> list[NewMessage]:
    """One message per run whose duration left its script's band (keyed by the run, so
    each anomalous run is told once)."""
    rows: list[NewMessage] = []
    for e in unit.entries:
        script = config.scripts.get(e.script)
        if not e.anomaly or e.run_id is None or script is None:
            continue
        rule = config.anomaly_for(script)
        band = store.runs.duration_band(
            e.script, rule.window, rule.min_runs, rule.slow, rule.fast, e.run_id
        )
        body = message.anomaly_body(config, unit, e, band)
        rows += _rows(unit, "anomaly", channels, body, ref=f"r{e.run_id}")
    return rows


def _output_rows(config: Config, store: Store, unit: Unit, channels: list[str]) -> list[NewMessage]:
    watched = [
        e.run_id
        for e in unit.entries
        if e.run_id is not None and getattr(config.scripts.get(e.script), "alerts", None)
    ]
    if not watched:
        return []
    matches, counts = store.alerts.first(watched, message.ALERT_LINES)
    if not matches:
        return []
    return _rows(unit, "output", channels, message.output_body(config, unit, matches, counts))


def _rows(
    unit: Unit, event: str, channels: list[str], body: str, ref: str | None = None
) -> list[NewMessage]:
    ref = ref or unit.ref
    title = message.title(unit.name, event)
    return [
        NewMessage(
            key=f"{event}|{ref}|{c}",
            event=event,
            unit=unit.name,
            ref=ref,
            run_id=unit.ref_id,
            channel=c,
            title=title,
            body=body,
        )
        for c in channels
    ]


def event_rows(
    config: Config, kind: str, unit_name: str, event: str, ref: str, body: str
) -> list[NewMessage]:
    """The messages of a watchdog event (missed, overdue, scheduler down) for a unit."""
    spec = spec_for(config, kind, unit_name)
    if spec is None or event not in spec[1]:
        return []
    unit = Unit(unit_name, kind, None, RunStatus.RUNNING)
    return _rows(unit, event, spec[0], body, ref=ref)


def lost_units(config: Config, store: Store, runs: list[int], groups: list[int]) -> list[Unit]:
    """The run units that runs just marked lost belong to: each lost group run, and each
    lost run that was not part of a group."""
    units = []
    for gid in groups:
        group = store.runs.group_run(gid)
        if group is None:
            continue
        rows = store.runs.runs_of_group_run(gid)
        entries = message.entries_from_rows(config, rows)
        units.append(Unit(group.group_name, "group", gid, RunStatus.LOST, group.trigger, entries))
    for rid in runs:
        row = store.runs.run(rid)
        if row is None or row.group_run_id is not None:
            continue
        entries = message.entries_from_rows(config, [row])
        units.append(Unit(row.script, "script", rid, RunStatus.LOST, row.trigger, entries))
    return units
