"""The JSON shapes of runs, scripts, groups and schedules: one serializer for every
``--json`` output of the CLI and for the web API, so the two never disagree.

Each function takes the configuration and rows as the store returns them and gives
plain dicts ready for ``json.dumps``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config

SCHEMA_VERSION = 1


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 in the local zone, to the second (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).astimezone().isoformat(timespec="seconds")


def run_json(run: dict[str, Any]) -> dict[str, Any]:
    """A run as stable, machine-readable fields."""
    return {
        "id": run["id"],
        "script": run["script"],
        "group": run["group_name"],
        "group_run_id": run["group_run_id"],
        "trigger": run["trigger"],
        "status": run["status"],
        "exit_code": run["exit_code"],
        "signal": run["signal"],
        "started": iso(run["started"]),
        "ended": iso(run["ended"]),
        "duration": run["duration"],
        "log": run["log_state"] == "ok",
        "log_state": run["log_state"],
        "detail": run["detail"],
        "attempt": run["attempt"],
        "host": run["host"],
    }


def group_run_json(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """A group run (a row of group_runs) as machine-readable fields."""
    if run is None:
        return None
    return {
        "id": run["id"],
        "status": run["status"],
        "trigger": run["trigger"],
        "started": iso(run["started"]),
        "ended": iso(run["ended"]),
        "detail": run.get("detail"),
    }


def scripts_json(config: Config, last: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``list --json``: every configured script with its latest run."""
    return [
        {
            "name": s.name,
            "description": s.description,
            "last_run": run_json(last[s.name]) if s.name in last else None,
        }
        for s in config.scripts.values()
    ]


def groups_json(config: Config, last: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``list-groups --json``: every group with its settings and latest group run."""
    return [
        {
            "name": g.name,
            "description": g.description,
            "execution": g.execution,
            "stop_on_error": g.stop_on_error,
            "max_parallel_workers": config.workers_for(g),
            "schedule": g.schedule,
            "scripts": g.scripts,
            "depends_on": {m: g.needs(m) for m in g.depends_on},
            "last_run": group_run_json(last.get(g.name)),
        }
        for g in config.groups.values()
    ]


def schedules_json(rows: list[dict[str, Any]], status: dict, enabled: bool) -> dict[str, Any]:
    """``list-schedules --json``: the scheduler's state and every scheduled group."""
    groups = [
        {
            "name": r["name"],
            "schedule": r["schedule"],
            "expression": r["expression"],
            "timezone": r["timezone"],
            "next_run": r["next"].isoformat() if r["next"] else None,
            "last_run": group_run_json(r["last"]),
        }
        for r in rows
    ]
    return {"scheduler": status, "enabled": enabled, "groups": groups}
