"""Running totals of finished runs, for ``/metrics``.

``/metrics`` counts runs from the history, so runs made by any process count.  It
keeps totals in memory and adds, at each scrape, the runs after the last id it saw
(``Totals.since``).  So that a new server neither scans ten million rows nor sees
counters go down when old runs are pruned, the totals of every finished run up to a
run id are also kept in the history (``run_totals``, rolled forward by ``roll``
before pruning); a scrape starts from them.
"""

from __future__ import annotations

import json
from typing import Any

from ..states import RunStatus
from .core import Core, Tx

# Upper bounds of the duration histogram (seconds).
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0)
# Upper bounds of the CPU (user + system seconds) and peak memory (bytes) histograms.
CPU_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
RSS_BUCKETS = tuple(float(1 << n) for n in (20, 22, 24, 26, 28, 30, 32, 34))  # 1 MiB .. 16 GiB
# After the duration buckets, a group's row holds its usage: the slow and fast runs; the
# sum, count and bucket counts of CPU seconds; the same of peak memory.
USAGE_LEN = 2 + 2 + len(CPU_BUCKETS) + 2 + len(RSS_BUCKETS)
_RUNNING = RunStatus.RUNNING.value
_CPU = "cpu_user + cpu_system"
_CASES = "".join(f", COUNT(*) FILTER (WHERE duration <= {float(b)!r})" for b in DURATION_BUCKETS)
_USAGE = (
    ", COUNT(*) FILTER (WHERE anomaly = 'slow'), COUNT(*) FILTER (WHERE anomaly = 'fast'),"
    f" COALESCE(SUM({_CPU}), 0), COUNT(cpu_user)"
    + "".join(f", COUNT(*) FILTER (WHERE {_CPU} <= {b!r})" for b in CPU_BUCKETS)
    + ", COALESCE(SUM(CAST(max_rss AS DOUBLE PRECISION)), 0), COUNT(max_rss)"
    + "".join(f", COUNT(*) FILTER (WHERE max_rss <= {b!r})" for b in RSS_BUCKETS)
)
_GROUPED = (
    "SELECT script, status, COUNT(*), MAX(started), MAX(ended), MAX(id), SUM(duration),"
    f" COUNT(duration){_CASES}{_USAGE} FROM runs WHERE id > ? AND id <= ?"
    " GROUP BY script, status"
)
_FIXED = 8 + len(DURATION_BUCKETS)  # the columns of a group's row before its usage


