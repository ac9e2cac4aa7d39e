"""The JSON shapes of runs, scripts, groups, schedules and the status report: one
serializer for every ``--json`` output of the CLI and for the web API, so the two
never disagree.  The shapes are documented in docs/JSON.md (``SCHEMA_VERSION``).

One rule for every value of time: an instant is an ISO 8601 string with the local
UTC offset, to the second (``iso``); a length of time is a number of seconds, to the
millisecond (``seconds``).  Each function takes the configuration and rows as the
store returns them and gives plain dicts ready for ``json.dumps``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .states import LogState, MessageState

if TYPE_CHECKING:
    from .anomaly import Band
    from .check_time import CheckView
    from .config import Config
    from .grouprun import GroupRunReport
    from .store import (
        AlertMatch,
        AuditRow,
        GroupRun,
        Message,
        Ping,
        PruneReport,
        Run,
        SchedulerMember,
    )

# Bumped when a key is removed or renamed or changes its type or meaning; adding a key
# does not bump it.  Object outputs carry it; list outputs (list, list-groups, history)
# stay plain lists and follow the same version (docs/JSON.md).
SCHEMA_VERSION = 1


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 in the local zone, to the second (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).astimezone().isoformat(timespec="seconds")


def seconds(value: float | None) -> float | None:
    """A length of time in seconds, to the millisecond (None stays None)."""
    return None if value is None else round(float(value), 3)


def run_json(run: Run) -> dict[str, Any]:
    """A run as stable, machine-readable fields."""
    return {
        "id": run.id,
        "script": run.script,
        "group": run.group_name,
        "group_run_id": run.group_run_id,
        "trigger": run.trigger,
        "status": run.status.value,
        "exit_code": run.exit_code,
        "signal": run.signal,
        "started": iso(run.started),
        "ended": iso(run.ended),
        "duration": seconds(run.duration),
        "log": run.log_state == LogState.OK,
        "log_state": run.log_state.value,
        "detail": run.detail,
        "attempt": run.attempt,
        "host": run.host,
        "cpu_user": seconds(run.cpu_user),
        "cpu_system": seconds(run.cpu_system),
        "max_rss": run.max_rss,
        "anomaly": run.anomaly,
    }


def band_json(band: Band | None) -> dict[str, Any] | None:
    """The band of a script's usual durations (``anomaly.Band``), or None while unknown."""
    if band is None:
        return None
    return {
        "median": seconds(band.median),
        "low": seconds(band.low),
        "high": seconds(band.high),
        "runs": band.runs,
    }


def runs_json(runs: list[Run]) -> list[dict[str, Any]]:
    """``history NAME --json``: a script's runs, newest first."""
    return [run_json(r) for r in runs]


def history_json(script: str, runs: list[Run], band: Band | None, rule: Any) -> dict[str, Any]:
    """``history NAME --json --summary``: the runs and a summary of the script's history."""
    return {
        "schema_version": SCHEMA_VERSION,
        "script": script,
        "summary": {
            "band": band_json(band),
            "anomaly": {
                "enabled": rule.enabled,
                "min_runs": rule.min_runs,
                "window": rule.window,
                "slow": rule.slow,
                "fast": rule.fast,
            },
        },
        "runs": runs_json(runs),
    }


def group_run_json(run: GroupRun | None) -> dict[str, Any] | None:
    """A group run (a row of group_runs) as machine-readable fields."""
    if run is None:
        return None
    return {
        "id": run.id,
        "status": run.status.value,
        "trigger": run.trigger,
        "started": iso(run.started),
        "ended": iso(run.ended),
        "detail": run.detail,
    }


def group_run_detail_json(report: GroupRunReport) -> dict[str, Any]:
    """``history --group NAME --json``, ``GET /api/v1/group-runs/{id}``: one group run
    with every attempt of its scripts, the reasons of the skipped ones and the edges."""
    run = report.run
    return {
        "schema_version": SCHEMA_VERSION,
        "id": run.id,
        "group": run.group_name,
        "status": run.status.value,
        "trigger": run.trigger,
        "owner": run.owner,
        "started_by": report.started_by,
        "started": iso(run.started),
        "ended": iso(run.ended),
        "duration": seconds(report.duration),
        "detail": run.detail,
        "scripts": report.scripts,
        "runs": [run_json(r) for r in report.runs],
        "skipped": [{"script": s, "reason": why} for s, why in report.skipped],
        "edges": [{"from": a, "to": b} for a, b in report.edges],
    }


