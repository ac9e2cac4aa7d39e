"""Plain and rich terminal output of runs.

Plain output (stdout is not a terminal) is exactly the user's guide's text.  On a
terminal the same words are shown with a live view, colours and durations.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from .states import RunStatus

if TYPE_CHECKING:  # engine pulls in subprocess; list and history need none of it
    from rich.console import RenderableType

    from .results import GroupResult, RunResult

OK = "✓"
FAIL = "✗ FAILED"


def use_color(setting: bool, stream: TextIO) -> bool:
    """Colours only on a terminal, when configured, and when NO_COLOR is unset."""
    return setting and "NO_COLOR" not in os.environ and stream.isatty()


def mark(result: RunResult) -> str:
    if result.status == RunStatus.SUCCESS:
        return OK
    if result.status == RunStatus.TIMEOUT:
        return f"{FAIL} (timeout)"
    if result.status == RunStatus.INTERRUPTED:
        return "✗ INTERRUPTED"
    if result.status == RunStatus.LOST:  # its worker or recorder died: not the script's fault
        return "✗ LOST"
    return FAIL


def retry_text(result: RunResult, delay: float, attempts: int) -> str:
    """``✗ FAILED, retrying in 10s (attempt 2/3)``: the next attempt's number of all."""
    return f"{mark(result)}, retrying in {delay:g}s (attempt {result.attempt + 1}/{attempts})"


def skip_line(name: str, detail: str) -> str:
    """``Skipping NAME (needs DEPENDENCY)``."""
    return f"Skipping {name} ({detail})"


