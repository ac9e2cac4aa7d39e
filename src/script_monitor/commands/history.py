"""list, history, logs, clear-logs, clear-all-logs."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from datetime import datetime
from typing import Any, BinaryIO, cast

from .. import logs
from ..errors import EXIT_OK, UsageError
from ..render import duration_text
from ..states import LogState, RunStatus
from ..store import Run
from . import colors, load, open_store

STATUS_STYLE: dict[str, str] = {
    RunStatus.SUCCESS: "green",
    RunStatus.FAILED: "red",
    RunStatus.TIMEOUT: "red",
    RunStatus.LOST: "magenta",
    RunStatus.INTERRUPTED: "yellow",
    RunStatus.SKIPPED: "dim",
    RunStatus.RUNNING: "cyan",
}


def _table(args, config, headers: list[str], rows: list[list[str]], status_col: int) -> None:
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
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    out = [headers, *rows]
    for row in out:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        sys.stdout.write("\n")


def cmd_list(args: argparse.Namespace) -> int:
    config = load(args)
    store = open_store(config)
    store.runs.reap_lost()
    last = store.reads.last_runs()
    fmt = config.settings.display.date_format
    if args.json:
        import json

        from ..redact import config_masker, redact  # not on the plain list's path
        from ..serialize import scripts_json

        data = redact(scripts_json(config, last), config_masker(config))
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
    _table(args, config, ["SCRIPT", "STATUS", "LAST RUN", "DURATION", "DESCRIPTION"], rows, 1)
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    config = load(args)
    if args.name == "prune" and "prune" not in config.scripts:
        from .store import prune

        return prune(config, args.dry_run, args.before)
    if args.dry_run or args.before:
        raise UsageError("--dry-run and --before go with `history prune`")
    config.script(args.name)
    store = open_store(config)
    store.runs.reap_lost()
    runs = store.runs.history(args.name, args.limit)
    from ..pager import paged  # not on list's path

    with paged(not args.no_pager):
        return _print_history(args, config, runs)


def _print_history(args: argparse.Namespace, config, runs: list[Run]) -> int:
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
                _short(r.detail),
            ]
        )
    headers = ["RUN", "STARTED", "DURATION", "STATUS", "EXIT", "TRIGGER", "GROUP", "HOST", "NOTE"]
    here = socket.gethostname()
    if all(r.host in (None, here) for r in runs):  # only this machine ran them: no HOST
        headers.pop(7)
        rows = [row[:7] + row[8:] for row in rows]
    if not any(row[-1] for row in rows):
        headers.pop()
        rows = [row[:-1] for row in rows]
    _table(args, config, headers, rows, 3)
    return EXIT_OK


def _short(text: str | None, width: int = 70) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_logs(args: argparse.Namespace) -> int:
    config = load(args)
    config.script(args.name)
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


def _print_log(args: argparse.Namespace, store, run: Run, source, terminal: bool) -> None:
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


def _throttled(check, every: float = 0.25):
    state = {"at": 0.0, "value": False}

    def wrapped() -> bool:
        now = time.monotonic()
        if now - state["at"] >= every:
            state["at"], state["value"] = now, check()
        return bool(state["value"])

    return wrapped


def cmd_clear_logs(args: argparse.Namespace) -> int:
    config = load(args)
    config.script(args.name)
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
