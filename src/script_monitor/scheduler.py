"""The built-in scheduler's daemon loop (due-time maths: schedule_time.py; lock and
heartbeat: heartbeat.py).

One process per config directory (a POSIX lock on ``scheduler.lock`` in the
state directory), a heartbeat file other commands read, a small state file
remembering the last tick handled per group so that ticks missed while the
scheduler was down are run or recorded (never silently lost).  Each group run
is an ``Engine.run_group`` in its own thread; the loop itself only sleeps,
decides and records.  The rules are in docs/SCHEDULING.md.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from . import __version__, cron
from .config import Config, fingerprint, load_config
from .distributed.lease import LeaseLost
from .engine import Engine, executor_for
from .errors import ScriptMonitorError, StoreUnreachable
from .heartbeat import (
    HEARTBEAT_EVERY,
    HEARTBEAT_FILE,
    SchedulerLock,
    scheduler_status,
    write_json,
)
from .housekeeping import Housekeeper
from .leadership import Leadership
from .proc import Interrupt, adopt
from .schedule_time import (
    Clock,
    Decision,
    Entry,
    clock_from_env,
    decide,
    due_ticks,
    next_due,
    overlap_action,
)
from .states import GroupStatus, RunStatus, TickOutcome
from .store import GroupRun, Run, Store

CONFIG_CHECK_EVERY = 1.0  # real seconds between cheap stat() checks of the config files
STATE_FILE = "scheduler-state.json"
TICK_PRUNE_EVERY = 3600.0  # real seconds between prunes of the handled ticks
TICKS_KEPT = 7 * 86400.0  # how long a handled tick is remembered (each group's latest: always)

log = logging.getLogger("script_monitor.scheduler")


# ---------------------------------------------------------------- logging


class _JournalFormatter(logging.Formatter):
    """'<6>message' lines: journald reads the priority and adds the time itself."""

    LEVELS: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
    }

    def format(self, record: logging.LogRecord) -> str:
        prio = self.LEVELS.get(record.levelno, 2)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


def setup_logging(stream: Any = None) -> None:
    """Log to stderr: journald priority prefixes under systemd, timestamps elsewhere."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if _under_journald(stream):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        )
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _under_journald(stream: Any) -> bool:
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


# ---------------------------------------------------------------- config watching


# ---------------------------------------------------------------- the daemon


