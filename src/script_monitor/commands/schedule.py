"""scheduler, list-schedules, export-systemd, export-cron."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from .. import cron
from ..config import Config, Group
from ..errors import EXIT_OK, UsageError
from ..serialize import schedules_json
from . import load, open_store

GAP_YEARS = 10  # DST-gap lines in exported timers cover this many years


def cmd_scheduler(args: argparse.Namespace) -> int:
    from ..scheduler import run_scheduler

    config = load(args)
    return run_scheduler(config, once=args.once)


# ---------------------------------------------------------------- list-schedules


def _scheduled(config: Config) -> list[Group]:
    return [g for g in config.groups.values() if g.schedule]


def _status_line(status: dict) -> str:
    if not status["running"]:
        return "scheduler: not running"
    pid = f" (pid {status['pid']})" if status["pid"] else ""
    if status["stale"]:
        age = status["heartbeat_age"]
        beat = f"no heartbeat for {age:.0f}s" if age is not None else "no heartbeat"
        return f"scheduler: running{pid}, but {beat}: it may be hung"
    return f"scheduler: running{pid}"


def _row(config: Config, group: Group, last: dict | None, now: datetime) -> dict:
    zone = config.zone_of(group)
    tz = cron.resolve_timezone(zone)
    nxt = cron.next_fire(group.schedule or "", tz, now)
    return {
        "name": group.name,
        "schedule": group.schedule,
        "expression": cron.expand(group.schedule or ""),
        "timezone": zone,
        "tz": tz,
        "next": nxt,
        "last": last,
    }


def schedule_rows(config: Config, last: dict[str, dict], now: datetime) -> list[dict]:
    """Every scheduled group with its next fire time and last run (list-schedules, the API)."""
    return [_row(config, g, last.get(g.name), now) for g in _scheduled(config)]


def cmd_list_schedules(args: argparse.Namespace) -> int:
    from ..heartbeat import scheduler_status

    config = load(args)
    store = open_store(config)
    store.reap_lost()
    rows = schedule_rows(config, store.last_group_runs(), datetime.now(UTC))
    status = scheduler_status(config.state_dir)
    enabled = config.settings.scheduling.enabled
    if args.json:
        print(json.dumps(schedules_json(rows, status, enabled), indent=2))
        return EXIT_OK
    print(_status_line(status))
    if not enabled:
        print("scheduling: paused (scheduling.enabled: false)")
    if not rows:
        print("No scheduled groups.")
        return EXIT_OK
    print()
    _print_table(rows, config.settings.display.date_format)
    return EXIT_OK


def _print_table(rows: list[dict], fmt: str) -> None:
    table = [("GROUP", "SCHEDULE", "TIMEZONE", "NEXT RUN", "LAST RUN")]
    for r in rows:
        nxt = r["next"].strftime(fmt) if r["next"] else "never"
        run = r["last"]
        if run:
            when = datetime.fromtimestamp(run["started"], r["tz"]).strftime(fmt)
            last = f"{when} {run['status']}"
        else:
            last = "never"
        zone = cron.timezone_label(r["timezone"])
        table.append((r["name"], r["schedule"], zone, nxt, last))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:4])]
        print("  ".join([*cells, row[4]]).rstrip())


# ---------------------------------------------------------------- exports


def _export_target(args: argparse.Namespace) -> tuple[Config, Group, str]:
    config = load(args)
    group = config.group(args.group)
    if not group.schedule:
        raise UsageError(
            f"group '{group.name}' has no schedule; add 'schedule:' to it before exporting"
        )
    return config, group, config.zone_of(group)


def self_command() -> list[str]:
    """The absolute command line that runs this script-monitor again."""
    argv0 = Path(sys.argv[0])
    if argv0.suffix == ".py" and argv0.name != "__main__.py":
        return [os.path.abspath(sys.executable), str(argv0.resolve())]
    if argv0.name == "__main__.py" or not argv0.name:
        return [os.path.abspath(sys.executable), "-m", "script_monitor"]
    return [str(argv0.absolute())]


def _systemd_quote(arg: str) -> str:
    """Quote one ExecStart= word; '%' and '$' must be doubled for systemd."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not any(c in text for c in " \t\"'\\;"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_command(config: Config, group: Group) -> list[str]:
    """The absolute command line that runs a group as the scheduler would (``--`` before
    the name: a name may start with ``-``)."""
    root = str(config.root)
    return [
        *self_command(), "--config-dir", root, "run-group", "--trigger", "schedule", "--",
        group.name,
    ]  # fmt: skip


