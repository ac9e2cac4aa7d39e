"""The watchdog (docs/NOTIFICATIONS.md): missed scheduled ticks, overdue runs, a dead scheduler,
and passive checks that did not hear from their job in time (docs/MONITORING.md).

``check`` is one pass.  The scheduler runs it every minute; ``script-monitor watchdog``
runs it once, so cron on another machine (sharing the config directory) or a
monitoring system can watch the scheduler itself.  Every finding is recorded in the
store once (``watch_events``) and notified once; the position up to which each group's
ticks were checked is kept in the store too, shared by every checker.
"""

from __future__ import annotations

import time
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

import msgspec

from . import cron
from .serialize import iso

if TYPE_CHECKING:
    from .config import Config
    from .store import Store

SCHEDULER_DEAD = 120.0  # seconds without a heartbeat before a scheduler counts as down
EARLY = 5.0  # a scheduled run recorded this much before its tick still counts (clock skew)
TICK_LIMIT = 10_000  # ticks examined per group and check
SEEN = "scheduler_seen"  # watch_state: when a scheduler last ran a check on this store


class Report(msgspec.Struct):
    """What one check found."""

    now: float
    missed: list[dict[str, Any]] = msgspec.field(default_factory=list)
    overdue: list[dict[str, Any]] = msgspec.field(default_factory=list)
    scheduler: dict[str, Any] = msgspec.field(default_factory=dict)
    late: list[dict[str, Any]] = msgspec.field(default_factory=list)  # passive checks
    new_messages: int = 0

    @property
    def wrong(self) -> bool:
        down = self.scheduler.get("state") == "down"
        return bool(self.missed or self.overdue or self.late or down)

    def as_json(self) -> dict[str, Any]:
        from .serialize import watchdog_json

        return watchdog_json(self)

    def lines(self) -> list[str]:
        out = []
        for m in self.missed:
            out.append(f"MISSED  group {m['group']}: {m['detail']}")
        for o in self.overdue:
            out.append(f"OVERDUE {o['kind']} {o['name']}: {o['detail']}")
        for c in self.late:
            out.append(f"LATE    check {c['check']}: {c['detail']}")
        s = self.scheduler
        if s.get("state") == "down":
            out.append(f"DOWN    scheduler: {s['detail']}")
        out.append(f"scheduler: {s.get('detail', s.get('state'))}")
        out.append("watchdog: " + ("something is wrong" if self.wrong else "all is well"))
        return out


def clock_now() -> float:
    """Now, from the scheduler's clock (tests may set SCRIPT_MONITOR_CLOCK)."""
    from .schedule_time import clock_from_env

    return clock_from_env().now()


def check(config: Config, store: Store, now: float, scheduler: bool = False) -> Report:
    """One watchdog pass at ``now``; ``scheduler`` when the scheduler itself runs it."""
    store.runs.reap_lost()
    report = Report(now)
    if scheduler:
        store.watch.set_state(SEEN, time.time())
    report.missed, n1 = _missed(config, store, now)
    report.overdue, n2 = _overdue(config, store, now)
    report.scheduler, n3 = _scheduler(config, store, now)
    report.late, overdue, n4 = check_checks(config, store, now)
    report.overdue += overdue
    report.new_messages = n1 + n2 + n3 + n4
    return report


# ---------------------------------------------------------------- missed ticks


def unmatched(ticks: list[float], starts: list[float], grace: float) -> list[float]:
    """The ticks that no start falls on: each start counts for one tick at most, the
    earliest tick it may (``tick - EARLY <= start <= tick + grace``)."""
    missed, i = [], 0
    for tick in ticks:
        while i < len(starts) and starts[i] < tick - EARLY:
            i += 1
        if i < len(starts) and starts[i] <= tick + grace:
            i += 1
        else:
            missed.append(tick)
    return missed


def _missed(config: Config, store: Store, now: float) -> tuple[list[dict], int]:
    settings = config.settings.scheduling
    grace = settings.missed_grace
    limit = now - grace
    found, messages = [], 0
    for group in config.groups.values():
        if not group.schedule:
            continue
        expr, zone = cron.expand(group.schedule), config.zone_of(group)
        key = f"{expr}|{zone}"
        position = store.watch.position(group.name, key, limit)
        if position is None or position >= limit:
            continue  # the first check only sets the position
        if not settings.enabled:  # paused: nothing is missed, the position moves on
            store.watch.advance(group.name, key, position, limit)
            continue
        tz = cron.resolve_timezone(zone)
        fires, cut = cron.fires_between(
            expr,
            tz,
            datetime.fromtimestamp(position, tz),
            datetime.fromtimestamp(limit, tz),
            TICK_LIMIT,
        )
        ticks = [f.timestamp() for f in fires]
        end = ticks[-1] if cut else limit
        starts = store.watch.scheduled_starts(group.name, position - EARLY, end + grace)
        missed = unmatched(ticks, starts, grace)
        entry = _missed_entry(group.name, missed, tz, grace, cut) if missed else None
        with store.batch():
            if not store.watch.advance(group.name, key, position, end):
                continue  # another checker took this stretch
            if entry is None:
                continue
            ref = f"tick{missed[0]:.0f}"
            if store.watch.add_event(
                f"missed|{group.name}|{ref}", "missed", group.name, entry["detail"]
            ):
                messages += _notify(
                    config,
                    store,
                    "group",
                    group.name,
                    "missed",
                    ref,
                    _missed_body(config, group.name, entry),
                )
        found.append(entry)
    return found, messages


