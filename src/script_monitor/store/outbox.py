"""The notification outbox: messages recorded once per key, then claimed and sent."""

from __future__ import annotations

import time

from ..states import MessageState
from .core import Core
from .owner import Owner
from .records import Message, NewMessage

_PENDING = MessageState.PENDING.value
_SENT = MessageState.SENT.value


class Outbox:
    """The ``notifications`` table."""

    def __init__(self, core: Core):
        self.core = core

    def add(self, messages: list[NewMessage]) -> list[int]:
        """Record messages as pending (once per key); return the ids of the new ones."""
        now = time.time()
        ids = []
        with self.core.write() as tx:
            for m in messages:
                new = tx.insert(
                    "INSERT INTO notifications (key, event, unit, ref, run_id, channel, title,"
                    " body, state, created, next_try) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (key) DO NOTHING",
                    (
                        m.key, m.event, m.unit, m.ref, m.run_id, m.channel, m.title, m.body,
                        _PENDING, now, now,
                    ),
                )  # fmt: skip
                if new is not None:
                    ids.append(new)
        return ids

    def last_unit_event(self, unit: str, events: tuple[str, ...]) -> str | None:
        """The newest of ``events`` recorded for a run unit, if any."""
        marks = ", ".join("?" * len(events))
        rows = self.core.read(
            f"SELECT event FROM notifications WHERE unit = ? AND event IN ({marks})"
            " ORDER BY id DESC LIMIT 1",
            (unit, *events),
        )
        return rows[0][0] if rows else None

    def due(self, now: float) -> bool:
        """Whether a pending message may be tried now."""
        rows = self.core.read(
            "SELECT 1 FROM notifications WHERE state = ? AND next_try <= ? LIMIT 1",
            (_PENDING, now),
        )
        return bool(rows)

    def claim(
        self, now: float, lease: float, limit: int = 20, force: bool = False, after: int = 0
    ) -> list[Message]:
        """Take pending messages that are due (with ``force``, all pending ones) for this
        process; a claim held by another live process is left alone.

        The check and the claim are one write transaction (on PostgreSQL the rows are
        locked, and rows another sender has locked are skipped), so two processes never
        take the same message.  Only ids above ``after``: one pass tries each once."""
        core = self.core
        cond = "state = ? AND id > ?" + ("" if force else " AND next_try <= ?")
        args: tuple = (_PENDING, after) if force else (_PENDING, after, now)
        with core.write() as tx:
            rows = tx.all(
                f"SELECT {Message.COLUMNS} FROM notifications WHERE {cond} ORDER BY id LIMIT ?"
                + core.dialect.skip_locked,
                (*args, limit * 4),
            )
            taken = []
            for row in rows:
                note = Message.from_row(row)
                holder = note.claimed_by
                if holder and (note.claimed_until or 0) > now:
                    if holder == core.owner_text:
                        continue  # this process is sending it
                    owner = Owner.parse(holder)
                    if owner is None or not owner.is_gone(core.owner):
                        continue  # another live process is sending it
                same = "claimed_by IS NULL" if holder is None else "claimed_by = ?"
                cur = tx.execute(
                    "UPDATE notifications SET claimed_by = ?, claimed_until = ? WHERE id = ?"
                    f" AND state = ? AND {same}",
                    (
                        core.owner_text,
                        now + lease,
                        note.id,
                        _PENDING,
                        *([holder] if holder else []),
                    ),
                )
                if cur.rowcount == 1:
                    taken.append(note)
                if len(taken) >= limit:
                    break
            return taken

    def finish_attempt(
        self, note_id: int, state: MessageState, accepted: str, error: str | None, next_try: float
    ) -> None:
        """Record one delivery attempt of a message this process had claimed."""
        now = time.time()
        with self.core.write() as tx:
            tx.execute(
                "UPDATE notifications SET state = ?, accepted = ?, last_error = ?,"
                " attempts = attempts + 1, next_try = ?, sent = ?,"
                " claimed_by = NULL, claimed_until = NULL WHERE id = ? AND claimed_by = ?",
                (
                    state.value,
                    accepted,
                    error,
                    next_try,
                    now if state == _SENT else None,
                    note_id,
                    self.core.owner_text,
                ),
            )

    def release(self, note_ids: list[int]) -> None:
        """Give back messages this process claimed and did not try (it is leaving):
        the next sender takes them at once instead of after the claim's lease."""
        if not note_ids:
            return
        marks = ",".join("?" * len(note_ids))
        with self.core.write() as tx:
            tx.execute(
                "UPDATE notifications SET claimed_by = NULL, claimed_until = NULL"
                f" WHERE id IN ({marks}) AND claimed_by = ?",
                (*note_ids, self.core.owner_text),
            )

    def record_sent(self, messages: list[NewMessage]) -> None:
        """Record messages that were sent at once (``notify-test``), never retried."""
        now = time.time()
        with self.core.write() as tx:
            tx.executemany(
                "INSERT INTO notifications (key, event, unit, ref, run_id, channel, title,"
                " body, state, attempts, accepted, created, next_try, sent, last_error)"
                " VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                [
                    (
                        m.key, m.event, m.unit, m.ref, m.channel, m.title, m.body, str(m.state),
                        m.accepted, now, now, now if m.state == _SENT else None, m.last_error,
                    )
                    for m in messages
                ],
            )  # fmt: skip

    def messages(self, limit: int = 20) -> list[Message]:
        """Recorded messages, newest first."""
        rows = self.core.read(
            f"SELECT {Message.COLUMNS} FROM notifications ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [Message.from_row(r) for r in rows]

    def counts(self) -> list[tuple[str, str, int]]:
        """(channel, state, messages)."""
        rows = self.core.read(
            "SELECT channel, state, COUNT(*) FROM notifications GROUP BY channel, state"
        )
        return [(r[0], r[1], r[2]) for r in rows]
