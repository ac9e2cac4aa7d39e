"""Messages: plain text that answers "what broke and why" in e-mail and chat alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ..logs import RULE
from ..states import FAILURES, LogState, RunStatus

if TYPE_CHECKING:
    from ..anomaly import Band
    from ..config import Config
    from ..masking import Masker
    from ..store.records import AlertMatch, Run

TAIL_LINES = 20
TAILS_SHOWN = 10  # scripts of one message whose log tail is quoted; the rest are named
LINE_WIDTH = 500
ALERT_LINES = 10  # matching lines quoted per run in an `output` message
WORDS = {
    "failure": "FAILED",
    "recovery": "RECOVERED",
    "success": "SUCCEEDED",
    "output": "OUTPUT ALERT",
    "missed": "MISSED",
    "overdue": "OVERDUE",
    "anomaly": "UNUSUAL DURATION",
    "test": "TEST",
}


class Entry(msgspec.Struct):
    """One script run of a run unit, as a message tells it."""

    script: str
    status: str
    exit_code: int | None = None
    duration: float | None = None
    run_id: int | None = None
    log_path: str | None = None  # absolute
    detail: str | None = None
    anomaly: str | None = None  # ``slow`` or ``fast`` (docs/MONITORING.md)


class Unit(msgspec.Struct):
    """A finished run unit: a group run (``kind`` group) or a single ``run NAME``."""

    name: str
    kind: str  # group | script
    ref_id: int | None
    status: str
    trigger: str = "manual"
    entries: list[Entry] = msgspec.field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{'g' if self.kind == 'group' else 'r'}{self.ref_id}"

    @property
    def label(self) -> str:
        if self.name == "(all)":
            return "run-all"
        return f"{'group' if self.kind == 'group' else 'script'} {self.name}"


def host() -> str:
    return os.uname().nodename


def title(unit_name: str, event: str) -> str:
    """``script-monitor: nightly FAILED on db1``."""
    return f"script-monitor: {unit_name} {WORDS.get(event, event.upper())} on {host()}"


def failure_body(config: Config, unit: Unit, mask: Masker) -> str:
    failed = [e for e in unit.entries if e.status in FAILURES]
    lines = [f"{_cap(unit.label)} failed on {host()}: {_count(failed, unit)}.", _where(unit), ""]
    for i, e in enumerate(failed):
        lines.append(_entry_line(e))
        if e.detail:
            lines.append(f"  note: {_clip(e.detail)}")
        if i < TAILS_SHOWN:
            tail = log_tail(e.log_path)
            if tail:
                lines.append(f"  last {len(tail)} log lines:")
                lines += [f"    {_clip(t)}" for t in tail]
        if e.run_id is not None and e.log_path:
            lines.append(f"  full log: {logs_command(config, e.script, e.run_id)}")
        lines.append("")
    others = [e for e in unit.entries if e not in failed and e.status != RunStatus.SUCCESS]
    if others:
        lines.append("Not run to success: " + ", ".join(f"{e.script} ({e.status})" for e in others))
    return mask.text("\n".join(lines).rstrip() + "\n") or ""


def success_body(unit: Unit, event: str, last_failure: str | None = None) -> str:
    n = len(unit.entries)
    what = "succeeded again" if event == "recovery" else "succeeded"
    lines = [
        f"{_cap(unit.label)} {what} on {host()}: {n} script{'s' * (n != 1)} ran successfully.",
        _where(unit),
    ]
    if event == "recovery" and last_failure:
        lines.append(f"It had failed before ({last_failure}).")
    lines += [""] + [_entry_line(e) for e in unit.entries]
    return "\n".join(lines).rstrip() + "\n"


def output_body(config: Config, unit: Unit, matches: list[AlertMatch], counts: dict) -> str:
    """The first ALERT_LINES matching lines of each run; ``counts``: matches per run."""
    runs = {m.run_id for m in matches}
    lines = [
        f"{_cap(unit.label)} on {host()}: output alerts matched in {len(runs)} script"
        f" run{'s' * (len(runs) != 1)}.",
        _where(unit),
        "",
    ]
    by_run: dict[int, list[AlertMatch]] = {}
    for m in sorted(matches, key=lambda m: (m.run_id, m.line_number)):
        by_run.setdefault(m.run_id, []).append(m)
    for run_id, found in by_run.items():
        script = found[0].script
        lines.append(f"{script} (run {run_id}):")
        for m in found[:ALERT_LINES]:
            lines.append(f"  line {m.line_number} [{m.severity}]: {_clip(m.line)}")
        more = counts.get(run_id, len(found)) - min(len(found), ALERT_LINES)
        if more > 0:
            lines.append(f"  … and {more} more matching lines")
        lines.append(f"  full log: {logs_command(config, script, run_id)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def anomaly_body(config: Config, unit: Unit, entry: Entry, band: Band | None) -> str:
    """One run whose duration left its script's usual band (``anomaly``)."""
    took = f"{entry.duration:.3g}s" if entry.duration is not None else "?"
    if band is not None:
        factor = band.high / band.median if entry.anomaly == "slow" else band.low / band.median
        limit = band.high if entry.anomaly == "slow" else band.low
        side = "more" if entry.anomaly == "slow" else "less"
        usual = (
            f": {side} than {factor:g} × its usual {band.median:.3g}s ({limit:.3g}s; the median"
            f" of its last {band.runs} successful runs)"
        )
    else:
        usual = ""
    where = f" (in {unit.label})" if unit.kind == "group" else ""
    return (
        f"Script {entry.script}{where} on {host()}: run {entry.run_id} succeeded in {took},"
        f" unusually {'slow' if entry.anomaly == 'slow' else 'fast'}{usual}.\n"
        f"Look: script-monitor --config-dir {config.root} history {entry.script}\n"
    )


