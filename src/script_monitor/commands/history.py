"""list, history, logs, clear-logs, clear-all-logs."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from .. import logs
from ..errors import EXIT_OK, UsageError
from ..render import aligned, duration_text
from ..states import CheckStatus, LogState, RunStatus
from ..store import Run
from . import colors, load, open_store

if TYPE_CHECKING:
    from ..config import Config
    from ..logsource import LogSource
    from ..store import Store

STATUS_STYLE: dict[str, str] = {
    RunStatus.SUCCESS: "green",
    RunStatus.FAILED: "red",
    RunStatus.TIMEOUT: "red",
    RunStatus.LOST: "magenta",
    RunStatus.INTERRUPTED: "yellow",
    RunStatus.SKIPPED: "dim",
    RunStatus.RUNNING: "cyan",
    CheckStatus.UP: "green",
    CheckStatus.DOWN: "red",
    CheckStatus.LATE: "red",
    CheckStatus.STARTED: "cyan",
    CheckStatus.NEW: "dim",
}


def _table(
    args: argparse.Namespace,
    config: Config,
    headers: list[str],
    rows: list[list[str]],
    status_col: int,
) -> None:
    """A rich table on a terminal, plain aligned text otherwise."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        color = colors(args, config)
        console = Console(no_color=not color, highlight=False)
        table = Table(*headers, box=None, header_style="bold")
        for row in rows:
            cells = list(row)
            style = STATUS_STYLE.get(cells[status_col].split(" ")[0])
            if style and color:
                cells[status_col] = f"[{style}]{cells[status_col]}[/]"
            table.add_row(*cells)
        console.print(table)
        return
    sys.stdout.write("".join(f"{line}\n" for line in aligned([headers, *rows])))


def cmd_list(args: argparse.Namespace) -> int:
    config = load(args)
    store = open_store(config)
    store.runs.reap_lost()
    last = store.reads.last_runs(config.scripts)
    fmt = config.settings.display.date_format
    checks = []
    if config.checks:
        from ..check_time import views

        checks = views(config, store.checks.states(), last, time.time())
    if args.json:
        import json

        from ..redact import config_masker, redact  # not on the plain list's path
        from ..serialize import scripts_json

        data = redact(scripts_json(config, last, checks), config_masker(config))
        print(json.dumps(data, indent=2))
        return EXIT_OK
    rows = []
    for s in config.scripts.values():
        run = last.get(s.name)
        if run is None:
            rows.append([s.name, "never run", "-", "-", s.description])
        else:
            when = datetime.fromtimestamp(run.started).strftime(fmt)
            rows.append([s.name, run.status, when, duration_text(run.duration), s.description])
    headers = ["SCRIPT", "STATUS", "LAST RUN", "DURATION", "DESCRIPTION"]
    if checks:  # a KIND column only when there are checks
        headers = ["NAME", "KIND", *headers[1:]]
        rows = [[r[0], "script", *r[1:]] for r in rows]
        for v in checks:
            run = v.last_run
            when = datetime.fromtimestamp(run.started).strftime(fmt) if run else "-"
            took = duration_text(run.duration) if run else "-"
            rows.append([v.check.name, "check", str(v.status), when, took, v.check.description])
    _table(args, config, headers, rows, 2 if checks else 1)
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    config = load(args)
    if args.name == "prune" and "prune" not in config.scripts:
        from .store import prune

        return prune(config, args.dry_run, args.before, args.json)
    if args.dry_run or args.before:
        raise UsageError("--dry-run and --before go with `history prune`")
    if args.group is not None:
        if args.name is not None:
            raise UsageError("give a script name or --group NAME, not both")
        return _group_history(args, config)
    if args.name is None:
        raise UsageError("history needs a script name (or --group NAME)")
    if getattr(args, "summary", False) and not args.json:
        raise UsageError("--summary goes with --json")
    config.has_runs(args.name)
    script = config.scripts.get(args.name)  # None for a passive check
    store = open_store(config)
    store.runs.reap_lost()
    runs = store.runs.history(args.name, args.limit)
    from ..pager import paged  # not on list's path

    if getattr(args, "summary", False):
        import json

        from ..serialize import history_json

        rule = config.anomaly_for(script) if script is not None else config.settings.anomaly
        band = (
            store.runs.duration_band(args.name, rule.window, rule.min_runs, rule.slow, rule.fast)
            if rule.enabled
            else None
        )
        with paged(not args.no_pager):
            print(json.dumps(history_json(args.name, runs, band, rule), indent=2))
        return EXIT_OK
    with paged(not args.no_pager):
        return _print_history(args, config, runs)