def _missed_entry(name: str, missed: list[float], tz: tzinfo, grace: float, cut: bool) -> dict:
    def when(t: float) -> str:
        return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M %Z")

    n = len(missed)
    span = when(missed[0]) + (f" to {when(missed[-1])}" if n > 1 else "")
    detail = (
        f"{'at least ' if cut else ''}{n} scheduled tick{'s' * (n != 1)} ({span}) did not"
        f" start within scheduling.missed_grace ({grace:g}s)"
    )
    return {"group": name, "ticks": [iso(t) for t in missed[:100]], "count": n, "detail": detail}


def _missed_body(config: Config, name: str, entry: dict) -> str:
    from .notify.message import host

    return (
        f"Group {name} on {host()}: {entry['detail']}.\n"
        "Nothing ran for these ticks: is the scheduler (or cron) running, and was the"
        " machine up?\n"
        f"Check: script-monitor --config-dir {config.root} list-schedules\n"
    )


# ---------------------------------------------------------------- overdue runs


def _overdue(config: Config, store: Store, now: float) -> tuple[list[dict], int]:
    runs, groups = store.watch.running_units()
    found, messages = [], 0
    for g in groups:
        group = config.groups.get(g.group_name)
        limit = group.max_duration if group is not None else None
        if limit and now - g.started > limit:
            item = _overdue_item("group", g.group_name, g.id, g.started, limit, now)
            found.append(item)
            messages += _overdue_event(config, store, "group", g.group_name, f"g{g.id}", item)
    for r in runs:
        script = config.scripts.get(r.script)
        limit = script.max_duration if script is not None else None
        learned = None
        if script is not None and limit is None:  # slow × its usual duration, when known
            rule = config.anomaly_for(script)
            if rule.enabled:
                band = store.runs.duration_band(
                    r.script, rule.window, rule.min_runs, rule.slow, rule.fast, r.id
                )
                limit = learned = band.high if band is not None else None
        if limit and now - r.started > limit:
            item = _overdue_item("script", r.script, r.id, r.started, limit, now, learned)
            found.append(item)
            # A script run inside a group belongs to the group's run unit.
            kind, unit = ("group", r.group_name or "") if r.group_run_id else ("script", r.script)
            messages += _overdue_event(config, store, kind, unit, f"r{r.id}", item)
    return found, messages


def _overdue_item(
    kind: str,
    name: str,
    rid: int,
    started: float,
    limit: float,
    now: float,
    learned: float | None = None,
) -> dict[str, Any]:
    took = now - started
    what = "group run" if kind == "group" else "run"
    if learned is None:
        past = f"past its max_duration of {limit:g}s"
    else:  # no max_duration: the limit learned from its history (docs/MONITORING.md)
        past = f"past its learned limit of {limit:.3g}s (anomaly.slow × its usual duration)"
    return {
        "kind": kind,
        "name": name,
        "run": rid,
        "started": started,
        "running_for": took,
        "max_duration": limit,
        "detail": f"{what} {rid} has been running for {took:.{0 if took >= 10 else 1}f}s, {past}",
    }


def _overdue_event(config: Config, store: Store, kind: str, unit: str, ref: str, item: dict) -> int:
    if not store.watch.add_event(f"overdue|{ref}", "overdue", item["name"], item["detail"]):
        return 0
    from .notify.message import host

    body = (
        f"{item['kind'].capitalize()} {item['name']} on {host()}: {item['detail']}"
        f" (started {iso(item['started'])}).\n"
        f"Look: script-monitor --config-dir {config.root} status\n"
    )
    return _notify(config, store, kind, unit, "overdue", ref, body)


# ---------------------------------------------------------------- passive checks


