"""``store migrate``, ``store copy --to URL`` and ``store prune`` (docs/DISTRIBUTED.md,
docs/HISTORY.md)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from ..config import Config
from ..errors import StoreError, UsageError
from ..serialize import prune_json
from ..store import PruneReport, Store
from . import load, open_store

BATCH = 1000


def cmd_store(args: argparse.Namespace) -> int:
    config = load(args)
    store = open_store(config) if args.action == "copy" else None
    if args.action == "migrate":
        store = Store(config.state_dir, config.store_url, config.settings.store.retry_for)
        before, now = store.migrate()
        store.close()
        if before == now:
            print(f"the store {store.where} is up to date (schema version {now})")
        else:
            print(f"the store {store.where}: schema version {before} -> {now}")
        return 0
    if args.action == "prune":
        return prune(config, args.dry_run, args.before, getattr(args, "json", False))
    if not args.to:
        raise UsageError("store copy needs --to URL (postgresql://... or sqlite:///path)")
    assert store is not None
    target = _target(args.to, config.state_dir)
    if target.where == store.where:
        raise UsageError(f"store copy: {target.where} is the store it would copy from")
    target.migrate()
    counts = copy_history(store, target)
    store.close()
    target.close()
    total = ", ".join(f"{n} {t}" for t, n in counts.items())
    print(f"copied {total or 'nothing'} from {store.where} to {target.where}")
    return 0


def prune(config: Config, dry_run: bool, before: str | None, as_json: bool = False) -> int:
    """``history prune``: delete finished runs (and what hangs off them) older than the
    retention period, or than ``before``, beyond the newest ``keep_last`` of each
    script and group."""
    from .. import logs
    from ..store.retention import cutoff_for

    rule = config.settings.history.rule
    if before is not None:
        cutoff = _date(before)
    elif rule.days == 0:
        if as_json:
            print(json.dumps(prune_json(PruneReport(cutoff=None), dry_run, rule.keep_last)))
        else:
            print("history.retention.days is 0: the history is kept forever; nothing to prune")
        return 0
    else:
        cutoff = cutoff_for(rule.days)
    store = open_store(config)
    report = store.retention.prune(
        cutoff,
        rule.keep_last,
        dry_run=dry_run,
        remove=lambda paths: logs.remove(config.log_dir, paths),
    )
    store.close()
    if as_json:
        print(json.dumps(prune_json(report, dry_run, rule.keep_last), indent=2))
        return 0
    when = datetime.fromtimestamp(cutoff).strftime("%Y-%m-%d %H:%M")
    verb = "would delete" if dry_run else "deleted"
    print(
        f"{verb} {report.runs} runs, {report.group_runs} group runs,"
        f" {report.messages} notifications and {report.watch_events} watchdog findings"
        f" older than {when} (keeping the newest {rule.keep_last} of each script and group)"
    )
    return 0


def _date(text: str) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--before {text!r}: not a date (YYYY-MM-DD or an ISO 8601 time)"
        ) from None
    return when.timestamp()


def _target(url: str, state_dir: Path) -> Store:
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite://") :])
        if path.name != "history.db":
            raise UsageError(f"store copy: a SQLite target is a path ending in history.db: {url}")
        return Store(path.parent)
    return Store(state_dir, url)


def _tables(store: Store) -> dict[str, list[str]]:
    """Every table of the history with its columns (schema bookkeeping left out)."""
    if store.url is None:
        names = [
            r[0]
            for r in store.core.read(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
            )
        ]
        return {n: [r[1] for r in store.core.read(f"PRAGMA table_info({n})")] for n in names}
    out: dict[str, list[str]] = {}
    for table, column in store.core.read(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name != 'schema_version'"
        " ORDER BY table_name, ordinal_position"
    ):
        out.setdefault(table, []).append(column)
    return out


def copy_history(source: Store, target: Store) -> dict[str, int]:
    """Copy every row of every table the two stores share; the target must be empty."""
    have, want = _tables(source), _tables(target)
    shared = [t for t in have if t in want]
    for table in shared:
        if target.core.read(f"SELECT 1 FROM {table} LIMIT 1"):
            raise StoreError(
                f"store copy: the table {table} of {target.where} already has rows;"
                " copy into an empty store"
            )
    counts: dict[str, int] = {}
    # group_runs before runs, so that no row ever points at one not yet copied
    for table in sorted(shared, key=lambda t: (t != "group_runs", t != "runs", t)):
        cols = [c for c in have[table] if c in want[table]]
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        if table == "run_logs":  # remote runs' output: up to 8 MiB a run, one run at a time
            counts[table] = _copy_chunks(source, target, cols, sql)
            continue
        order = " ORDER BY id" if "id" in cols else ""
        rows = source.core.read(f"SELECT {', '.join(cols)} FROM {table}{order}")
        with target.core.write() as db:
            for i in range(0, len(rows), BATCH):
                db.executemany(sql, [tuple(r) for r in rows[i : i + BATCH]])
            if target.url is not None and "id" in cols:
                db.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                )
        counts[table] = len(rows)
    return counts


def _copy_chunks(source: Store, target: Store, cols: list[str], sql: str) -> int:
    """The log chunks of remote runs, read and written a run at a time (never the whole
    table in memory)."""
    n = 0
    for (run_id,) in source.core.read("SELECT DISTINCT run_id FROM run_logs ORDER BY run_id"):
        rows = source.core.read(
            f"SELECT {', '.join(cols)} FROM run_logs WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        with target.core.write() as db:
            db.executemany(
                sql, [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
            )
        n += len(rows)
    return n
