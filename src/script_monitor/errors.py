"""Expected errors: each carries a message for the user and an exit code."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Problem(msgspec.Struct, frozen=True):
    """One configuration problem, with the file and line it comes from."""

    level: str  # "error" | "warning"
    file: Path | None
    line: int | None
    message: str

    @classmethod
    def error(cls, file: Path | None, line: int | None, message: str) -> Problem:
        return cls("error", file, line, message)

    @classmethod
    def warning(cls, file: Path | None, line: int | None, message: str) -> Problem:
        return cls("warning", file, line, message)

    def as_error(self) -> Problem:
        return Problem("error", self.file, self.line, self.message + " (validation.strict)")

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        return f"{where}{self.level}: {self.message}"


class ScriptMonitorError(Exception):
    """An expected error: printed as a short message, never a traceback."""

    exit_code = EXIT_USAGE


class UsageError(ScriptMonitorError):
    pass


class UnknownName(UsageError):
    """A script or group name that is not configured: a typo, not an invalid configuration."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = ""):
        import difflib

        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
        self.suggestions = close
        text = f"unknown {kind} '{name}'"
        if hint:
            text += f" ({hint})"
        if close:
            quoted = [f"'{c}'" for c in close]
            alts = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
            text += f"; did you mean {alts}?"
        elif not hint:
            verb = "list-groups" if kind == "group" else "list"
            text += f"; `script-monitor {verb}` shows every {kind}"
        self.kind, self.name = kind, name
        super().__init__(text)


class ConfigError(ScriptMonitorError):
    def __init__(self, problems: list[Problem], warnings: list[Problem] | None = None):
        self.problems = problems
        self.warnings = warnings or []
        super().__init__("\n".join(str(p) for p in problems))


class StoreError(ScriptMonitorError):
    """The run-history database cannot be used."""


class StoreBusy(StoreError):
    """Another process held the history's lock for longer than the busy timeout."""


class StoreUnreachable(StoreError):
    """The history cannot be opened or its server cannot be reached."""


class StoreFull(StoreError):
    """The history cannot be written: its disk is full (or failing)."""


class StoreCorrupt(StoreError):
    """The history's file is not a database, or is damaged."""


class SchemaMismatch(StoreError):
    """The history's schema is older or newer than this script-monitor's."""