def scripts_json(
    config: Config, last: dict[str, Run], checks: list[CheckView] | None = None
) -> list[dict[str, Any]]:
    """``list --json``: every configured script with its latest run, then every check."""
    out: list[dict[str, Any]] = [
        {
            "name": s.name,
            "kind": "script",
            "description": s.description,
            "last_run": run_json(last[s.name]) if s.name in last else None,
            "check": None,
        }
        for s in config.scripts.values()
    ]
    for v in checks or []:
        item = check_json(config, v)
        out.append(
            {
                "name": item["name"],
                "kind": "check",
                "description": item["description"],
                "last_run": item["last_run"],
                "check": item,
            }
        )
    return out


def check_json(config: Config, v: CheckView) -> dict[str, Any]:
    """A passive check and where it stands (docs/MONITORING.md)."""
    c, state = v.check, v.state
    return {
        "name": c.name,
        "description": c.description,
        "status": v.status.value,
        "schedule": c.schedule,
        "period": seconds(c.period),
        "grace": seconds(config.grace_of(c)),
        "timezone": config.zone_of(c),
        "keyed": c.key is not None,
        "last_ping": iso(state.last_ping) if state else None,
        "last_ping_kind": state.last_kind.value if state and state.last_kind else None,
        "next_due": iso(v.next_due),
        "late_at": iso(v.late_at),
        "pings": state.pings if state else 0,
        "last_run": run_json(v.last_run) if v.last_run is not None else None,
    }


def ping_json(ping: Ping) -> dict[str, Any]:
    """One ping a check received."""
    return {
        "id": ping.id,
        "at": iso(ping.at),
        "kind": ping.kind.value,
        "exit_code": ping.exit_code,
        "client": ping.client,
        "run": ping.run_id,
        "body_size": ping.body_size,
    }


def groups_json(config: Config, last: dict[str, GroupRun]) -> list[dict[str, Any]]:
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


def scheduler_json(status: dict[str, Any]) -> dict[str, Any]:
    """The scheduler's state (``scheduler.scheduler_status``), and every scheduler
    sharing the store with its role (``leadership.with_members``)."""
    return {
        "running": status["running"],
        "pid": status["pid"],
        "heartbeat_age": seconds(status["heartbeat_age"]),
        "stale": status["stale"],
        "schedulers": [member_json(m) for m in status.get("schedulers", [])],
    }


def member_json(m: SchedulerMember) -> dict[str, Any]:
    """One scheduler sharing the store: leader or standby."""
    return {
        "role": m.role.value,
        "host": m.host,
        "pid": m.pid,
        "config_dir": m.config_dir,
        "version": m.version,
        "started": iso(m.started),
        "heartbeat_age": seconds(m.age),
    }


def schedule_json(row: dict[str, Any]) -> dict[str, Any]:
    """A scheduled group (a row of ``commands.schedule._row``): when it runs next and ran last."""
    return {
        "name": row["name"],
        "schedule": row["schedule"],
        "expression": row["expression"],
        "timezone": row["timezone"],
        "next_run": iso(row["next"].timestamp()) if row["next"] else None,
        "last_run": group_run_json(row["last"]),
    }


def schedules_json(rows: list[dict[str, Any]], status: dict, enabled: bool) -> dict[str, Any]:
    """``list-schedules --json``: the scheduler's state and every scheduled group."""
    return {
        "schema_version": SCHEMA_VERSION,
        "scheduler": scheduler_json(status),
        "enabled": enabled,
        "groups": [schedule_json(r) for r in rows],
    }


def config_json(data: dict[str, Any]) -> dict[str, Any]:
    """``show-config --json``: the effective configuration (``commands.configure.effective``)."""
    return {"schema_version": SCHEMA_VERSION, "checks": [], **data}