def systemd_units(config: Config, group: Group, zone: str, user: bool) -> dict[str, str]:
    """The .service and .timer texts for a scheduled group."""
    name = f"script-monitor-{group.name}"
    argv = run_command(config, group)
    where = "~/.config/systemd/user/" if user else "/etc/systemd/system/"
    ctl = "systemctl --user" if user else "sudo systemctl"
    header = (
        f"# Generated by script-monitor export-systemd{' --user' if user else ''}.\n"
        f"# Install: copy both files to {where}, then\n"
        f"#   {ctl} daemon-reload && {ctl} enable --now {name}.timer\n"
    )
    service = [
        header,
        "[Unit]",
        f"Description=script-monitor group {group.name}",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart={' '.join(_systemd_quote(a) for a in argv)}",
        f"WorkingDirectory={str(config.root).replace('%', '%%')}",  # taken whole, unquoted
        "TimeoutStartSec=infinity",
    ]
    if not user and os.geteuid() != 0:
        import pwd

        service.append(f"User={pwd.getpwuid(os.geteuid()).pw_name}")
    return {
        f"{name}.service": "\n".join(service) + "\n",
        f"{name}.timer": _timer(group, zone, name, header),
    }


def _timer(group: Group, zone: str, name: str, header: str) -> str:
    suffix = None if zone == "local" else zone
    lines = [
        header,
        "[Unit]",
        f"Description=Run script-monitor group {group.name} ({group.schedule}, {zone})",
        "",
        "[Timer]",
    ]
    lines += [f"OnCalendar={spec}" for spec in cron.to_oncalendar(group.schedule or "", suffix)]
    gaps = cron.dst_gap_fires(
        group.schedule or "", cron.resolve_timezone(zone), datetime.now(UTC), GAP_YEARS
    )
    if gaps:
        lines.append(
            "# Times that fall into a daylight-saving gap run at the end of the gap (as the\n"
            "# built-in scheduler does; systemd alone would skip them). Listed for "
            f"{GAP_YEARS} years:\n# export again after {gaps[-1].year}."
        )
        tail = f" {suffix}" if suffix else ""
        lines += [f"OnCalendar={g.strftime('%Y-%m-%d %H:%M:%S')}{tail}" for g in gaps]
    lines += [
        "Persistent=true",
        "AccuracySec=1s",
        f"Unit={name}.service",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]
    return "\n".join(lines) + "\n"


def cron_text(config: Config, group: Group, zone: str) -> str:
    """A crontab(5) fragment (comment, optional CRON_TZ, one line) for a scheduled group."""
    argv = run_command(config, group)
    command = " ".join(shlex.quote(a) for a in argv).replace("%", "\\%")  # cron: % is newline
    lines = [
        f"# script-monitor group {group.name}: {group.schedule} ({zone}); "
        "install with: crontab -e (or append to `crontab -l`)",
    ]
    if zone != "local":
        lines.append(f"CRON_TZ={zone}")
    lines.append(f"{cron.expand(group.schedule or '')} {command}")
    return "\n".join(lines) + "\n"


def _emit(files: dict[str, str], output: str | None) -> int:
    if output is None:
        for i, (name, text) in enumerate(files.items()):
            if len(files) > 1:
                print(("\n" if i else "") + f"# ---- {name}")
            sys.stdout.write(text)
        return EXIT_OK
    directory = Path(output).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text)
            print(f"wrote {(directory / name).resolve()}")
    except OSError as e:
        raise UsageError(f"cannot write to {directory}: {e.strerror}") from None
    return EXIT_OK


def cmd_export_systemd(args: argparse.Namespace) -> int:
    config, group, zone = _export_target(args)
    return _emit(systemd_units(config, group, zone, args.user), args.output)


def cmd_export_cron(args: argparse.Namespace) -> int:
    config, group, zone = _export_target(args)
    return _emit({f"script-monitor-{group.name}.cron": cron_text(config, group, zone)}, args.output)