def _print_history(args: argparse.Namespace, config: Config, runs: list[Run]) -> int:
    if args.json:
        import json

        from ..serialize import runs_json

        print(json.dumps(runs_json(runs), indent=2))
        return EXIT_OK
    if not runs:
        print(f"{args.name} has never run")
        return EXIT_OK
    fmt = config.settings.display.date_format
    rows = []
    for r in runs:
        code = "-" if r.exit_code is None else str(r.exit_code)
        if r.signal:
            code = f"signal {r.signal}"
        log_note = "" if r.log_state in (LogState.OK, LogState.NONE) else f" (log {r.log_state})"
        if r.attempt > 1:
            log_note = f" (attempt {r.attempt}){log_note}"
        if r.anomaly:  # a mark in words, not a colour only (docs/MONITORING.md)
            log_note = f" {ANOMALY_MARK.get(r.anomaly, r.anomaly)}{log_note}"
        rows.append(
            [
                str(r.id),
                datetime.fromtimestamp(r.started).strftime(fmt),
                duration_text(r.duration),
                r.status + log_note,
                code,
                r.trigger,
                r.group_name or "-",
                r.host or "-",
                _cpu_text(r),
                _size_text(r.max_rss),
                _short(r.detail),
            ]
        )
    headers = ["RUN", "STARTED", "DURATION", "STATUS", "EXIT", "TRIGGER", "GROUP", "HOST"]
    headers += ["CPU", "MAX RSS", "NOTE"]
    narrow = sys.stdout.isatty() and _columns() < NARROW
    for col in (10, 9, 8):  # NOTE, MAX RSS, CPU: only when some run has one
        if (col != 10 and narrow) or not any(row[col] not in ("", "-") for row in rows):
            headers.pop(col)
            rows = [row[:col] + row[col + 1 :] for row in rows]
    here = socket.gethostname()
    if all(r.host in (None, here) for r in runs):  # only this machine ran them: no HOST
        headers.pop(7)
        rows = [row[:7] + row[8:] for row in rows]
    _table(args, config, headers, rows, 3)
    return EXIT_OK


def _group_history(args: argparse.Namespace, config: Config) -> int:
    """``history --group NAME``: the group's newest run, every attempt of its scripts."""
    from ..grouprun import gather, latest_id

    config.group(args.group)
    store = open_store(config)
    store.runs.reap_lost()
    found = latest_id(store, args.group)
    report = gather(config, store, found) if found is not None else None
    if args.json:
        import json

        from ..serialize import group_run_detail_json

        print(json.dumps(None if report is None else group_run_detail_json(report), indent=2))
        return EXIT_OK
    if report is None:
        print(f"group {args.group} has never run")
        return EXIT_OK
    fmt = config.settings.display.date_format
    g = report.run
    took = duration_text(report.duration) if report.duration is not None else "running"
    print(f"Group run {g.id} of {g.group_name}: {g.status} ({took})")
    who = f", by token {report.started_by}" if report.started_by else ""
    print(f"  started {datetime.fromtimestamp(g.started).strftime(fmt)}, trigger {g.trigger}{who}")
    if g.detail:
        print(f"  {_short(g.detail, 100)}")
    if report.edges:
        print("  depends on: " + ", ".join(f"{a} -> {b}" for a, b in report.edges))
    rows = []
    for r in report.runs:
        status = str(r.status)
        if r.status is RunStatus.SKIPPED:
            status += f" ({_short(r.detail, 50)})" if r.detail else ""
        rows.append(
            [
                r.script,
                str(r.attempt),
                str(r.id),
                datetime.fromtimestamp(r.started).strftime(fmt),
                duration_text(r.duration),
                status,
            ]
        )
    print()
    _table(args, config, ["SCRIPT", "ATTEMPT", "RUN", "STARTED", "DURATION", "STATUS"], rows, 5)
    return EXIT_OK


