"""What a run and a group run came to: the values the engine returns and reports."""

from __future__ import annotations

from pathlib import Path

import msgspec

from .states import FAILURES, RunStatus


class RunResult(msgspec.Struct):
    """The outcome of one script run (of its last attempt, in a group's results)."""

    script: str
    status: str
    exit_code: int | None = None
    signal: int | None = None
    duration: float = 0.0
    run_id: int | None = None
    log_path: Path | None = None
    detail: str | None = None
    attempt: int = 1
    anomaly: str | None = None  # ``slow`` or ``fast``: its duration left the usual band
    usage: tuple[float, float, int] | None = None  # CPU user s, CPU system s, peak bytes

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.SUCCESS

    @property
    def failed(self) -> bool:
        return self.status in FAILURES


class GroupResult(msgspec.Struct):
    """The outcome of a group run; ``results`` follow the group's order."""

    name: str
    mode: str
    scripts: list[str]
    results: list[RunResult] = msgspec.field(default_factory=list)
    status: str = RunStatus.SUCCESS
    group_run_id: int | None = None

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.results if r.failed]

    @property
    def completed(self) -> list[RunResult]:
        return [r for r in self.results if r.ok or r.failed]

    @property
    def skipped(self) -> list[RunResult]:
        return [r for r in self.results if r.status == RunStatus.SKIPPED]