class Scheduler:
    """Fires the scheduled groups of one config directory until told to stop."""

    def __init__(self, config: Config, clock: Clock | None = None, once: bool = False):
        self.config = config
        self.root = config.root
        self.state_dir = config.state_dir
        self.clock = clock or Clock()
        self.once = once
        self.store = Store(self.state_dir, config.store_url, config.settings.store.retry_for)
        if config.settings.notifications.channels:  # a lost run notifies (docs/NOTIFICATIONS.md)
            from .notify import watch_store

            watch_store(config, self.store, wait=False)
        self.kill = Interrupt()  # fired only when the shutdown grace runs out
        self.lock = SchedulerLock(self.state_dir)
        self.entries: dict[str, Entry] = {}
        self.running: dict[str, list[tuple[threading.Thread, float]]] = {}
        self.queued: dict[str, float] = {}
        self._mutex = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stop_signum: int | None = None
        self._forced = False
        self._reload_asked = False
        self._enabled = config.settings.scheduling.enabled
        self._fingerprint = fingerprint(config)
        self._next_check = 0.0
        self._next_beat = 0.0
        self._state_dirty = False
        self._started = time.time()
        self._started_sim = self.clock.now()
        self._watch_state: dict = {}  # watchdog and notifications (see _watch)
        self._housekeeper = Housekeeper(log)
        self._took_over: float | None = None  # the scheduler's time it took the lead over
        self._next_tick_prune = 0.0
        self._adopt_due = 0.0
        self.lead = Leadership(
            self.store, config.settings.scheduling.lease_ttl, str(self.root), log
        )

    # ------------------------------------------------------------ signals

    def on_signal(self, signum: int, _frame: object = None) -> None:
        """Signal handler (main thread): HUP reloads, TERM/INT stop (twice: at once)."""
        if signum == signal.SIGHUP:
            self._reload_asked = True
        elif self._stop_signum is None:
            self._stop_signum = signum
        else:
            self._forced = True
        self._wake()

    def install_signal_handlers(self) -> None:
        """Route SIGTERM, SIGINT and SIGHUP to ``on_signal``."""
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self.on_signal)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass  # the pipe is full: the loop is awake anyway

    def _sleep(self, seconds: float) -> None:
        ready, _, _ = select.select([self._wake_r], [], [], max(0.0, seconds))
        if ready:
            os.read(self._wake_r, 4096)

    # ------------------------------------------------------------ main loop

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT (or one pass with ``once``); return the exit code."""
        self.lock.acquire()
        try:
            self.store.runs.reap_lost()
            self._sync_entries(self._load_state())
            self._announce()
            self._lead(force=True)
            while self._stop_signum is None:
                try:
                    self._step()
                except Exception:  # a bug in one pass must not stop every schedule
                    log.exception("unexpected error in the scheduler loop; carrying on")
                    self._sleep(CONFIG_CHECK_EVERY)
                if self.once:
                    self._wait_idle()
                    break
                self._sleep(self._sleep_time())
            self._shutdown()
        finally:
            self.lead.leave()
            self._remove_heartbeat()
            self.lock.release()
        return 0

    def _step(self) -> None:
        self._maybe_reload()
        self._lead()
        self._fire_due()
        self._heartbeat()
        adopt.reap()
        self._watch()

    def _lead(self, force: bool = False) -> None:
        """Beat in the store and take or renew the lead; a scheduler that has just
        taken it goes on from the last tick any scheduler handled."""
        if self.lead.turn(force):
            if not force:
                self._took_over = self.clock.now()
            self._resume_from_store()
        if self.lead.leading and self._adopt_due <= time.monotonic():
            self._adopt_due = time.monotonic() + self.lead.every
            self._adopt()
        if self.lead.leading and time.monotonic() >= self._next_tick_prune:
            self._next_tick_prune = time.monotonic() + TICK_PRUNE_EVERY
            try:
                self.store.leases.prune(TICKS_KEPT)
            except ScriptMonitorError as e:
                log.error("cannot prune the handled ticks: %s", e)

    def _resume_from_store(self) -> None:
        for entry in self.entries.values():
            try:
                last = self.store.leases.last_tick(entry.name)
            except ScriptMonitorError as e:
                log.error("group %s: cannot read its last tick: %s", entry.name, e)
                continue
            if last is not None and last > entry.last_tick:
                entry.last_tick = last
                entry.next_due = next_due(entry.expr, entry.tz, last)
                self._state_dirty = True

    def _adopt(self) -> None:
        """Carry on the group runs sent to workers whose orchestrator let its lease run
        out (killed, or its host lost): docs/DISTRIBUTED.md."""
        if self.config.settings.execution.backend != "celery" or not self.lead.leads():
            return
        ttl = self.config.settings.scheduling.lease_ttl
        try:
            orphans = self.store.leases.orphaned_groups()
        except ScriptMonitorError as e:
            log.error("cannot look for group runs to carry on: %s", e)
            return
        for orphan in orphans:
            try:
                if not self.store.leases.adopt_group(orphan.id, self.lead.me, ttl):
                    continue  # another scheduler was first
                rows = self.store.runs.runs_of_group_run(orphan.id)
            except ScriptMonitorError as e:
                log.error("group run %d: cannot carry it on: %s", orphan.id, e)
                continue
            log.warning(
                "group %s: group run %d lost its orchestrator (%s); carrying it on",
                orphan.group_name,
                orphan.id,
                orphan.owner.split("|")[0] + " pid " + orphan.owner.split("|")[2]
                if orphan.owner.count("|") == 3
                else orphan.owner,
            )
            thread = threading.Thread(
                target=self._run_adopted,
                args=(orphan, rows, self.config),
                name=f"adopted-{orphan.id}",
                daemon=True,
            )
            with self._mutex:
                self.running.setdefault(orphan.group_name, []).append((thread, 0.0))
            thread.start()

    def _run_adopted(self, orphan: GroupRun, rows: list[Run], config: Config) -> None:
        started = time.monotonic()
        try:
            executor = executor_for(config, self.store, orphan.trigger, self.kill)
            engine = Engine(config, self.store, None, orphan.trigger, self.kill, executor)
            outcome = engine.adopt(orphan.group_name, orphan.id, rows)
            if outcome is None:
                self.store.runs.finish_group(
                    orphan.id,
                    GroupStatus.LOST,
                    "its orchestrator died and the group is no longer configured",
                )
                return
            from .notify import unit_finished

            unit_finished(config, self.store, outcome, trigger=orphan.trigger, wait=False)
            log.info(
                "group %s: group run %d carried on: %s in %.1fs",
                orphan.group_name,
                orphan.id,
                outcome.status,
                time.monotonic() - started,
            )
        except LeaseLost as e:
            log.warning("group %s: %s", orphan.group_name, e)
        except ScriptMonitorError as e:
            log.error(
                "group %s: could not carry group run %d on: %s", orphan.group_name, orphan.id, e
            )
        except Exception:
            log.exception(
                "group %s: unexpected error carrying group run %d on", orphan.group_name, orphan.id
            )
        finally:
            self._finished(orphan.group_name)

    def _watch(self) -> None:
        """The watchdog every minute, pending notifications every few seconds
        (docs/NOTIFICATIONS.md), pruning the history every hour (docs/HISTORY.md)."""
        from .watchdog import scheduler_turn

        # Real time, not self.clock: the history records real times.
        scheduler_turn(self.config, self.store, time.time(), self._watch_state, log)
        self._housekeeper.turn(self.config)

    def _announce(self) -> None:
        groups = ", ".join(f"{e.name} ({e.expr}, {e.zone})" for e in self.entries.values())
        log.info(
            "scheduler %s started for %s (pid %d): %s",
            __version__,
            self.root,
            os.getpid(),
            groups or "no scheduled groups",
        )
        if not self._enabled:
            log.info("scheduling is paused (scheduling.enabled: false)")

    def _sleep_time(self) -> float:
        wait = min(CONFIG_CHECK_EVERY, max(0.0, self._next_beat - time.monotonic()))
        wait = min(wait, self.lead.due())
        dues = [e.next_due for e in self.entries.values() if e.next_due is not None]
        if dues and self._enabled and self.lead.leading:
            wait = min(wait, self.clock.real(min(dues) - self.clock.now()))
        return max(0.0, wait)

    # ------------------------------------------------------------ firing

    def _fire_due(self) -> None:
        now = self.clock.now()
        if not self._enabled:  # paused ticks are deliberately neither run nor recorded
            for entry in self.entries.values():
                self._advance(entry, now)
            return
        if not self.lead.leads():  # a standby: the leader fires them
            return
        for entry in list(self.entries.values()):
            ticks, cut = due_ticks(entry, now)
            if not ticks:
                continue
            try:
                done = self.store.leases.handled(entry.name, ticks)
                fresh = [t for t in ticks if t not in done]
                if fresh:
                    self._handle(entry, fresh, cut, now)
            except ScriptMonitorError as e:  # tried again on the next pass
                log.error("group %s: cannot handle its due ticks: %s", entry.name, e)
                continue
            self._advance(entry, max(ticks[-1], entry.last_tick))
        self._save_state()

    def _claim(self, entry: Entry, ticks: list[float], outcome: TickOutcome) -> list[float]:
        """The ticks this scheduler is the one to handle (each tick once, whoever leads)."""
        won = self.store.leases.claim_ticks(entry.name, ticks, outcome, self.lead.me)
        for tick in ticks:
            if tick not in won:
                log.info(
                    "group %s: tick %s was handled by another scheduler",
                    entry.name,
                    self._when(entry, tick),
                )
        return won

    def _advance(self, entry: Entry, tick: float) -> None:
        if tick > entry.last_tick:
            entry.last_tick = tick
            entry.next_due = next_due(entry.expr, entry.tz, tick)
            self._state_dirty = True

    def _handle(self, entry: Entry, ticks: list[float], cut: bool, now: float) -> None:
        group = self.config.groups[entry.name]
        grace = self.config.settings.scheduling.catchup_grace
        decision = decide(ticks, now, group.catchup, grace)
        if decision.missed:
            with self.store.batch():  # the ticks and their record together
                decision.missed = self._claim(entry, decision.missed, TickOutcome.MISSED)
                if decision.missed:
                    self._record_missed(entry, decision, cut)
        if decision.run is not None:
            self._tick(entry, decision.run, now)

    def _record_missed(self, entry: Entry, decision: Decision, cut: bool) -> None:
        first, last = decision.missed[0], decision.missed[-1]
        count = f"{'at least ' if cut else ''}{len(decision.missed)}"
        plural = "s" if len(decision.missed) != 1 or cut else ""
        if first < self._started_sim:
            why = "the scheduler was not running"
        elif self._took_over is not None and first < self._took_over:
            why = "no scheduler led (the leader was lost; this one took over)"
        else:
            why = "the scheduler was stalled (suspended or overloaded)"
        span = self._when(entry, first) + (
            f" to {self._when(entry, last)}" if last != first else ""
        )
        detail = f"{count} tick{plural} missed ({span}): {why}; {decision.reason}"
        log.warning("group %s: %s", entry.name, detail)
        self._record(entry.name, GroupStatus.MISSED, detail)

    def _tick(self, entry: Entry, tick: float, now: float) -> None:
        group = self.config.groups[entry.name]
        with self._mutex:
            going = self.running.setdefault(entry.name, [])
            action = overlap_action(group.overlap, len(going), entry.name in self.queued)
            if action == "queue":
                self.queued[entry.name] = tick
            since = going[0][1] if going else None
        if action == "start":  # the tick and its group run: recorded together, or neither
            gid = self._start_group(entry, tick)
            if gid is not None:
                self._launch(entry.name, tick, self.config, gid)
            return
        if action == "queue":  # claimed with its group run when it starts (_finished)
            log.info(
                "group %s: tick %s queued behind the running one (overlap: queue)",
                entry.name,
                self._when(entry, tick),
            )
        else:
            why = (
                "a run is already queued behind the running one (overlap: queue)"
                if group.overlap == "queue"
                else f"the run of the tick {self._when(entry, since or tick)} is still going"
                " (overlap: skip)"
            )
            detail = f"tick {self._when(entry, tick)} skipped: {why}"
            with self.store.batch():  # the tick and its record together
                if not self._claim(entry, [tick], TickOutcome.SKIPPED):
                    return
                log.warning("group %s: %s", entry.name, detail)
                self._record(entry.name, GroupStatus.SKIPPED, detail)

    def _start_group(self, entry: Entry, tick: float) -> int | None:
        """Claim the tick and record its group run in one transaction (held through a
        lease from the start when its runs go to workers); None when another scheduler
        handled the tick."""
        with self.store.batch():
            if not self._claim(entry, [tick], TickOutcome.FIRED):
                return None
            gid = self.store.runs.start_group(entry.name, "schedule")
            if self.config.settings.execution.backend == "celery":
                ttl = self.config.settings.scheduling.lease_ttl
                self.store.leases.lease_groups([gid], self.lead.me, ttl)
        return gid

    def _record(self, name: str, status: GroupStatus, detail: str) -> None:
        try:
            run_id = self.store.runs.start_group(name, "schedule")
            self.store.runs.finish_group(run_id, status, detail=detail)
        except ScriptMonitorError as e:
            log.error("group %s: could not record a %s tick: %s", name, status, e)

    def _when(self, entry: Entry, tick: float) -> str:
        return datetime.fromtimestamp(tick, entry.tz).strftime("%Y-%m-%d %H:%M %Z")

    def _launch(self, name: str, tick: float, config: Config, gid: int | None = None) -> None:
        late = self.clock.real(self.clock.now() - tick)
        entry = self.entries.get(name)
        when = self._when(entry, tick) if entry else str(tick)
        log.info("group %s: starting (tick %s, %.4fs after due)", name, when, late)
        thread = threading.Thread(
            target=self._run_group,
            args=(name, tick, config, gid),
            name=f"group-{name}",
            daemon=True,
        )
        with self._mutex:
            self.running.setdefault(name, []).append((thread, tick))
        thread.start()

    def _run_group(self, name: str, tick: float, config: Config, gid: int | None) -> None:
        started = time.monotonic()
        try:
            executor = executor_for(config, self.store, "schedule", self.kill)
            engine = Engine(config, self.store, None, "schedule", self.kill, executor)
            outcome = engine.run_group(name, gid)
            from .notify import unit_finished  # its events; delivered off this thread

            unit_finished(config, self.store, outcome, trigger="schedule", wait=False)
            failed = ", ".join(r.script for r in outcome.failed)
            level = logging.INFO if outcome.status == RunStatus.SUCCESS else logging.WARNING
            log.log(
                level,
                "group %s: %s in %.1fs%s",
                name,
                outcome.status,
                time.monotonic() - started,
                f" (failed: {failed})" if failed else "",
            )
        except LeaseLost as e:  # another scheduler carries it on: not a failure
            log.warning("group %s: %s", name, e)
        except StoreUnreachable as e:
            if config.settings.execution.backend == "celery":  # held by a lease: adopted
                log.warning(
                    "group %s: %s; the group run is carried on once its lease runs out", name, e
                )
            else:
                log.error("group %s: could not run: %s", name, e)
                self._failed(gid, f"could not run: {e}")
        except ScriptMonitorError as e:
            if self._carried_on(gid, e):
                log.warning(
                    "group %s: %s; the group run is carried on once its lease runs out", name, e
                )
            else:
                log.error("group %s: could not run: %s", name, e)
                self._failed(gid, f"could not run: {e}")
        except Exception as e:  # a bug must not take the scheduler down with it
            log.exception("group %s: unexpected error", name)
            self._failed(gid, f"unexpected error: {e}")
        finally:
            self._finished(name)

    def _carried_on(self, gid: int | None, e: ScriptMonitorError) -> bool:
        """Whether a group run that lost its broker after it started runs is left to the
        scheduler that adopts it once its lease runs out, as a caller's is when it exits:
        the adopter waits for what was sent, starts the rest, and tells the failures (the
        run that could not be sent among them) when the group run ends."""
        from .distributed.app import BrokerError

        if gid is None or not isinstance(e, BrokerError):
            return False
        try:
            return bool(self.store.runs.runs_of_group_run(gid))
        except ScriptMonitorError:
            return True  # held by its lease all the same

    def _failed(self, gid: int | None, detail: str) -> None:
        """Record a tick's group run that could not go on (the broker out of reach)."""
        if gid is None:
            return
        try:
            run = self.store.runs.group_run(gid)
            if run is not None and run.status is GroupStatus.RUNNING:
                self.store.runs.finish_group(gid, GroupStatus.FAILED, detail=detail)
        except ScriptMonitorError as e:
            log.error("group run %d: cannot record its failure: %s", gid, e)

    def _finished(self, name: str) -> None:
        me = threading.current_thread()
        with self._mutex:
            self.running[name] = [(t, k) for t, k in self.running.get(name, []) if t is not me]
            tick = None if self._stop_signum else self.queued.pop(name, None)
        entry = self.entries.get(name)
        if tick is not None:
            if name in self.config.groups and entry is not None:
                try:
                    gid = self._start_group(entry, tick)
                except ScriptMonitorError as e:
                    log.error("group %s: could not start the queued tick: %s", name, e)
                    gid = None
                if gid is not None:
                    self._launch(name, tick, self.config, gid)
            else:
                self._skip_tick(name, tick, "queued tick dropped: group no longer scheduled")
        self._wake()

    def _skip_tick(self, name: str, tick: float, detail: str) -> None:
        """Record a queued tick that will not run, once (whoever leads)."""
        try:
            with self.store.batch():
                won = self.store.leases.claim_ticks(name, [tick], TickOutcome.SKIPPED, self.lead.me)
                if won:
                    self._record(name, GroupStatus.SKIPPED, detail)
        except ScriptMonitorError as e:
            log.error("group %s: could not record a dropped tick: %s", name, e)

    def _busy(self) -> bool:
        with self._mutex:
            alive = any(t.is_alive() for runs in self.running.values() for t, _ in runs)
            return alive or bool(self.queued)

    def _wait_idle(self) -> None:
        while self._busy() and self._stop_signum is None:
            self._sleep(CONFIG_CHECK_EVERY)

    # ------------------------------------------------------------ configuration

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if not self._reload_asked and now < self._next_check:
            return
        self._next_check = now + CONFIG_CHECK_EVERY
        current = fingerprint(self.config)
        if not self._reload_asked and current == self._fingerprint:
            return
        why = "SIGHUP" if self._reload_asked else "a file changed"
        self._reload_asked = False
        self._fingerprint = current
        self.reload(why)

    def reload(self, why: str) -> bool:
        """Load the configuration again; keep the old one (and say why) if it is invalid."""
        from .errors import ConfigError

        try:
            new = load_config(self.root)
        except ConfigError as e:
            log.error("configuration change (%s) rejected; the previous one stays in use:", why)
            for problem in e.problems:
                log.error("  %s", problem)
            return False
        except Exception as e:
            log.error(
                "configuration change (%s) could not be read: %s; keeping the old one", why, e
            )
            return False
        for warning in new.warnings:
            log.warning("  %s", warning)
        if new.state_dir != self.state_dir:
            log.warning("paths.state_dir changed: restart the scheduler to use the new one")
        old = {n: (e.expr, e.zone) for n, e in self.entries.items()}
        self.config = new
        self._fingerprint = fingerprint(new)
        self._sync_entries({})
        self._report_changes(old, why)
        return True

    def _report_changes(self, old: dict[str, tuple[str, str]], why: str) -> None:
        new = {n: (e.expr, e.zone) for n, e in self.entries.items()}
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(n for n in set(new) & set(old) if new[n] != old[n])
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (("added", added), ("removed", removed), ("changed", changed))
            if names
        ]
        log.info("configuration reloaded (%s)%s", why, "; " + "; ".join(parts) if parts else "")
        enabled = self.config.settings.scheduling.enabled
        if enabled != self._enabled:
            self._enabled = enabled
            log.info(
                "scheduling %s", "resumed" if enabled else "paused (scheduling.enabled: false)"
            )

    def _sync_entries(self, saved: dict[str, dict]) -> None:
        """Track exactly the scheduled groups; keep entries whose schedule is unchanged."""
        now = self.clock.now()
        entries: dict[str, Entry] = {}
        for name, group in self.config.groups.items():
            if not group.schedule:
                continue
            expr, zone = cron.expand(group.schedule), self.config.zone_of(group)
            old = self.entries.get(name)
            if old is not None and (old.expr, old.zone) == (expr, zone):
                entries[name] = old
                continue
            last = now
            prev = saved.get(name)
            if prev and (prev.get("schedule"), prev.get("timezone")) == (expr, zone):
                last = min(float(prev.get("last_tick", now)), now)  # catch up from here
            entries[name] = Entry(name, expr, zone, cron.resolve_timezone(zone), last)
        self.entries = entries
        self._state_dirty = True

    # ------------------------------------------------------------ state files

    def _load_state(self) -> dict[str, dict]:
        try:
            data = json.loads((self.state_dir / STATE_FILE).read_text())
            groups = data["groups"]
            if not isinstance(groups, dict):
                raise ValueError("groups is not a mapping")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable %s (%s): missed ticks cannot be found", STATE_FILE, e)
            return {}
        return groups

    def _save_state(self, force: bool = False) -> None:
        if not (self._state_dirty or force):
            return
        groups = {
            e.name: {"schedule": e.expr, "timezone": e.zone, "last_tick": e.last_tick}
            for e in self.entries.values()
        }
        try:
            write_json(self.state_dir / STATE_FILE, {"version": 1, "groups": groups})
            self._state_dirty = False
        except OSError as e:
            log.error("cannot write %s: %s", self.state_dir / STATE_FILE, e.strerror)

    def _heartbeat(self) -> None:
        if time.monotonic() < self._next_beat:
            return
        self._next_beat = time.monotonic() + HEARTBEAT_EVERY
        dues = [e.next_due for e in self.entries.values() if e.next_due is not None]
        beat = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "config_dir": str(self.root),
            "version": __version__,
            "started": self._started,
            "updated": time.time(),
            "enabled": self._enabled,
            "role": str(self.lead.role()),
            "next_due": min(dues) if dues else None,
        }
        try:
            write_json(self.state_dir / HEARTBEAT_FILE, beat)
        except OSError as e:
            log.error("cannot write the heartbeat: %s", e.strerror)
        if not self._enabled:
            self._save_state()

    def _remove_heartbeat(self) -> None:
        try:
            (self.state_dir / HEARTBEAT_FILE).unlink()
        except OSError:
            pass

    # ------------------------------------------------------------ stopping

    def _shutdown(self) -> None:
        self._save_state(force=True)
        with self._mutex:
            dropped = list(self.queued.items())
            self.queued.clear()
        for name, tick in dropped:
            self._skip_tick(name, tick, "queued tick dropped: the scheduler was stopped")
        reason = signal.Signals(self._stop_signum).name if self._stop_signum else "done"
        grace = self.config.settings.scheduling.shutdown_grace
        with self._mutex:
            names = sorted({n for n, runs in self.running.items() for t, _ in runs if t.is_alive()})
        if names:
            log.info(
                "stopping (%s): no new runs; waiting up to %gs for %s",
                reason,
                grace,
                ", ".join(names),
            )
        deadline = time.monotonic() + grace
        while self._busy() and not self._forced and time.monotonic() < deadline:
            self._sleep(min(1.0, deadline - time.monotonic()))
        if self._busy():
            log.warning("shutdown grace is over: ending the running groups' process trees")
            self.kill.fire(self._stop_signum or signal.SIGTERM)
            limit = time.monotonic() + self.config.settings.execution.kill_grace + 10
            for runs in list(self.running.values()):
                for thread, _ in runs:
                    thread.join(max(0.0, limit - time.monotonic()))
        from .notify import settle  # a message being sent is recorded before leaving

        if not settle(self.config):
            log.warning("notifications not delivered yet stay pending for the next process")
        log.info("scheduler stopped (%s)", reason)


def run_scheduler(config: Config, once: bool = False, on_ready: Callable | None = None) -> int:
    """Set up logging and signals, then serve until stopped; return the exit code."""
    setup_logging()
    adopt.become_subreaper()  # orphaned descendants of scripts come back to be ended
    scheduler = Scheduler(config, clock_from_env(), once=once)
    scheduler.install_signal_handlers()
    if on_ready:
        on_ready(scheduler)
    return scheduler.serve()


__all__ = ["Scheduler", "run_scheduler", "scheduler_status"]
