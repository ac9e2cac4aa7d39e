"""Cron maths with crontab(5) semantics, as pure functions of a given time."""

from __future__ import annotations

import re

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD = re.compile(r"^[A-Za-z0-9*,/-]+$")


def expand(expr: str) -> str:
    """Normalise an expression: macros become their five fields."""
    expr = " ".join(expr.split())
    return MACROS.get(expr.lower(), expr)


def parse_problem(expr: str) -> str | None:
    """Why ``expr`` is not a valid five-field crontab(5) expression, or None."""
    from datetime import datetime

    from cronsim import CronSim, CronSimError

    text = expand(expr)
    if text.startswith("@"):
        return f"unknown macro {text!r} (use one of {', '.join(MACROS)})"
    fields = text.split(" ")
    if len(fields) != 5:
        return f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
    for f in fields:
        if not _FIELD.match(f):
            return f"unsupported syntax in field {f!r}"
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as e:
        return str(e)
    except (ValueError, IndexError) as e:
        return str(e) or "invalid expression"
    return None
