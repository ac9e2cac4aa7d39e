"""audit: the web server's audit trail (docs/SECURITY.md)."""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import datetime

from ..errors import EXIT_OK, UsageError
from . import load, open_store

AGO = re.compile(r"([0-9]{1,9})([smhdw])")
UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def cmd_audit(args: argparse.Namespace) -> int:
    from ..serialize import audit_json

    config = load(args)
    since = None if args.since is None else parse_since(args.since, time.time())
    rows = open_store(config).audit.rows(since, args.limit)
    if args.json:
        print(json.dumps([audit_json(r) for r in rows], indent=2))
        return EXIT_OK
    if not rows:
        print("nothing in the audit trail" + (f" since {args.since}" if since else ""))
        return EXIT_OK
    from .history import _table

    fmt = config.settings.display.date_format
    table = [
        [
            datetime.fromtimestamp(r.at).strftime(fmt),
            r.token_name,
            r.client,
            r.action,
            r.target,
            r.result,
            r.reason,
        ]
        for r in rows
    ]
    headers = ["WHEN", "TOKEN", "CLIENT", "ACTION", "TARGET", "RESULT", "REASON"]
    _table(args, config, headers, table, 5)
    return EXIT_OK


def parse_since(text: str, now: float) -> float:
    """A UNIX time from ``30m``, ``12h``, ``7d``, ``2w`` (ago) or an ISO 8601 date/time."""
    m = AGO.fullmatch(text.strip())
    if m:
        return now - int(m.group(1)) * UNIT[m.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since {text!r}: give a time ago (30m, 12h, 7d, 2w) or an ISO date "
            "(2026-12-06 or 2026-12-06T21:00)"
        ) from None
    return moment.timestamp()