def status_json(report: dict[str, Any]) -> dict[str, Any]:
    """``status --json``: what is going on now (``commands.status.gather``)."""
    now = report["now"]
    return {
        "schema_version": SCHEMA_VERSION,
        "time": iso(now),
        "ok": not report["problems"],
        "problems": report["problems"],
        "scheduler": scheduler_json(report["scheduler"]),
        "enabled": report["enabled"],
        "running": [
            {**run_json(r), "elapsed": seconds(max(0.0, now - r.started))}
            for r in report["running"]
        ],
        "failures": [run_json(r) for r in report["failures"]],
        "next_runs": [schedule_json(r) for r in report["next_runs"]],
        "checks": [check_json(report["config"], v) for v in report["checks"]],
    }


# ------------------------------------------------- notifications (docs/NOTIFICATIONS.md)


def notification_json(note: Message) -> dict[str, Any]:
    """A recorded message (``notifications --json``)."""
    return {
        "id": note.id,
        "event": note.event,
        "unit": note.unit,
        "run": note.run_id,
        "channel": note.channel,
        "state": note.state.value,
        "attempts": note.attempts,
        "title": note.title,
        "created": iso(note.created),
        "sent": iso(note.sent),
        "next_try": iso(note.next_try) if note.state is MessageState.PENDING else None,
        "last_error": note.last_error,
    }


def audit_json(row: AuditRow) -> dict[str, Any]:
    """A row of the web server's audit trail (``audit --json``, ``GET /api/v1/audit``)."""
    return {
        "id": row.id,
        "at": iso(row.at),
        "token_name": row.token_name,
        "client": row.client,
        "action": row.action,
        "target": row.target,
        "result": row.result,
        "reason": row.reason,
    }


def alert_json(match: AlertMatch) -> dict[str, Any]:
    """A recorded output alert (``alerts --json``)."""
    return {
        "id": match.id,
        "script": match.script,
        "run": match.run_id,
        "line_number": match.line_number,
        "line": match.line,
        "severity": match.severity,
        "pattern": match.pattern,
        "fail": match.fail,
        "time": iso(match.created),
    }


def watchdog_json(report: Any) -> dict[str, Any]:
    """``watchdog --json``: one check (a ``watchdog.Report``)."""
    s = report.scheduler
    return {
        "schema_version": SCHEMA_VERSION,
        "ok": not report.wrong,
        "checked": iso(report.now),
        "missed": [
            {"group": m["group"], "count": m["count"], "ticks": m["ticks"], "detail": m["detail"]}
            for m in report.missed
        ],
        "overdue": [
            {
                "kind": o["kind"],
                "name": o["name"],
                "run": o["run"],
                "started": iso(o["started"]),
                "running_for": seconds(o["running_for"]),
                "max_duration": seconds(o["max_duration"]),
                "detail": o["detail"],
            }
            for o in report.overdue
        ],
        "late": [
            {
                "check": c["check"],
                "due": iso(c["due"]),
                "last_ping": iso(c["last_ping"]),
                "grace": seconds(c["grace"]),
                "detail": c["detail"],
            }
            for c in report.late
        ],
        "scheduler": {
            "state": s["state"],
            "detail": s["detail"],
            "last_seen": iso(s.get("last_seen")),
            "heartbeat_age": seconds(s.get("heartbeat_age")),
        },
    }


def notify_test_json(channel: str, ok: bool, urls: list[dict[str, Any]]) -> dict[str, Any]:
    """``notify-test --json``: whether every URL of the channel accepted the message."""
    return {
        "schema_version": SCHEMA_VERSION,
        "channel": channel,
        "ok": ok,
        "urls": [{"url": u["url"], "scheme": u["scheme"], "error": u["error"]} for u in urls],
    }


def prune_json(report: PruneReport, dry_run: bool, keep_last: int) -> dict[str, Any]:
    """``history prune --json``: what was deleted (or would be, with ``--dry-run``)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "dry_run": dry_run,
        "cutoff": iso(report.cutoff),
        "keep_last": keep_last,
        "runs": report.runs,
        "group_runs": report.group_runs,
        "notifications": report.messages,
        "alerts": report.alerts,
        "watchdog_findings": report.watch_events,
        "audit": report.audit,
        "logs": report.logs,
    }