ANOMALY_MARK = {"slow": "▲ slow", "fast": "▼ fast"}
NARROW = 100  # a terminal narrower than this has no room for the CPU and MAX RSS columns


def _columns() -> int:
    import shutil

    return shutil.get_terminal_size().columns


def _cpu_text(run: Run) -> str:
    """User + system CPU seconds of the run's tree."""
    if run.cpu_user is None:
        return "-"
    return f"{run.cpu_user + (run.cpu_system or 0.0):.2f}s"


def _size_text(size: int | None) -> str:
    """Bytes as ``312M`` (powers of 1024, as ``limits.max_rss`` reads them)."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" or value >= 10 else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def _short(text: str | None, width: int = 70) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_logs(args: argparse.Namespace) -> int:
    config = load(args)
    config.has_runs(args.name)
    store = open_store(config)
    store.runs.reap_lost()
    if args.run is not None:
        run = store.runs.run(args.run)
        if run is None or run.script != args.name:
            raise UsageError(f"no run {args.run} of script '{args.name}'")
    else:
        run = store.runs.latest_run(args.name, with_log=True)
        if run is None:
            raise UsageError(f"{args.name} has no runs yet")
    from .. import logsource
    from ..pager import paged

    try:
        source = logsource.open_log(config.log_dir, store, run)
    except logsource.LogUnavailable as e:
        raise UsageError(str(e)) from None
    try:
        terminal = os.isatty(sys.stdout.fileno())  # before a pager takes stdout over
    except (AttributeError, OSError, ValueError):
        terminal = False
    try:
        with paged(not (args.no_pager or args.follow)):  # --follow: the output is live
            _print_log(args, store, run, source, terminal)
    finally:
        source.close()
    return EXIT_OK


def _print_log(
    args: argparse.Namespace, store: Store, run: Run, source: LogSource, terminal: bool
) -> None:
    """The log from this host's file or, for a remote run, from the history's chunks;
    on a terminal with only colours acting (termsafe), unless --raw."""
    from .. import logsource

    out: Any
    if args.raw:
        out = sys.stdout.buffer
    elif terminal:
        from ..termsafe import TerminalOut

        out = TerminalOut(sys.stdout.buffer)
    else:
        out = logs.Utf8Out(sys.stdout.buffer)
    if args.follow and run.status == RunStatus.RUNNING:

        def finished() -> bool:
            current = store.runs.run(run.id)
            store.runs.reap_lost()
            return current is None or current.status != RunStatus.RUNNING

        logsource.follow(source, cast(BinaryIO, out), _throttled(finished))
    else:
        logsource.copy(source, cast(BinaryIO, out))
    if not args.raw:
        out.finish()


def _throttled(check: Callable[[], bool], every: float = 0.25) -> Callable[[], bool]:
    state = {"at": 0.0, "value": False}

    def wrapped() -> bool:
        now = time.monotonic()
        if now - state["at"] >= every:
            state["at"], state["value"] = now, check()
        return bool(state["value"])

    return wrapped


def cmd_clear_logs(args: argparse.Namespace) -> int:
    config = load(args)
    config.has_runs(args.name)
    store = open_store(config)
    gone = store.runs.mark_logs_cleared(args.name)
    logs.remove(config.log_dir, gone)
    print(f"Cleared {len(gone)} log{'s' * (len(gone) != 1)} of {args.name}")
    return EXIT_OK


def cmd_clear_all_logs(args: argparse.Namespace) -> int:
    config = load(args)
    store = open_store(config)
    gone = store.runs.mark_logs_cleared(None)
    logs.remove(config.log_dir, gone)
    print(f"Cleared {len(gone)} log{'s' * (len(gone) != 1)}")
    return EXIT_OK