def check_checks(config: Config, store: Store, now: float) -> tuple[list[dict], list[dict], int]:
    """Passive checks at ``now``: (late checks, starts past their grace, new messages).

    A check is late when no ping came within its grace after its due time (notified
    ``missed`` once: the finding's key is the due time, which only a ping moves on),
    and overdue when a start has had no end within its grace (``overdue`` once per
    run).  The serve command runs this every few seconds, the scheduler every minute.
    """
    if not config.checks:
        return [], [], 0
    from . import check_time

    states = store.checks.states()
    unseen = [name for name in config.checks if name not in states]
    if unseen:  # a check that never pings is due one period (or tick) after this
        store.checks.seen(unseen, now)
        states = store.checks.states()
    late, overdue, messages = [], [], 0
    for check in config.checks.values():
        state = states.get(check.name)
        grace = config.grace_of(check)
        started = check_time.started_at(state)
        if started is not None and state is not None and state.open_run_id is not None:
            if now - started > grace:
                rid = state.open_run_id
                item = _overdue_item("check", check.name, rid, started, grace, now)
                item["detail"] = (
                    f"run {rid} started {now - started:.0f}s ago and has reported no end"
                    f" within its grace of {grace:g}s"
                )
                overdue.append(item)
                messages += _overdue_event(config, store, "check", check.name, f"r{rid}", item)
            continue  # a job that has started is not missed
        since = check_time.since_of(state, now)
        due = check_time.due_after(config, check, since)
        if due is None or now <= due + grace:
            continue
        last = state.last_ping if state is not None else None
        heard = f"its last ping came at {iso(last)}" if last is not None else "it never pinged"
        detail = (
            f"a ping was due at {iso(due)} and none came within its grace of {grace:g}s ({heard})"
        )
        entry: dict[str, Any] = {
            "check": check.name,
            "due": due,
            "last_ping": last,
            "grace": grace,
            "detail": detail,
        }
        late.append(entry)
        ref = f"{check.name}@{due:.0f}"
        if store.watch.add_event(f"missed|check:{ref}", "missed", check.name, detail):
            from .notify.message import host

            body = (
                f"Check {check.name} on {host()}: {detail}.\n"
                + (f"{check.description}\n" if check.description else "")
                + "Is the job still scheduled, and is its host up?\n"
                f"Look: script-monitor --config-dir {config.root} history {check.name}\n"
            )
            messages += _notify(config, store, "check", check.name, "missed", ref, body)
    return late, overdue, messages


# ---------------------------------------------------------------- the scheduler


def _scheduler(config: Config, store: Store, now: float) -> tuple[dict, int]:
    from .heartbeat import read_heartbeat

    beat = read_heartbeat(config.state_dir) or {}
    stamps = [
        float(s)
        for s in (beat.get("updated"), store.watch.state(SEEN))
        if isinstance(s, int | float)
    ]
    last = max(stamps) if stamps else None
    scheduled = any(g.schedule for g in config.groups.values())
    if last is None:
        return {"state": "never", "detail": "no scheduler has run on this store"}, 0
    age = now - last
    info = {"last_seen": last, "heartbeat_age": age}
    if not scheduled or not config.settings.scheduling.enabled:
        why = "no scheduled groups" if not scheduled else "scheduling.enabled is false"
        return {"state": "not needed", "detail": f"not watched ({why})", **info}, 0
    if age <= SCHEDULER_DEAD:
        return {"state": "ok", "detail": f"alive (heartbeat {age:.0f}s ago)", **info}, 0
    detail = f"no heartbeat for {age:.0f}s (last seen {iso(last)}): the scheduler is down"
    messages = 0
    if store.watch.add_event(f"scheduler|{last:.3f}", "scheduler", "scheduler", detail):
        from .notify.message import host

        body = (
            f"The script-monitor scheduler of {config.root} on {host()} is down: {detail}.\n"
            "Scheduled groups are not being run. Restart it (for example"
            " `systemctl restart script-monitor`).\n"
        )
        messages = _notify(config, store, "default", "scheduler", "missed", f"s{last:.0f}", body)
    return {"state": "down", "detail": detail, **info}, messages


# ---------------------------------------------------------------- notifying


def _notify(
    config: Config, store: Store, kind: str, unit: str, event: str, ref: str, body: str
) -> int:
    if not config.settings.notifications.channels:
        return 0
    from .notify.events import event_rows

    rows = event_rows(config, kind, unit, event, ref, body)
    return len(store.outbox.add(rows)) if rows else 0


# ---------------------------------------------------------------- inside the scheduler

WATCH_EVERY = 60.0  # real seconds between the scheduler's watchdog checks
DELIVER_EVERY = 5.0  # real seconds between its looks for pending notifications


def scheduler_turn(config: Config, store: Store, now: float, state: dict, log: Any) -> None:
    """One turn of the scheduler's loop: the watchdog every minute, pending notifications
    every few seconds (delivered on a background thread; the loop never waits)."""
    from .errors import ScriptMonitorError

    mono = time.monotonic()
    channels = bool(config.settings.notifications.channels)
    try:
        if mono >= state.get("watch", 0.0):
            state["watch"] = mono + WATCH_EVERY
            report = check(config, store, now, scheduler=True)
            for line in report.lines()[:-2]:
                log.warning("watchdog: %s", line)
            if report.new_messages:
                state["deliver"] = 0.0
        if channels and mono >= state.get("deliver", 0.0):
            state["deliver"] = mono + DELIVER_EVERY
            from .notify import deliver, watch_store

            watch_store(config, store, wait=False)  # the configuration may have changed
            if store.outbox.due(time.time()):
                deliver(config, store, wait=False)
    except ScriptMonitorError as e:  # a locked store: try again at the next turn
        log.error("watchdog: %s", e)
