"""status: what is going on right now, on one screen; usable as a check (exit 1).

Exit 1 ("a problem") when
- the latest scheduled run of a scheduled group failed: per group with a ``schedule``,
  the newest group run with trigger ``schedule`` (the scheduler's, or an exported
  timer's or crontab line's) that ran and ended — skipped and missed ticks are passed
  over — ended ``failed`` or ``lost``; or
- the scheduler is down: it is not running, or its heartbeat is stale, while scheduled
  groups exist, ``scheduling.enabled`` is true and a scheduler has run for this config
  directory before (its lock file exists).  Groups run only by cron or
  systemd (exports) never had a scheduler, and raise no such alarm — the watchdog's rule.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from datetime import UTC, datetime
from typing import Any

from ..errors import EXIT_FAILED, EXIT_OK
from ..render import duration_text
from ..states import FAILURES, RunStatus
from ..store import Run
from . import load, open_store

FAILURE_WINDOW = 24 * 3600.0  # "latest failures" looks this far back
FAILURE_LIMIT = 5


def gather(config, store, now: float) -> dict[str, Any]:
    """Every fact ``status`` shows, and the problems among them."""
    from ..heartbeat import LOCK_FILE, scheduler_status
    from ..leadership import leader, with_members
    from ..schedule_time import schedule_rows, scheduled_groups

    store.runs.reap_lost()
    scheduled = scheduled_groups(config)
    rows = schedule_rows(config, store.reads.last_group_runs(), datetime.fromtimestamp(now, UTC))
    far = datetime.max.replace(tzinfo=UTC)
    rows.sort(key=lambda r: (r["next"] or far, r["name"]))
    ttl = config.settings.scheduling.lease_ttl
    status = with_members(scheduler_status(config.state_dir, now), store, ttl)
    enabled = config.settings.scheduling.enabled
    problems = []
    finished = store.reads.last_ended_group_runs("schedule")
    for g in scheduled:
        run = finished.get(g.name)
        if run is not None and run.status in FAILURES:
            problems.append(
                f"the latest scheduled run of group '{g.name}' {run.status}"
                f" (group run {run.id}, {_clock(config, run.started)})"
            )
    ran_before = (config.state_dir / LOCK_FILE).exists()  # only a scheduler creates it
    elsewhere = status["shared"] and leader(status) is not None  # another host leads
    if (
        scheduled
        and enabled
        and ran_before
        and not elsewhere
        and (not status["running"] or status["stale"])
    ):
        problems.append(
            "the scheduler is not running"
            if not status["running"]
            else "the scheduler's heartbeat is stale: it may be hung"
        )
    return {
        "now": now,
        "scheduler": status,
        "enabled": enabled,
        "scheduled": bool(scheduled),
        "ran_before": ran_before,
        "running": store.reads.running_runs(),
        "failures": store.reads.recent_runs(sorted(FAILURES), now - FAILURE_WINDOW, FAILURE_LIMIT),
        "next_runs": rows,
        "problems": problems,
    }


def cmd_status(args: argparse.Namespace) -> int:
    config = load(args)
    report = gather(config, open_store(config), time.time())
    if args.json:
        from ..serialize import status_json

        print(json.dumps(status_json(report), indent=2))
    else:
        print("\n".join(_lines(config, report)))
    return EXIT_FAILED if report["problems"] else EXIT_OK


# ---------------------------------------------------------------- the screen


def _clock(config, ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime(config.settings.display.date_format)


def _scheduler_line(report: dict) -> str:
    s = report["scheduler"]
    if s["running"]:
        pid = f" (pid {s['pid']})" if s["pid"] else ""
        age = s["heartbeat_age"]
        if s["stale"]:
            beat = f"no heartbeat for {age:.0f}s" if age is not None else "no heartbeat"
            text = f"running{pid}, but {beat}: it may be hung"
        else:
            text = f"running{pid}, heartbeat {age:.0f}s ago" if age is not None else "running"
    elif not report["scheduled"]:
        text = "not running (no group has a schedule)"
    elif s.get("shared") and s.get("schedulers"):
        text = "not running here; the store's schedulers:"
    elif not report["ran_before"]:
        text = "not running (never started here; exported timers or cron may run the groups)"
    else:
        text = "not running"
    if not report["enabled"]:
        text += "; scheduling is paused (scheduling.enabled: false)"
    return f"Scheduler: {text}"


def _table(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]  # fmt: skip


def _lines(config, report: dict) -> list[str]:
    now = report["now"]
    from ..leadership import member_lines

    out = [_scheduler_line(report), *member_lines(report["scheduler"])]
    running = report["running"]
    out.append(f"Running now ({len(running)}):" if running else "Running now: nothing")
    here = socket.gethostname()
    remote = any(r.host and r.host != here for r in running)  # a worker's runs: say where
    out += _table(
        [
            [
                r.script,
                f"run {r.id}",
                r.group_name or "-",
                f"since {_clock(config, r.started)}",
                f"for {duration_text(max(0.0, now - r.started))}",
                *([f"on {r.host}" if r.host and r.host != here else ""] if remote else []),
            ]
            for r in running
        ]
    )
    fails = report["failures"]
    out.append("Latest failures (24 h):" if fails else "Failures in the last 24 h: none")
    out += _table([_failure_row(config, r) for r in fails])
    rows = report["next_runs"]
    if not rows:
        out.append("Next runs: no group has a schedule")
    else:
        out.append("Next runs:" if report["enabled"] else "Next runs (if scheduling were on):")
        out += _table([_next_row(config, r, now) for r in rows])
    if report["problems"]:
        out.append("Problems:")
        out += [f"  ✗ {p}" for p in report["problems"]]
    return out


def _failure_row(config, r: Run) -> list[str]:
    what = str(r.status)
    if r.exit_code is not None and r.status is RunStatus.FAILED:
        what += f" (exit {r.exit_code})"
    elif r.signal:
        what += f" (signal {r.signal})"
    when = _clock(config, r.started)
    return [r.script, f"run {r.id}", what, when, r.group_name or "-"]


def _next_row(config, r: dict, now: float) -> list[str]:
    from .. import cron

    nxt = r["next"]
    if nxt is None:
        when, delta = "never", ""
    else:
        when = nxt.strftime(config.settings.display.date_format)  # in the group's zone
        delta = f"in {duration_text(max(0.0, nxt.timestamp() - now))}"
    zone = cron.timezone_label(r["timezone"])
    return [r["name"], when, delta, f"{r['schedule']} ({zone})"]
