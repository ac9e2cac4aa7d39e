"""Log chunks: the output of runs made on other hosts, kept in the history."""

from __future__ import annotations

from .core import Core, Tx


def drop_chunks(tx: Tx, run_ids: list[int]) -> None:
    """A rotated, cleared or pruned log goes from the history too."""
    for i in range(0, len(run_ids), 500):
        part = run_ids[i : i + 500]
        tx.execute(f"DELETE FROM run_logs WHERE run_id IN ({','.join('?' * len(part))})", part)


class LogChunks:
    """The ``run_logs`` table: a remote run's output, chunk by chunk."""

    def __init__(self, core: Core):
        self.core = core

    def add(self, run_id: int, seq: int, data: bytes) -> None:
        self.core.own(  # no retries: the shipper tries again from the same offset
            "INSERT INTO run_logs (run_id, seq, data) VALUES (?, ?, ?)",
            (run_id, seq, data),
            retry_for=0,
        )

    def sizes(self, run_id: int, after: int = -1) -> list[tuple[int, int]]:
        """(seq, bytes) of a run's log chunks after chunk ``after``: where each one starts."""
        return [
            (r[0], r[1])
            for r in self.core.read(
                "SELECT seq, length(data) FROM run_logs WHERE run_id = ? AND seq > ? ORDER BY seq",
                (run_id, after),
            )
        ]

    def span(self, run_id: int, first: int, last: int) -> bytes:
        """The bytes of chunks ``first`` to ``last`` of a run's log, joined."""
        rows = self.core.read(
            "SELECT data FROM run_logs WHERE run_id = ? AND seq >= ? AND seq <= ? ORDER BY seq",
            (run_id, first, last),
        )
        return b"".join(bytes(r[0]) for r in rows)
