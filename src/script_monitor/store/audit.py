"""The web server's audit trail and its signed-out sessions (docs/SECURITY.md).

Every launch and every sign-in, sign-out or wrong token is one row: when, which token
(its name, never its value), from which client address, what, on what, and whether it
was accepted or refused (and why).  Refusals pruned by retention are kept as totals by
reason, so the /metrics counter of refusals never goes down.
"""

from __future__ import annotations

import time

from ..states import AuditAction, AuditResult
from .core import Core, Tx
from .records import AuditRow

MAX_ROWS = 10_000  # most rows one listing returns
_REFUSED = AuditResult.REFUSED.value


class Audit:
    """The ``audit``, ``audit_refusals`` and ``revoked_sessions`` tables."""

    def __init__(self, core: Core):
        self.core = core

    def record(
        self,
        token_name: str,
        client: str,
        action: AuditAction,
        target: str,
        result: AuditResult,
        reason: str = "",
    ) -> None:
        """Add one row to the audit trail."""
        with self.core.write() as tx:
            tx.execute(
                "INSERT INTO audit (at, token_name, client, action, target, result, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), token_name, client, str(action), target, str(result), reason),
            )

    def rows(self, since: float | None = None, limit: int = 1000) -> list[AuditRow]:
        """The newest ``limit`` rows at or after ``since`` (a UNIX time), oldest first."""
        found = self.core.read(
            f"SELECT {AuditRow.COLUMNS} FROM audit WHERE at >= ? ORDER BY id DESC LIMIT ?",
            (since or 0.0, max(1, min(limit, MAX_ROWS))),
        )
        return [AuditRow.from_row(r) for r in reversed(found)]

    def refusals(self) -> dict[str, int]:
        """Refused requests by reason, since the history began (pruned ones included)."""
        out: dict[str, int] = {}
        with self.core.snapshot() as tx:
            for reason, n in tx.all(
                "SELECT reason, COUNT(*) FROM audit WHERE result = ? GROUP BY reason", (_REFUSED,)
            ):
                out[str(reason)] = out.get(str(reason), 0) + int(n)
            for reason, n in tx.all("SELECT reason, refused FROM audit_refusals"):
                out[str(reason)] = out.get(str(reason), 0) + int(n)
        return out

    def revoke(self, sid: str, expires: float) -> None:
        """End a session for good: its cookie is refused until it would have expired anyway."""
        with self.core.write() as tx:
            tx.execute("DELETE FROM revoked_sessions WHERE expires < ?", (time.time(),))
            tx.execute(
                "INSERT INTO revoked_sessions (sid, expires) VALUES (?, ?)"
                " ON CONFLICT (sid) DO NOTHING",
                (sid, expires),
            )

    def revoked(self) -> set[str]:
        """The ids of the sessions ended by signing out that have not expired yet."""
        found = self.core.read(
            "SELECT sid FROM revoked_sessions WHERE expires >= ?", (time.time(),)
        )
        return {str(row[0]) for row in found}


def prune_audit(tx: Tx, cutoff: float, batch: int) -> int:
    """Delete up to ``batch`` audit rows older than ``cutoff``, their refusals added to
    the kept totals first; return how many went."""
    ids = [
        r[0]
        for r in tx.all("SELECT id FROM audit WHERE at < ? ORDER BY id LIMIT ?", (cutoff, batch))
    ]
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    for reason, n in tx.all(
        f"SELECT reason, COUNT(*) FROM audit WHERE id IN ({marks}) AND result = ? GROUP BY reason",
        (*ids, _REFUSED),
    ):
        tx.execute(
            "INSERT INTO audit_refusals (reason, refused) VALUES (?, ?) ON CONFLICT (reason)"
            " DO UPDATE SET refused = audit_refusals.refused + excluded.refused",
            (reason, n),
        )
    tx.execute(f"DELETE FROM audit WHERE id IN ({marks})", ids)
    tx.execute("DELETE FROM revoked_sessions WHERE expires < ?", (time.time(),))
    return len(ids)