class Totals:
    """The ``run_totals`` table and the scrape's snapshot."""

    def __init__(self, core: Core):
        self.core = core

    def upto(self, tx: Tx) -> int:
        row = tx.one("SELECT upto FROM run_totals_upto")
        return row[0] if row else 0

    def since(self, after_id: int, watched: list[int]) -> dict[str, Any]:
        """What /metrics needs to bring its totals up to date, in one snapshot.

        ``groups``: one row per (script, status): script, status, count, max started,
        max ended, max id, sum of durations, count of durations, one count per
        bucket of ``DURATION_BUCKETS``, then the ``USAGE_LEN`` values of its usage
        (``_USAGE``): the kept totals (when ``after_id`` is 0) and the runs above
        ``after_id``.  ``running``: (id, script) of those still running; ``watched``:
        the rows of the given ids (runs that were running before) as (id, script,
        status, started, ended, duration, anomaly, cpu_user, cpu_system, max_rss);
        ``top``: the highest run id seen.
        """
        with self.core.snapshot() as tx:
            top = tx.one("SELECT COALESCE(MAX(id), 0) FROM runs")[0]
            groups: list[Any] = []
            if after_id == 0:
                after_id = self.upto(tx)
                groups += [_unpack(r) for r in tx.all(f"SELECT {_KEPT} FROM run_totals")]
                top = max(top, after_id)
            groups += tx.all(_GROUPED, (after_id, top))
            running = tx.all(
                f"SELECT id, script FROM runs WHERE status = '{_RUNNING}' AND id > ? AND id <= ?",
                (after_id, top),
            )
            rows: list[Any] = []
            for i in range(0, len(watched), 500):
                part = watched[i : i + 500]
                rows += tx.all(
                    "SELECT id, script, status, started, ended, duration, anomaly, cpu_user,"
                    " cpu_system, max_rss FROM runs"
                    f" WHERE id IN ({','.join('?' * len(part))})",
                    part,
                )
        return {"top": top, "groups": groups, "running": running, "watched": rows}

    def roll(self, tx: Tx, batch: int = 20_000) -> int:
        """Add finished runs after the kept totals' id to them, up to the first run still
        running (at most ``batch`` ids); return the new id."""
        upto = self.upto(tx)
        first_running = tx.one(f"SELECT MIN(id) FROM runs WHERE status = '{_RUNNING}'")[0]
        top = tx.one("SELECT COALESCE(MAX(id), 0) FROM runs")[0]
        end = min(top, upto + batch, (first_running or top + 1) - 1)
        if end <= upto:
            return upto
        rows = tx.all(_GROUPED, (upto, end))
        kept = self._kept(tx, sorted({r[0] for r in rows}))
        tx.executemany(
            f"INSERT INTO run_totals ({_KEPT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (script, status) DO UPDATE SET runs = excluded.runs,"
            " max_started = excluded.max_started, max_ended = excluded.max_ended,"
            " max_id = excluded.max_id, duration_sum = excluded.duration_sum,"
            " duration_count = excluded.duration_count, buckets = excluded.buckets,"
            " usage = excluded.usage",
            [_merged(row, kept.get((row[0], row[1]))) for row in rows],
        )
        tx.execute("DELETE FROM run_totals_upto")
        tx.execute("INSERT INTO run_totals_upto (upto) VALUES (?)", (end,))
        return end

    def _kept(self, tx: Tx, scripts: list[str]) -> dict[tuple[str, str], Any]:
        """The kept rows of these scripts, by (script, status): one query per 500."""
        out: dict[tuple[str, str], Any] = {}
        for i in range(0, len(scripts), 500):
            part = scripts[i : i + 500]
            for row in tx.all(
                f"SELECT {_KEPT} FROM run_totals WHERE script IN ({','.join('?' * len(part))})",
                part,
            ):
                out[(row[0], row[1])] = row
        return out


_KEPT = (
    "script, status, runs, max_started, max_ended, max_id, duration_sum, duration_count,"
    " buckets, usage"
)


def _usage_of(text: str | None) -> list:
    """A kept row's usage (zeros for totals kept before usage was recorded)."""
    return json.loads(text) if text else [0] * USAGE_LEN


def _unpack(row: Any) -> tuple:
    counts = json.loads(row[8])
    return (*row[:8], *counts, *_usage_of(row[9]))


def _merged(row: Any, old: Any) -> tuple:
    """A ``run_totals`` row: the kept one (or None) plus a grouped row of new runs."""
    script, status, n, started, ended, top_id, dsum, dcount = row[:8]
    counts = list(row[8:_FIXED])
    usage = [x or 0 for x in row[_FIXED:]]
    if old is not None:
        n += old[2]
        started = max(x for x in (started, old[3], 0.0) if x is not None)
        ended = max(x for x in (ended, old[4], 0.0) if x is not None)
        top_id = max(top_id, old[5] or 0)
        dsum = (dsum or 0.0) + old[6]
        dcount += old[7]
        counts = [a + b for a, b in zip(counts, json.loads(old[8]), strict=True)]
        usage = [a + b for a, b in zip(usage, _usage_of(old[9]), strict=True)]
    return (
        script,
        status,
        n,
        started,
        ended,
        top_id,
        dsum or 0.0,
        dcount,
        json.dumps(counts),
        json.dumps(usage),
    )
