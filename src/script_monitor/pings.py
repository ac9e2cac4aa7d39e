"""A ping of a passive check (docs/MONITORING.md): recorded as a run of the check, and the
``failure`` or ``recovery`` it fires notified once, through the same channels, outbox and
``notify`` rules as a script's runs.  The web server's ``/ping`` and the ``ping`` and
``wrap`` commands all record pings here; the watchdog notifies ``missed`` and ``overdue``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .states import PingKind, RunStatus

if TYPE_CHECKING:
    from .config import Check, Config
    from .store import PingResult, Store

ALARMS = ("failure", "missed", "overdue")  # the events a later success recovers from
TAIL_LINES = 20  # lines of a failure's report quoted in its message


def record_ping(
    config: Config,
    store: Store,
    check: Check,
    kind: PingKind,
    exit_code: int | None = None,
    body: bytes = b"",
    client: str = "",
    at: float | None = None,
    masker: Any = None,
) -> tuple[PingResult, int]:
    """Record a ping of ``check``; return what was recorded and how many notification
    messages it added to the outbox (the caller delivers them)."""
    from .store import NewPing
    from .store.checks import BODY_LIMIT

    at = time.time() if at is None else at
    body = body[-BODY_LIMIT:]
    if body and masker is not None:
        body = masker.bytes(body)
    limit = config.settings.default_log_limit
    keep = limit.value if limit.type == "count" else None
    before = at - limit.value * 86400 if limit.type == "age" else None
    ping = NewPing(check.name, kind, at, client or "-", exit_code, body)
    result, _gone = store.checks.record(ping, keep, before)  # its logs are in the history
    messages = 0
    if config.settings.notifications.channels and result.status != RunStatus.RUNNING:
        messages = _notify(config, store, check, ping, result)
    return result, messages


def _notify(config: Config, store: Store, check: Check, ping: Any, result: PingResult) -> int:
    from .notify.events import event_rows

    if result.status == RunStatus.FAILED:
        body = failure_body(config, check, ping, result.run_id)
        rows = event_rows(config, "check", check.name, "failure", f"r{result.run_id}", body)
    else:
        last = store.checks.last_alarm(check.name, ("recovery", *ALARMS))
        if last is None or last[1] == "recovery":
            return 0
        body = (
            f"Check {check.name} reported success again at {_when(ping.at)}"
            f" (run {result.run_id}, from {ping.client}) after a {last[1]}.\n"
        )
        # Keyed by the alarm it ends: two successes at once recover it once.
        rows = event_rows(config, "check", check.name, "recovery", f"m{last[0]}", body)
    if not rows:
        return 0
    import msgspec

    rows = [msgspec.structs.replace(r, run_id=result.run_id) for r in rows]  # its run
    return len(store.outbox.add(rows))


def failure_body(config: Config, check: Check, ping: Any, run_id: int) -> str:
    from .notify.message import logs_command

    what = (
        "reported a failure"
        if ping.kind == PingKind.FAIL
        else f"reported exit code {ping.exit_code}"
    )
    lines = [
        f"Check {check.name} {what} at {_when(ping.at)} (run {run_id}, from {ping.client}).",
    ]
    if check.description:
        lines.append(check.description)
    tail = ping.body.decode("utf-8", "replace").rstrip("\n").split("\n")[-TAIL_LINES:]
    if ping.body:
        lines += ["", "The end of its report:", *(f"  {line[:500]}" for line in tail)]
    lines += ["", f"Whole report: {logs_command(config, check.name, run_id)}"]
    return "\n".join(lines) + "\n"


def _when(at: float) -> str:
    from .serialize import iso

    return iso(at) or ""
