"""The web server's audit trail and its signed-out sessions, kept in the run history
(SQLite or PostgreSQL) beside the runs (docs/SECURITY.md).

Every launch and every sign-in, sign-out or wrong token is one row: when, which token
(its name, never its value), from which client address, what, on what, and whether it
was accepted or refused (and why).
"""

from __future__ import annotations

import time
from typing import Any

from .states import AuditAction, AuditResult
from .store import Store

FIELDS = ("id", "at", "token_name", "client", "action", "target", "result", "reason")
MAX_ROWS = 10_000  # most rows one listing returns


def record(
    store: Store,
    token_name: str,
    client: str,
    action: AuditAction,
    target: str,
    result: AuditResult,
    reason: str = "",
) -> None:
    """Add one row to the audit trail."""
    with store._write() as db:
        db.execute(
            "INSERT INTO audit (at, token_name, client, action, target, result, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), token_name, client, str(action), target, str(result), reason),
        )


def rows(store: Store, since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """The newest ``limit`` rows at or after ``since`` (a UNIX time), oldest first."""
    found = store._read(
        f"SELECT {', '.join(FIELDS)} FROM audit WHERE at >= ? ORDER BY id DESC LIMIT ?",
        (since or 0.0, max(1, min(limit, MAX_ROWS))),
    )
    return [dict(zip(FIELDS, row, strict=True)) for row in reversed(found)]


def rows_json(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``audit --json`` and ``GET /api/v1/audit``: times as ISO 8601 (docs/JSON.md)."""
    from .serialize import iso

    return [{**r, "at": iso(r["at"])} for r in found]


def refusals(store: Store) -> dict[str, int]:
    """Refused requests by reason, since the history began."""
    found = store._read(
        "SELECT reason, COUNT(*) FROM audit WHERE result = ? GROUP BY reason",
        (str(AuditResult.REFUSED),),
    )
    return {str(reason): int(n) for reason, n in found}


def revoke(store: Store, sid: str, expires: float) -> None:
    """End a session for good: its cookie is refused until it would have expired anyway."""
    with store._write() as db:
        db.execute("DELETE FROM revoked_sessions WHERE expires < ?", (time.time(),))
        db.execute(
            "INSERT OR IGNORE INTO revoked_sessions (sid, expires) VALUES (?, ?)", (sid, expires)
        )


def revoked(store: Store) -> set[str]:
    """The ids of the sessions ended by signing out that have not expired yet."""
    found = store._read("SELECT sid FROM revoked_sessions WHERE expires >= ?", (time.time(),))
    return {str(row[0]) for row in found}
