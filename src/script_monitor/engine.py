"""Run a script, or a group of scripts serially or in parallel; record every run.

The group loop (``GroupRun``) asks the planner what to do, has an executor do it,
and tells a reporter what happened.  Deciding lives in ``planner`` (pure), doing in
``executor`` (processes, logs, the store's run rows); this module joins the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Run, Store
    from .store.api import History

import time
from typing import Any, BinaryIO, Protocol, cast

from .config import Config, Group
from .executor import Executor, Job, LocalExecutor
from .planner import INTERRUPTED_DETAIL, Phase, Plan, Slots, decide
from .proc import Interrupt
from .results import GroupResult, RunResult
from .states import GroupStatus, RunStatus

__all__ = ["Engine", "GroupResult", "GroupRun", "Reporter", "RunResult", "executor_for"]


def executor_for(config: Config, store: Store, trigger: str, interrupt: Interrupt) -> Executor:
    """The executor ``execution.backend`` names: this host's processes, or Celery workers
    (docs/DISTRIBUTED.md)."""
    if config.settings.execution.backend == "celery":
        from .distributed.executor import CeleryExecutor

        return CeleryExecutor(config, store, trigger, interrupt)
    return LocalExecutor(config, store, trigger, interrupt)


class Reporter(Protocol):
    """What the engine tells about progress (render.py prints it; listeners may record it)."""

    def group_started(self, name: str, mode: str, scripts: list[str]) -> None: ...
    def script_started(self, name: str) -> None: ...
    def script_finished(self, result: RunResult) -> None: ...
    def script_retrying(self, result: RunResult, delay: float, attempts: int) -> None: ...
    def script_skipped(self, name: str, detail: str) -> None: ...
    def group_stopped(self, failed: str, skipped: list[str]) -> None: ...
    def group_finished(self, result: GroupResult) -> None: ...


class Engine:
    """Runs scripts of one configuration and records them in one store, through
    ``executor`` (default: this host's processes; ``executor_for`` picks by the config)."""

    def __init__(
        self,
        config: Config,
        store: History,
        reporter: Reporter | None = None,
        trigger: str = "manual",
        interrupt: Interrupt | None = None,
        executor: Executor | None = None,
    ):
        self.config = config
        self.store = store
        self.reporter = reporter
        self.trigger = trigger
        self.interrupt = interrupt or Interrupt()
        self.executor = executor or LocalExecutor(config, store, trigger, self.interrupt)

    def run_script(
        self,
        name: str,
        group: str | None = None,
        group_run_id: int | None = None,
        echo: BinaryIO | None = None,
    ) -> RunResult:
        """Run one script to its end (and its retries); output goes to its log and ``echo``."""
        script = self.config.script(name)
        policy = self.config.retries_for(script)
        attempt = 1
        while True:
            result = self.executor.run_one(name, group, group_run_id, echo, attempt)
            if not policy.retries(result.status, result.exit_code, attempt):
                return result
            delay = policy.delay_before(attempt + 1)
            if self.reporter:
                self.reporter.script_retrying(result, delay, policy.count + 1)
            if self.interrupt.wait(delay):
                return result  # an interrupt never retries
            attempt += 1

    # ------------------------------------------------------------ groups

    def run_group(self, name: str, group_run_id: int | None = None) -> GroupResult:
        """Run a configured group in its configured mode (as the group run
        ``group_run_id`` when its row was already recorded: a scheduled tick)."""
        group: Group = self.config.group(name)
        workers = self.config.workers_for(group) if group.execution == "parallel" else 1
        return self.run_many(
            group.name,
            group.execution,
            group.scripts,
            workers,
            group.stop_on_error and group.execution == "serial",
            depends_on={m: group.needs(m) for m in group.depends_on},
            group_run_id=group_run_id,
        )

    def run_all(self) -> GroupResult:
        """Run every script serially, in declaration order."""
        return self.run_many(
            "all scripts", "serial", list(self.config.scripts), 1, False, record="(all)"
        )

    def run_many(
        self,
        name: str,
        mode: str,
        scripts: list[str],
        workers: int,
        stop_on_error: bool,
        record: str | None = None,
        depends_on: dict[str, list[str]] | None = None,
        group_run_id: int | None = None,
    ) -> GroupResult:
        """Serial (one worker) and parallel (many) share this path."""
        retries = {s: self.config.retries_for(self.config.script(s)) for s in scripts}
        plan = Plan.of(scripts, depends_on, workers, stop_on_error, retries, mode == "serial")
        return GroupRun(self, plan, name, mode, record or name).run(group_run_id)

    def adopt(self, record: str, group_run_id: int, rows: list[Run]) -> GroupResult | None:
        """Carry on the group run ``group_run_id`` of ``record`` (a group's name, or
        ``(all)``) whose orchestrator died; None when no such group is configured now."""
        if record == "(all)":
            scripts, mode, workers, stop, needs = list(self.config.scripts), "serial", 1, False, {}
        elif record in self.config.groups:
            group = self.config.groups[record]
            scripts, mode = group.scripts, group.execution
            workers = self.config.workers_for(group) if mode == "parallel" else 1
            stop = group.stop_on_error and mode == "serial"
            needs = {m: group.needs(m) for m in group.depends_on}
        else:
            return None
        retries = {s: self.config.retries_for(self.config.script(s)) for s in scripts}
        plan = Plan.of(scripts, needs, workers, stop, retries, mode == "serial")
        name = "all scripts" if record == "(all)" else record
        return GroupRun(self, plan, name, mode, record).resume(group_run_id, rows)


class GroupRun:
    """One run of a group: ask the planner, have the executor do it, report it."""

    def __init__(self, engine: Engine, plan: Plan, name: str, mode: str, record: str):
        self.engine, self.plan, self.record = engine, plan, record
        self.executor: Executor = engine.executor
        self.reporter = engine.reporter
        self.interrupt = engine.interrupt
        self.slots = Slots.new(plan)
        self.outcome = GroupResult(name, mode, list(plan.scripts))
        self.results: dict[int, RunResult] = {}
        self.stopped_by: int | None = None
        self.told: list[tuple[str, tuple]] | None = None  # progress held during a batch
        self.wake_at: float | None = None

    def run(self, group_run_id: int | None = None) -> GroupResult:
        engine, outcome = self.engine, self.outcome
        ex = engine.executor
        ex.open()  # first: a broker out of reach leaves no group run behind
        try:
            outcome.group_run_id = group_run_id or engine.store.runs.start_group(
                self.record, engine.trigger
            )
            hold = getattr(ex, "group_started", None)  # runs on workers: a lease on the group run
            if hold is not None:
                hold(outcome.group_run_id)
            self._tell("group_started", outcome.name, outcome.mode, outcome.scripts)
            self._loop()
        finally:
            ex.close()
        self._finish()
        return outcome

    def resume(self, group_run_id: int, rows: list[Run]) -> GroupResult:
        """Carry on a group run whose orchestrator died, from its rows (oldest first):
        what ended counts as it ended, what was sent is waited for, what waits for a
        retry or never started is run by the plan; nothing is started a second time."""
        ex = self.engine.executor
        self.outcome.group_run_id = group_run_id
        ex.open()
        try:
            ex.group_started(group_run_id)  # type: ignore[attr-defined]
            ex.resume(self._replay(rows))  # type: ignore[attr-defined]
            self._loop()
        finally:
            ex.close()
        self._finish()
        return self.outcome

    def _replay(self, rows: list[Run]) -> list[tuple[int, Run]]:
        """Bring the slots to where the rows say the group run is; the runs in flight
        (member, row).  Rows are matched to members in the order the planner starts
        them: a script listed twice takes its first free place."""
        places: dict[str, list[int]] = {}
        for j, name in enumerate(self.plan.scripts):
            places.setdefault(name, []).append(j)
        slots, wall, mono = self.slots, time.time(), time.monotonic()
        running = []
        for row in rows:
            status = RunStatus(row.status)
            want = Phase.WAITING if row.attempt > 1 else Phase.PENDING
            at = next((j for j in places.get(row.script, []) if slots[j].phase is want), None)
            if at is None:
                continue  # not a member of the group as configured now
            if status is RunStatus.SKIPPED:
                slots.skipped(at, row.detail or "")
                continue
            slots.started(at)
            if status is RunStatus.RUNNING:
                running.append((at, row))
                continue
            ended = mono - max(0.0, wall - (row.ended or wall))
            slots.ended(self.plan, at, status, row.exit_code, ended)
            self.results[at] = RunResult(
                row.script,
                status,
                row.exit_code,
                row.signal,
                row.duration or 0.0,
                row.id,
                self.engine.config.log_dir / row.log_path if row.log_path else None,
                row.detail,
                row.attempt,
            )
        return running

    def _loop(self) -> None:
        ex = self.executor
        idle = 0
        while True:
            done = self._step()
            if self.interrupt.fired:
                self._interrupted()
                return
            if done:
                return
            if ex.running or self.wake_at is not None:
                idle = 0
                ex.wait(self.wake_at)
            else:  # nothing runs or waits, yet not done: one more step must start something
                idle += 1
                if idle > 2:
                    raise RuntimeError(f"group {self.record!r}: the planner stalled")

    def _step(self) -> bool:
        """Record the runs that ended and the runs to start next with one commit; start them.

        The rows of the new runs are committed before their processes start, so no
        process ever runs without its row; the logs that rotation frees are deleted
        only after the commit that marks them rotated.  True when the group is done.
        """
        ex = self.engine.executor
        store = self.engine.store
        ex.hold()
        self.told = []  # progress is printed after the commit: see _tell
        prepared: list[Job] = []
        committed = False
        done = False
        try:
            with store.batch():
                for job in ex.collect():
                    self._ended(job)
                if not self.interrupt.fired:
                    decision = decide(self.plan, self.slots, time.monotonic())
                    self._skip(decision.skip, decision.stopped_by)
                    self.wake_at = decision.wake_at
                    for i in decision.start:
                        name = self.plan.scripts[i]
                        attempt = self.slots.started(i)
                        self._tell("script_started", name)
                        job = ex.prepare(
                            name, self.record, self.outcome.group_run_id, None, attempt
                        )
                        job.index = i
                        prepared.append(job)
                    done = decision.done and not ex.running
            committed = True
        finally:
            ex.release(committed)
            told, self.told = self.told, None
            if not committed:  # not recorded, so not run: leave no log behind
                for job in prepared:
                    ex.discard(job)
        for event, args in told:
            getattr(self.reporter, event)(*args)
        for job in prepared:
            ex.start(job)
        return done

    def _ended(self, job: Job) -> None:
        run = job.run
        assert run is not None
        i = job.index
        delay = self.slots.ended(
            self.plan, i, RunStatus(run.status), run.exit_code, time.monotonic()
        )
        self.results[i] = run
        if delay is not None and not self.interrupt.fired:
            self._tell("script_retrying", run, delay, self.plan.policy(i).count + 1)
        else:
            if delay is not None:
                self.slots.give_up(i)
            self._tell("script_finished", run)

    def _skip(self, skips: list[tuple[int, str]], stopped_by: int | None) -> None:
        """Record skipped members; a stop_on_error stop is told once, with all of them."""
        if not skips:
            return
        trigger, gid = self.engine.trigger, self.outcome.group_run_id
        for i, detail in skips:
            name = self.plan.scripts[i]
            self.slots.skipped(i, detail)
            self.engine.store.runs.add_skipped([name], trigger, gid, self.record, detail)
            if stopped_by is None:
                self._tell("script_skipped", name, detail)
        if stopped_by is not None and self.stopped_by is None:
            self.stopped_by = stopped_by
            names = [self.plan.scripts[i] for i, _ in skips]
            self._tell("group_stopped", self.plan.scripts[stopped_by], names)

    def _interrupted(self) -> None:
        """End every running tree, record each run, skip what never started."""
        ex = self.engine.executor
        ended = ex.end_all(RunStatus.INTERRUPTED)  # outside the batch: workers must record
        with self.engine.store.batch():
            for job in ended:
                self._ended(job)
            for i in range(len(self.slots)):
                self.slots.give_up(i)
            pending = [i for i, s in enumerate(self.slots) if s.phase is Phase.PENDING]
            for i in pending:
                self.slots.skipped(i, INTERRUPTED_DETAIL)
            names = [self.plan.scripts[i] for i in pending]
            if names:
                self.engine.store.runs.add_skipped(
                    names,
                    self.engine.trigger,
                    self.outcome.group_run_id,
                    self.record,
                    INTERRUPTED_DETAIL,
                )

    def _finish(self) -> None:
        outcome, engine = self.outcome, self.engine
        outcome.results = [
            self.results[i]
            if i in self.results and slot.status is not RunStatus.SKIPPED
            else RunResult(name, RunStatus.SKIPPED, detail=slot.detail)
            for i, (name, slot) in enumerate(zip(outcome.scripts, self.slots, strict=True))
        ]
        if self.interrupt.fired:
            outcome.status = RunStatus.INTERRUPTED
        else:
            outcome.status = RunStatus.FAILED if outcome.failed else RunStatus.SUCCESS
        assert outcome.group_run_id is not None
        # The unit's messages are recorded in the transaction that ends the group run: an
        # orchestrator killed between the two would leave a failure untold (a run unit
        # ended by a signal tells nothing).
        messages = [] if self.interrupt.fired else self._messages()
        with engine.store.batch():
            if messages:
                cast("Store", engine.store).outbox.add(messages)
            engine.store.runs.finish_group(outcome.group_run_id, GroupStatus(outcome.status))
        self._tell("group_finished", outcome)

    def _messages(self) -> list[Any]:
        from .store import Store

        config, store = self.engine.config, self.engine.store
        if not config.settings.notifications.channels or not isinstance(store, Store):
            return []
        from .notify import unit_messages

        unit = "(all)" if self.record == "(all)" else None
        return unit_messages(config, store, self.outcome, unit, self.engine.trigger)

    def _tell(self, event: str, *args: object) -> None:
        """Report progress; inside a batch, only once it is committed.

        Printing can block (a full pipe, a paused terminal): it must never do so while
        the batch holds the history's write lock, which other runs are waiting for.
        """
        if self.reporter is None:
            return
        if self.told is not None:
            self.told.append((event, args))
        else:
            getattr(self.reporter, event)(*args)
