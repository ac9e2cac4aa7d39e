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
from datetime import datetime
from typing import TYPE_CHECKING

from ..errors import EXIT_FAILED, EXIT_OK
from ..render import aligned, duration_text
from ..states import RunStatus
from ..statusreport import gather
from ..store import Run
from . import load, open_store

if TYPE_CHECKING:
    from ..check_time import CheckView
    from ..config import Config

__all__ = ["cmd_status", "gather"]


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


def _clock(config: Config, ts: float) -> str:
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


def _lines(config: Config, report: dict) -> list[str]:
    now = report["now"]
    from ..leadership import member_lines

    out = [_scheduler_line(report), *member_lines(report["scheduler"])]
    running = report["running"]
    out.append(f"Running now ({len(running)}):" if running else "Running now: nothing")
    here = socket.gethostname()
    remote = any(r.host and r.host != here for r in running)  # a worker's runs: say where
    out += aligned(
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
        ],
        "  ",
    )
    fails = report["failures"]
    out.append("Latest failures (24 h):" if fails else "Failures in the last 24 h: none")
    out += aligned([_failure_row(config, r) for r in fails], "  ")
    rows = report["next_runs"]
    if not rows:
        out.append("Next runs: no group has a schedule")
    else:
        out.append("Next runs:" if report["enabled"] else "Next runs (if scheduling were on):")
        out += aligned([_next_row(config, r, now) for r in rows], "  ")
    if report["checks"]:
        out.append("Checks:")
        out += aligned([_check_row(config, v, now) for v in report["checks"]], "  ")
    if report["problems"]:
        out.append("Problems:")
        out += [f"  ✗ {p}" for p in report["problems"]]
    return out


def _failure_row(config: Config, r: Run) -> list[str]:
    what = str(r.status)
    if r.exit_code is not None and r.status is RunStatus.FAILED:
        what += f" (exit {r.exit_code})"
    elif r.signal:
        what += f" (signal {r.signal})"
    when = _clock(config, r.started)
    return [r.script, f"run {r.id}", what, when, r.group_name or "-"]


def _next_row(config: Config, r: dict, now: float) -> list[str]:
    from .. import cron

    nxt = r["next"]
    if nxt is None:
        when, delta = "never", ""
    else:
        when = nxt.strftime(config.settings.display.date_format)  # in the group's zone
        delta = f"in {duration_text(max(0.0, nxt.timestamp() - now))}"
    zone = cron.timezone_label(r["timezone"])
    return [r["name"], when, delta, f"{r['schedule']} ({zone})"]


def _check_row(config: Config, v: CheckView, now: float) -> list[str]:
    state = v.state
    last = "never pinged"
    if state is not None and state.last_ping is not None:
        last = f"last ping {_clock(config, state.last_ping)}"
    due = "-"
    if v.next_due is not None:
        left = v.next_due - now
        due = f"due in {duration_text(left)}" if left >= 0 else f"due {duration_text(-left)} ago"
    return [v.check.name, str(v.status), last, due]
