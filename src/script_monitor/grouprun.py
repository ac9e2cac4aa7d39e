"""One group run as a whole: its row, every attempt of its scripts, the reasons of the
skipped ones, who started it and the group's dependency edges — what
``history --group NAME``, ``GET /api/v1/group-runs/{id}`` and the group-run page show
(docs/JSON.md, "group run").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from .states import AuditAction, AuditResult, RunStatus

if TYPE_CHECKING:
    from .config import Config
    from .store import GroupRun, Run, Store

LAUNCH_WINDOW = 30.0  # seconds between a launch's audit row and the group run it started


class GroupRunReport(msgspec.Struct):
    """A group run and everything about it that the history holds."""

    run: GroupRun
    runs: list[Run]  # every attempt, in the order they were recorded
    scripts: list[str]  # the members: the configured order, then any other that ran
    edges: list[tuple[str, str]]  # (dependency, dependent), from the configuration
    started_by: str | None  # the web token's name when the audit trail recorded it

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(script, reason) of each script that never started."""
        return [(r.script, r.detail or "") for r in self.runs if r.status is RunStatus.SKIPPED]

    @property
    def process(self) -> str:
        """The process that ran it, as "pid N on HOST" (the owner's text otherwise)."""
        parts = self.run.owner.split("|")
        if len(parts) == 4 and parts[2].isdigit():
            return f"pid {parts[2]} on {parts[0]}"
        return self.run.owner

    @property
    def duration(self) -> float | None:
        return None if self.run.ended is None else max(0.0, self.run.ended - self.run.started)


def gather(config: Config, store: Store, group_run_id: int) -> GroupRunReport | None:
    """The report of group run ``group_run_id``; None when there is none."""
    row = store.runs.group_run(group_run_id)
    if row is None:
        return None
    runs = store.runs.runs_of_group_run(group_run_id)
    group = config.groups.get(row.group_name)
    scripts = list(group.scripts) if group is not None else []
    for r in runs:
        if r.script not in scripts:
            scripts.append(r.script)
    edges = [(dep, m) for m in group.scripts for dep in group.needs(m)] if group is not None else []
    return GroupRunReport(row, runs, scripts, edges, _started_by(store, row))


def latest_id(store: Store, group: str) -> int | None:
    """The id of the group's newest run, None when it never ran."""
    newest = store.runs.group_history(group, 1)
    return newest[0].id if newest else None


def _started_by(store: Store, row: GroupRun) -> str | None:
    """The name of the web token whose accepted launch started a run with trigger
    ``api``: the newest such audit row for the group at most LAUNCH_WINDOW before it."""
    if row.trigger != "api":
        return None
    target = f"group:{row.group_name}"
    try:
        rows = store.audit.rows(row.started - LAUNCH_WINDOW, 200)
    except Exception:  # an old or unreachable audit table: not known
        return None
    found = [
        a
        for a in rows
        if a.target == target
        and a.action == AuditAction.LAUNCH
        and a.result == AuditResult.ACCEPTED
        and a.at <= row.started + 1.0
    ]
    return found[-1].token_name if found else None