def and_list(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def stopped_lines(failed: str, skipped: list[str]) -> list[str]:
    lines = [f"⚠️  Script {failed} failed. Stopping group execution"]
    if skipped:
        verb = "is" if len(skipped) == 1 else "are"
        lines.append(f"({and_list(skipped)} {verb} skipped)")
    return lines


def summary_lines(outcome: GroupResult) -> list[str]:
    total = len(outcome.scripts)
    lines = [
        "Parallel execution summary:",
        f"  Completed: {len(outcome.completed)}/{total}",
        f"  Successful: {sum(r.ok for r in outcome.results)}/{total}",
    ]
    if outcome.failed:
        lines.append(f"  Failed: {', '.join(r.script for r in outcome.failed)}")
    skipped = [
        r.script for r in outcome.results if r.status in (RunStatus.SKIPPED, RunStatus.INTERRUPTED)
    ]
    if skipped and outcome.status == RunStatus.INTERRUPTED:
        lines.append(f"  Interrupted: {', '.join(skipped)}")
    elif outcome.skipped:
        lines.append(f"  Skipped: {', '.join(r.script for r in outcome.skipped)}")
    return lines


def aligned(rows: list[list[str]], indent: str = "") -> list[str]:
    """Rows as plain text in columns two spaces apart, each as wide as its widest cell
    (no trailing spaces): the tables of ``list``, ``history``, ``list-schedules``,
    ``status`` and the others when the output is not a terminal."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds >= 0.1 else f"{seconds * 1000:.0f}ms"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class PlainReporter:
    """The guide's plain text, line by line, flushed as it happens."""

    def __init__(self, out: TextIO = sys.stdout):
        self.out = out
        self.lock = threading.Lock()
        self.mode = "serial"

    def _print(self, text: str, end: str = "\n") -> None:
        with self.lock:
            self.out.write(text + end)
            self.out.flush()

    def group_started(self, name: str, mode: str, scripts: list[str]) -> None:
        self.mode = mode
        self._print(f"Running {name}...")

    def script_started(self, name: str) -> None:
        if self.mode == "serial":
            self._print(f"Running {name}... ", end="")

    def script_finished(self, result: RunResult) -> None:
        if self.mode == "serial":
            self._print(mark(result))
        else:
            self._print(f"Running {result.script}... {mark(result)}")

    def script_retrying(self, result: RunResult, delay: float, attempts: int) -> None:
        text = retry_text(result, delay, attempts)
        self._print(text if self.mode == "serial" else f"Running {result.script}... {text}")

    def script_skipped(self, name: str, detail: str) -> None:
        self._print(skip_line(name, detail))

    def group_stopped(self, failed: str, skipped: list[str]) -> None:
        for line in stopped_lines(failed, skipped):
            self._print(line)

    def group_finished(self, outcome: GroupResult) -> None:
        if outcome.mode == "parallel":
            for line in summary_lines(outcome):
                self._print(line)


class RichReporter:
    """A live view on a terminal: running scripts with elapsed time, results as they end."""

    def __init__(self, color: bool):
        from rich.console import Console

        self.console = Console(
            highlight=False, no_color=not color, color_system="auto" if color else None
        )
        self.lock = threading.Lock()
        self.running: dict[str, float] = {}
        self.waiting: dict[str, float] = {}  # retries: name -> when the next attempt starts
        self.live: Any = None
        self.mode = "serial"

    def _view(self) -> RenderableType:
        from rich.console import Group
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        now = time.monotonic()
        with self.lock:
            items = list(self.running.items())
            waits = list(self.waiting.items())
        if not items and not waits:
            return Group()
        for name, since in items:
            table.add_row(
                Spinner("dots", style="cyan"),
                f"Running {name}...",
                f"[dim]{duration_text(now - since)}[/]",
            )
        for name, due in waits:
            left = max(due - now, 0.0)
            table.add_row("[yellow]↻[/]", f"Retrying {name}", f"[dim]in {left:.0f}s[/]")
        return table

    def group_started(self, name: str, mode: str, scripts: list[str]) -> None:
        from rich.live import Live

        self.mode = mode
        extra = f" [dim]({mode}, {len(scripts)} scripts)[/]"
        self.console.print(f"[bold]Running {name}...[/]{extra}")
        self.live = Live(
            get_renderable=self._view, console=self.console, refresh_per_second=8, transient=False
        )
        self.live.start()

    def script_started(self, name: str) -> None:
        with self.lock:
            self.waiting.pop(name, None)
            self.running[name] = time.monotonic()

    def script_retrying(self, result: RunResult, delay: float, attempts: int) -> None:
        with self.lock:
            self.running.pop(result.script, None)
            self.waiting[result.script] = time.monotonic() + delay
        self.console.print(
            f"Running {result.script}... [red]{retry_text(result, delay, attempts)}[/]"
            f" [dim]({duration_text(result.duration)})[/]"
        )

    def script_skipped(self, name: str, detail: str) -> None:
        self.console.print(f"[dim]{skip_line(name, detail)}[/]")

    def script_finished(self, result: RunResult) -> None:
        with self.lock:
            self.running.pop(result.script, None)
        style = "green" if result.ok else "red"
        extra = (
            f", exit {result.exit_code}"
            if result.status == RunStatus.FAILED and result.exit_code
            else ""
        )
        self.console.print(
            f"Running {result.script}... [{style}]{mark(result)}[/]"
            f" [dim]({duration_text(result.duration)}{extra})[/]"
        )

    def group_stopped(self, failed: str, skipped: list[str]) -> None:
        for line in stopped_lines(failed, skipped):
            self.console.print(f"[yellow]{line}[/]")

    def group_finished(self, outcome: GroupResult) -> None:
        if self.live is not None:
            with self.lock:
                self.running.clear()  # the live area ends empty: nothing to erase
                self.waiting.clear()
            self.live.refresh()
            self.live.stop()
        if outcome.mode == "parallel":
            for line in summary_lines(outcome):
                style = "red" if line.strip().startswith("Failed") else ""
                self.console.print(f"[{style}]{line}[/]" if style else line)


def reporter_for(color_setting: bool, out: TextIO = sys.stdout) -> PlainReporter | RichReporter:
    """The rich live view on a terminal, else the plain text."""
    if out.isatty() and os.environ.get("TERM") != "dumb":
        return RichReporter(use_color(color_setting, out))
    return PlainReporter(out)


def single_run_line(result: RunResult) -> str:
    """The closing line of ``run NAME``."""
    if result.ok:
        return f"{result.script} {OK} ({duration_text(result.duration)})"
    why = f"exit {result.exit_code}" if result.exit_code is not None else result.status
    if result.status == RunStatus.TIMEOUT:
        why = "timeout"
    return (
        f"{result.script} {mark(result).split(' (')[0]} ({why}, {duration_text(result.duration)})"
    )


__all__ = ["PlainReporter", "RichReporter", "reporter_for"]
