"""Output alerts (docs/NOTIFICATIONS.md): regular expressions matched line by line as the
output streams.

The matcher is fed the bytes the relay thread (``masking.Pump``) writes to the log, so
patterns see the output as logged, secrets already masked, and nothing is held: a
chunk is searched as it comes and only an unfinished last line (at most
``LINE_LIMIT`` bytes of it) is kept for the next chunk.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .states import RunStatus

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .config import Alert
    from .proc import ProcResult
    from .store.api import History

LINE_LIMIT = 64 * 1024  # bytes of one line that are matched; the rest of a longer line is not
KEEP = 1000  # matches recorded per run; the others are counted
TEXT_LIMIT = 1000  # characters of a matching line that are recorded
# Patterns a search over many lines at once could read differently from one line alone.
_LINE_ONLY = re.compile(r"\\[AZ]|\(\?<[=!]|\\n|\(\?[a-z]*s")


class _Pattern:
    __slots__ = ("block", "fail", "line", "severity", "text")

    def __init__(self, alert: Alert):
        self.text = alert.pattern
        self.line = re.compile(alert.pattern)
        # Over a block of lines, ^ and $ must still mean a line's start and end.
        self.block = (
            None if _LINE_ONLY.search(alert.pattern) else re.compile(alert.pattern, re.MULTILINE)
        )
        self.severity = alert.severity
        self.fail = alert.fail


class Matcher:
    """Feed it output bytes (``feed``), then ``close``; read ``matches`` and ``dropped``.

    Each match is ``(line_number, line, severity, pattern, fail)``.
    """

    def __init__(self, alerts: list[Alert]):
        self.patterns = [_Pattern(a) for a in alerts]
        self.matches: list[tuple[int, str, str, str, bool]] = []
        self.dropped = 0
        self.failed: tuple[int, str] | None = None  # the first `fail: true` match
        self.lines = 0  # complete lines seen
        self._part = bytearray()  # the unfinished last line (at most LINE_LIMIT bytes)
        self._skipping = False  # inside a line longer than LINE_LIMIT, past its limit

    def feed(self, data: bytes) -> None:
        """Match the complete lines in ``data`` (with what was kept from before)."""
        end = data.rfind(b"\n")
        if end < 0:
            self._keep(data)
            return
        first = data.find(b"\n")
        head = data[:first]
        if self._part or self._skipping:  # finish the line started in an earlier chunk
            if not self._skipping:
                self._part += head[: LINE_LIMIT - len(self._part)]
            self._line(bytes(self._part))
            self._part.clear()
            self._skipping = False
            start = first + 1
        else:
            start = 0
        if start <= end:
            self._block(data[start : end + 1])
        self._keep(data[end + 1 :])

    def close(self) -> None:
        """The output ended: match an unfinished last line."""
        if self._part or self._skipping:
            self._line(bytes(self._part))
            self._part.clear()
            self._skipping = False

    def _keep(self, rest: bytes) -> None:
        if self._skipping or not rest:
            return
        room = LINE_LIMIT - len(self._part)
        self._part += rest[:room]
        if len(rest) > room:  # a line longer than the limit: its first LINE_LIMIT bytes
            self._line(bytes(self._part))  # are matched now, the rest is passed over
            self._part.clear()
            self._skipping = True
            self.lines -= 1  # counted when its newline comes

    def _line(self, raw: bytes) -> None:
        """One line on its own (a line split across chunks, or a long one)."""
        self.lines += 1
        text = raw.decode("utf-8", errors="replace")
        for p in self.patterns:
            if p.line.search(text):
                self._record(self.lines, text.rstrip("\r"), p)

    def _block(self, raw: bytes) -> None:
        """Complete lines ending in a newline, searched all at once."""
        base = self.lines
        if b"\n" in raw[:-1] and any(len(x) > LINE_LIMIT for x in _long(raw)):
            for line in raw[:-1].split(b"\n"):  # rare: lines over the limit, one by one
                self._line(line[:LINE_LIMIT])
            return
        text = raw.decode("utf-8", errors="replace")
        self.lines = base + text.count("\n")
        found: dict[int, list] = {}
        for p in self.patterns:
            if p.block is None:
                for i, one in enumerate(text[:-1].split("\n")):
                    if p.line.search(one):
                        found.setdefault(i, []).append((one, p))
                continue
            self._scan(text, p, found)
        for number in sorted(found):
            for line, p in found[number]:
                self._record(base + number + 1, line.rstrip("\r"), p)

    def _scan(self, text: str, p: _Pattern, found: dict[int, list]) -> None:
        """Find the lines of ``text`` that ``p`` matches: search the whole block, then
        check each candidate's line on its own (the line-by-line meaning)."""
        assert p.block is not None
        pos, counted, number = 0, 0, 0
        while True:
            m = p.block.search(text, pos)
            if m is None:
                return
            start = text.rfind("\n", 0, m.start()) + 1
            stop = text.find("\n", m.start())
            number += text.count("\n", counted, start)
            counted = start
            line = text[start:stop]
            if p.line.search(line):
                found.setdefault(number, []).append((line, p))
            pos = stop + 1
            if pos >= len(text):
                return

    def _record(self, number: int, text: str, p: _Pattern) -> None:
        if p.fail and self.failed is None:
            self.failed = (number, p.text)
        if len(self.matches) < KEEP:
            self.matches.append((number, text[:TEXT_LIMIT], p.severity, p.text, p.fail))
        else:
            self.dropped += 1


def _long(raw: bytes) -> Iterable[bytes]:
    """Lines of ``raw`` that may be longer than the limit (only checked when raw is)."""
    if len(raw) <= LINE_LIMIT:
        return ()
    return (x for x in raw.split(b"\n") if len(x) > LINE_LIMIT)


def fail_detail(matcher: Matcher) -> str | None:
    """Why a ``fail: true`` alert failed the run, for its ``detail``."""
    if matcher.failed is None:
        return None
    number, pattern = matcher.failed
    return f"output alert {pattern!r} matched line {number} (fail: true)"


def conclude(
    matcher: Matcher, store: History, run_id: int, script: str, result: ProcResult
) -> tuple[ProcResult, str | None]:
    """The output ended: record the run's matches; a ``fail: true`` match turns a
    successful result into a failed one (its exit code kept).  Returns (result, note)."""
    import msgspec

    matcher.close()
    if matcher.matches or matcher.dropped:
        store.alerts.add(run_id, script, matcher.matches, matcher.dropped)
    note = fail_detail(matcher)
    if note is not None and result.status == RunStatus.SUCCESS:
        return msgspec.structs.replace(result, status=RunStatus.FAILED), note
    return result, note