def logs_command(config: Config, script: str, run_id: int) -> str:
    import shlex

    return (
        f"script-monitor --config-dir {shlex.quote(str(config.root))} logs {script} --run {run_id}"
    )


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _count(failed: list[Entry], unit: Unit) -> str:
    if unit.kind == "script":
        return failed[0].status if failed else unit.status
    n = len(unit.entries)
    return f"{len(failed)} of {n} script{'s' * (n != 1)} failed"


def _where(unit: Unit) -> str:
    what = "group run" if unit.kind == "group" else "run"
    return f"({what} {unit.ref_id}, trigger {unit.trigger})"


def _entry_line(e: Entry) -> str:
    code = "no exit code" if e.exit_code is None else f"exit code {e.exit_code}"
    took = "" if e.duration is None else f", {e.duration:.1f}s"
    run = f" (run {e.run_id})" if e.run_id is not None else ""
    return f"- {e.script}{run}: {e.status}, {code}{took}"


def _clip(text: str) -> str:
    text = text.replace("\r", "").replace("\t", "    ")
    return text if len(text) <= LINE_WIDTH else text[: LINE_WIDTH - 1] + "…"


def log_tail(path: str | None, count: int = TAIL_LINES) -> list[str]:
    """The last ``count`` lines a script wrote, from its log (header and footer left out)."""
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - 64 * 1024)
            f.seek(start)
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").split("\n")
    if start > 0:
        lines = lines[1:]  # a partial line
    elif lines.count(RULE) >= 2:  # the header: RULE, fields, RULE
        second = lines.index(RULE, lines.index(RULE) + 1)
        lines = lines[second + 1 :]
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) >= 2 and lines[-1] == RULE and RULE in lines[:-1]:  # the footer
        lines = lines[: len(lines) - 1 - lines[:-1][::-1].index(RULE) - 1]
    return lines[-count:]


def entries_from_rows(config: Config, rows: list[Run]) -> list[Entry]:
    """Entries from history rows (a lost unit is told from the store)."""
    out = []
    for r in rows:
        path = str(Path(config.log_dir) / r.log_path) if r.log_path else None
        out.append(
            Entry(
                r.script,
                r.status,
                r.exit_code,
                r.duration,
                r.id,
                path if r.log_state is LogState.OK else None,
                r.detail,
            )
        )
    return out
