"""``CeleryExecutor``: the second ``Executor``; runs go to Celery workers.

The caller keeps the planner (``engine.GroupRun``): ``prepare`` writes the run's row
in the caller's batch as the local executor does, ``start`` sends one message per run
after the commit, ``wait``/``collect`` poll the store for the runs that ended (one
indexed query over this group's running ids, every 20 ms growing to 250 ms) and mark
lost a claimed run whose heartbeat is older than ``execution.lost_after``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, BinaryIO

from .. import logs
from ..config import Config
from ..executor import Job
from ..proc import Interrupt
from ..results import RunResult
from ..states import RunStatus
from ..store import Run, Store
from ..store.postgres import mask_url
from .app import TASK, BrokerError, check_broker, make_app
from .lease import GroupLease

POLL_MIN, POLL_MAX = 0.02, 0.25
UNCLAIMED = "interrupted before a worker took it"
HINT_AFTER = 10.0  # seconds a run may wait for a worker before the terminal says so


class _Sent:
    """What ``send_task`` returns here in place of an AsyncResult."""

    __slots__ = ("id", "ignored")

    def __init__(self, task_id: str):
        self.id = task_id
        self.ignored = True


class CeleryExecutor:
    def __init__(self, config: Config, store: Store, trigger: str, interrupt: Interrupt):
        self.config, self.store, self.trigger, self.interrupt = config, store, trigger, interrupt
        self.lost_after = config.settings.execution.lost_after
        self.claim_timeout = config.settings.execution.claim_timeout
        self.sent: dict[int, Job] = {}
        self.hinted: set[int] = set()  # runs the terminal was told no worker has taken
        self.lease_ttl = config.settings.scheduling.lease_ttl
        self._lease: GroupLease | None = None
        self.ready: list[Run] = []
        self.poll = POLL_MIN
        self._app: Any = None
        # A heartbeat is judged only by an observer that has seen the store answer for
        # lost_after: after the store was out (or when adopting a group run), workers get
        # that long to beat again before their runs count as lost.
        self.beat = max(0.2, min(self.lost_after / 4, 5.0))
        self.watch_from = time.monotonic()
        self._producer: Any = None  # kept from the first message to ``close``
        self._declared: set[str] = set()

    # ------------------------------------------------------------ the group loop

    def app(self) -> Any:
        if self._app is None:
            app = make_app(self.config)
            check_broker(app, self.config.settings.celery.broker_url)
            self._app = app
        return self._app

    def open(self) -> None:
        self.app()

    def close(self) -> None:
        self._drop_producer()
        if self._lease is not None:
            self._lease.stop()
            self._lease = None

    def group_started(self, group_run_id: int) -> None:
        """Hold the group run through a lease, renewed on a thread of its own, so that
        a leading scheduler carries it on if this process dies (docs/DISTRIBUTED.md)."""
        self._lease = GroupLease(self.store, group_run_id, self.lease_ttl)
        self._lease.start()

    def resume(self, running: list[tuple[int, Run]]) -> None:
        """Carry on the runs an orchestrator that died had sent (an adopted group run):
        wait for their ends, and send again those no worker has claimed (a message may
        have been lost with it; the claim refuses the second of two deliveries)."""
        unclaimed = set(self.store.claims.unclaimed([row.id for _, row in running]))
        for index, row in running:
            script = self.config.script(row.script)
            job = Job(row.script, script, row.started, row.log_path or "", None, row.id)
            job.index, job.attempt = index, row.attempt
            job.proc = {
                "run_id": row.id,
                "script": row.script,
                "group": row.group_name,
                "group_run_id": row.group_run_id,
                "trigger": row.trigger,
                "attempt": row.attempt,
            }
            if row.id in unclaimed:
                self.start(job)
            else:
                self.sent[row.id] = job

    def hold(self) -> None:
        pass

    def release(self, committed: bool) -> None:
        pass

    def prepare(
        self,
        name: str,
        group: str | None,
        group_run_id: int | None,
        echo: BinaryIO | None = None,
        attempt: int = 1,
    ) -> Job:
        self.app()  # no row for a run that could not be sent
        if self._lease is not None:
            self._lease.check()  # never start a run of a group run another carries on
        script = self.config.script(name)
        started = time.time()
        rel = logs.new_log_name(name, started)
        run_id = self.store.runs.start_run(
            name, self.trigger, started, group_run_id, group, rel, attempt=attempt
        )
        job = Job(name, script, started, rel, None, run_id)
        job.attempt = attempt
        job.proc = {
            "run_id": run_id,
            "script": name,
            "group": group,
            "group_run_id": group_run_id,
            "trigger": self.trigger,
            "attempt": attempt,
        }
        return job

    def start(self, job: Job) -> None:
        queue = job.script.queue or self.config.settings.celery.queue
        try:
            self._send(job, queue)
        except Exception as e:
            self._drop_producer()
            url = mask_url(self.config.settings.celery.broker_url)
            self.store.claims.give_up_runs(
                [job.run_id], RunStatus.FAILED, f"not sent to {url}: {e}"
            )
            raise BrokerError(f"cannot send run {job.run_id} to the broker {url}: {e}") from None
        self.sent[job.run_id] = job
        self.poll = POLL_MIN

    def _send(self, job: Job, queue: str) -> None:
        """One message naming the run.  The queue is declared with the first message
        sent to it (so that it holds messages before any worker consumed from it), then
        no more; one producer is kept for all of them; the message's readable form for
        Celery's logs and monitors is given, not made by Celery's generic repr; no
        result handle is made (there are no results: the first one would load Celery's
        result backend machinery, some 20 ms, after the first message is out)."""
        if self._producer is None:
            self._producer = self.app().producer_pool.acquire(block=True)
        options: dict[str, Any] = {} if queue not in self._declared else {"declare": []}
        self.app().send_task(
            TASK,
            args=(job.proc,),
            queue=queue,
            ignore_result=True,
            producer=self._producer,
            argsrepr=f"(run {job.run_id} of {job.name!r},)",
            kwargsrepr="{}",
            result_cls=_Sent,
            **options,
        )
        self._declared.add(queue)

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.release()
            except Exception:  # its connection is broken: the pool makes a new one
                pass

    def discard(self, job: Job) -> None:
        pass  # its row was rolled back and nothing was sent

    def wait(self, until: float | None) -> None:
        while not self.ready and self.sent:
            now, began = time.time(), time.monotonic()
            watched = began - self.watch_from >= self.lost_after
            self.ready = self.store.claims.ended_or_stale(
                list(self.sent), self.lost_after if watched else math.inf, now, self.claim_timeout
            )
            if time.monotonic() - began > self.beat:  # the store was out of reach meanwhile
                self.watch_from = time.monotonic()
            self._hint(now)
            if self.ready:
                self.poll = POLL_MIN
                return
            pause = self.poll
            if until is not None:
                pause = min(pause, until - time.monotonic())
            if pause <= 0 or self.interrupt.wait(pause):
                return
            self.poll = min(self.poll * 1.5, POLL_MAX)
        if not self.sent and until is not None:
            self.interrupt.wait(max(0.0, until - time.monotonic()))

    def _hint(self, now: float) -> None:
        """Say once on stderr which runs no worker has taken after ``HINT_AFTER`` s (or
        half the claim timeout, when that is shorter)."""
        after = min(HINT_AFTER, self.claim_timeout / 2)
        waiting = [
            i for i, job in self.sent.items() if i not in self.hinted and now - job.started >= after
        ]
        if not waiting:
            return
        self.hinted.update(waiting)
        for run_id in self.store.claims.unclaimed(waiting):
            job = self.sent[run_id]
            queue = job.script.queue or self.config.settings.celery.queue
            sys.stderr.write(
                f"no worker has taken run {run_id} on queue {queue} for {after:g}s"
                f" (it is lost after execution.claim_timeout, {self.claim_timeout:g}s)\n"
            )
            sys.stderr.flush()

    def collect(self) -> list[Job]:
        rows, self.ready = self.ready, []
        out = []
        for row in rows:
            job = self.sent.pop(row.id, None)
            if job is None:
                continue
            job.run = RunResult(
                job.name,
                row.status,
                row.exit_code,
                row.signal,
                row.duration or 0.0,
                job.run_id,
                self.config.log_dir / row.log_path if row.log_path else None,
                row.detail,
                job.attempt,
                row.anomaly,
                (row.cpu_user or 0.0, row.cpu_system or 0.0, row.max_rss or 0)
                if row.max_rss is not None
                else None,
            )
            out.append(job)
        return out

    def end_all(self, status: str) -> list[Job]:
        """Ask the workers to end every run; give up on those that do not answer in time."""
        ids = list(self.sent)
        self.store.claims.cancel_runs(ids, status, UNCLAIMED)
        beat = max(0.2, min(self.lost_after / 4, 5.0))
        deadline = time.monotonic() + self.config.settings.execution.kill_grace + 2 * beat + 5
        ended: list[Run] = []
        while self.sent and time.monotonic() < deadline:
            ended = self.store.claims.ended_or_stale(ids, self.lost_after, time.time())
            if len(ended) == len(ids):
                break
            time.sleep(0.1)
        left = [i for i in ids if i not in {r.id for r in ended}]
        if left:
            self.store.claims.give_up_runs(
                left, status, "interrupted; its worker did not confirm the end"
            )
        self.ready = self.store.claims.ended_or_stale(ids, self.lost_after, time.time())
        return self.collect()

    def abandon(self) -> None:
        if self.sent:
            try:
                self.store.claims.cancel_runs(list(self.sent), RunStatus.INTERRUPTED, UNCLAIMED)
            except Exception:
                pass

    @property
    def running(self) -> int:
        return len(self.sent) + len(self.ready)

    # ------------------------------------------------------------ one run (`run NAME`)

    def run_one(
        self,
        name: str,
        group: str | None,
        group_run_id: int | None,
        echo: BinaryIO | None,
        attempt: int,
    ) -> RunResult:
        with self.store.batch():
            job = self.prepare(name, group, group_run_id, echo, attempt)
        self.start(job)
        follow = _Echo(self.store, job.run_id, echo) if echo is not None else None
        while True:
            self.wait(time.monotonic() + 0.25 if follow else None)
            if follow:
                follow.pump(done=False)
            if self.interrupt.fired:
                jobs = self.end_all(RunStatus.INTERRUPTED)
                break
            if self.ready:
                jobs = self.collect()
                break
        if follow:
            follow.pump(done=True)
        assert jobs and jobs[0].run is not None
        return jobs[0].run


class _Echo:
    """A remote run's output on the terminal, from the log chunks in the history (read
    through ``logsource.ChunkLog``, as ``logs`` reads them), without the log's header
    and footer, as ``run`` prints a local run's."""

    RULE = logs.RULE.encode()

    def __init__(self, store: Store, run_id: int, out: BinaryIO):
        from ..logsource import ChunkLog

        self.log = ChunkLog(store, run_id)
        self.out = out
        self.offset = 0
        self.buf = b""
        self.in_body = False

    def pump(self, done: bool) -> None:
        end = self.log.size()
        if end > self.offset:
            self.buf += self.log.read(self.offset, end - self.offset)
            self.offset = end
        if not self.in_body:
            end = self.buf.find(self.RULE + b"\n", len(self.RULE))
            if end < 0:
                return
            self.buf = self.buf[end + len(self.RULE) + 1 :]
            self.in_body = True
        foot = self.buf.rfind(self.RULE + b"\nfinished: ")
        if done and foot >= 0:
            body, self.buf = self.buf[:foot], b""
        elif done:
            body, self.buf = self.buf, b""
        else:
            keep = len(self.RULE) + 12  # what may be the start of the footer
            cut = max(0, len(self.buf) - keep) if foot < 0 else foot
            body, self.buf = self.buf[:cut], self.buf[cut:]
        if body:
            self.out.write(body)
            self.out.flush()
