"""Run a script, or a group of scripts serially or in parallel; record every run."""

from __future__ import annotations

import os
import select
import threading
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO, Protocol

import msgspec

from . import logs
from .config import Config, Group, Script
from .masking import Masker, Pump
from .proc import (
    POLL_INTERVAL,
    TOKEN_VAR,
    Interrupt,
    ProcResult,
    conclude,
    spawn,
    terminate_tree,
    wait_for_exit,
)
from .store import History

FAILED = ("failed", "timeout")
NO_SECRETS = Masker(())
PUMP_DRAIN = 1.0  # seconds to wait for the masking pipe's end after the script exits


class RunResult(msgspec.Struct):
    """The outcome of one script run."""

    script: str
    status: str
    exit_code: int | None = None
    signal: int | None = None
    duration: float = 0.0
    run_id: int | None = None
    log_path: Path | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"


class GroupResult(msgspec.Struct):
    """The outcome of a group run; ``results`` follow the group's order."""

    name: str
    mode: str
    scripts: list[str]
    results: list[RunResult] = msgspec.field(default_factory=list)
    status: str = "success"
    group_run_id: int | None = None
    interrupted_by: int | None = None

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.results if r.status in FAILED]

    @property
    def completed(self) -> list[RunResult]:
        return [r for r in self.results if r.status in ("success", *FAILED)]


class _Job:
    """A run between its start and its end (engine-internal)."""

    __slots__ = (
        "env",
        "fd",
        "follower",
        "log_error",
        "masker",
        "name",
        "out_fd",
        "proc",
        "pump",
        "rel",
        "run_id",
        "script",
        "started",
        "token",
    )

    def __init__(
        self, name: str, script: Script, started: float, rel: str, fd: int | None, run_id: int
    ):
        self.name, self.script, self.started, self.rel = name, script, started, rel
        self.fd, self.run_id = fd, run_id
        self.log_error: str | None = None
        self.token = ""
        self.masker: Masker | None = None
        self.pump: Pump | None = None
        self.follower = None
        self.env: dict[str, str] | None = None  # until launched
        self.out_fd: int | None = None  # what the child writes to, until launched
        self.proc = None  # a Popen or Child, or a ProcResult when it never started


class Reporter(Protocol):
    """What the engine tells about progress; implemented in render.py."""

    def group_started(self, name: str, mode: str, scripts: list[str]) -> None: ...
    def script_started(self, name: str) -> None: ...
    def script_finished(self, result: RunResult) -> None: ...
    def group_stopped(self, failed: str, skipped: list[str]) -> None: ...
    def group_finished(self, result: GroupResult) -> None: ...


class Engine:
    """Runs scripts of one configuration and records them in one store."""

    def __init__(
        self,
        config: Config,
        store: History,
        reporter: Reporter | None = None,
        trigger: str = "manual",
        interrupt: Interrupt | None = None,
    ):
        self.config = config
        self.store = store
        self.reporter = reporter
        self.trigger = trigger
        self.interrupt = interrupt or Interrupt()
        self.log_dir = config.log_dir
        self._base_env: dict[str, str] | None = None
        self._global_file: dict[str, str] = {}
        self._cwds: dict[str, str] = {}
        self._remover: logs.Remover | None = None  # set while a group runs
        self._held: list[str] | None = None  # rotated logs held until a batch commits

    # ------------------------------------------------------------ one script

    def run_script(
        self,
        name: str,
        group: str | None = None,
        group_run_id: int | None = None,
        echo: BinaryIO | None = None,
    ) -> RunResult:
        """Run one script to its end, streaming its output to its log (and ``echo``)."""
        job = self._prepare(name, group, group_run_id, echo)
        self._launch(job)
        if isinstance(job.proc, ProcResult):
            return self._end(job, job.proc)
        status = wait_for_exit(job.proc, self.config.timeout_for(job.script), self.interrupt)
        return self._end(job, self._conclude(job, status))

    def _prepare(
        self, name: str, group: str | None, group_run_id: int | None, echo: BinaryIO | None
    ) -> _Job:
        """Record the run as started and open its log; ``_launch`` starts it.

        Inside a store batch the row is committed with the batch, and the process
        must only be launched after that commit."""
        script = self.config.script(name)
        started = time.time()
        rel = logs.new_log_name(name, started)
        fd, log_error = self._open_log(rel)
        try:
            run_id = self.store.start_run(
                name, self.trigger, started, group_run_id, group, rel if fd is not None else None
            )
        except BaseException:  # not recorded, so not run: leave no orphan log behind
            if fd is not None:
                os.close(fd)
                logs.remove(self.log_dir, [rel])
            raise
        job = _Job(name, script, started, rel, fd, run_id)
        job.log_error = log_error
        env, secrets = self._env(script, name, group, run_id)
        job.token = env[TOKEN_VAR]
        job.masker = Masker(secrets) if secrets else NO_SECRETS
        if fd is not None:
            head = logs.header(name, script.command, started, self.trigger, group, run_id)
            job.log_error = self._write(fd, job.masker.bytes(head) if job.masker else head)
        out_fd, job.pump = self._sink(fd, job.masker, secrets, echo)
        job.follower = self._start_echo(rel, fd, echo) if echo and fd is not None else None
        job.env, job.out_fd = env, out_fd
        return job

    def _launch(self, job: _Job) -> None:
        """Start a prepared (and recorded) job's process."""
        if self.interrupt.fired:
            job.proc = ProcResult("interrupted", error="interrupted before it started")
        else:
            script = job.script
            job.proc = spawn(
                self._argv(script), cwd=self._cwd(script), env=job.env, out_fd=job.out_fd
            )
        if job.out_fd != job.fd:
            os.close(job.out_fd)  # the pipe's write end, or /dev/null: the child has its own
        job.env = None

    def _discard(self, job: _Job) -> None:
        """A prepared job whose row was never committed: close and remove its log."""
        if job.out_fd is not None and job.out_fd != job.fd:
            os.close(job.out_fd)
        if job.pump is not None:
            job.pump.finish(PUMP_DRAIN)  # its write end is closed: it ends at once
        if job.fd is not None:
            os.close(job.fd)
            logs.remove(self.log_dir, [job.rel])

    def _conclude(self, job: _Job, status: str) -> ProcResult:
        """End the job's tree if it must be ended; return how it ended."""
        grace = self.config.settings.execution.kill_grace
        return conclude(job.proc, status, job.token, grace, job.script.leftovers == "kill")

    def _end(self, job: _Job, result: ProcResult) -> RunResult:
        """Finish the log, record the end of the run, rotate the script's logs."""
        ended = time.time()
        duration = ended - job.started
        if job.pump is not None:
            job.pump.finish(PUMP_DRAIN)  # leftovers may hold the pipe: do not wait for them
        if job.follower is not None:
            job.follower[1].set()
            job.follower[0].join()
        detail = _detail(result, job.script, self.config.timeout_for(job.script))
        if job.masker:
            detail = job.masker.text(detail)
        fd, log_error = job.fd, job.log_error
        if fd is not None:
            log_error = log_error or self._write_footer(fd, result, duration, detail)
            os.close(fd)
        if log_error:
            detail = f"{detail}; {log_error}" if detail else log_error
        gone = self.store.finish_run(
            job.run_id,
            result.status,
            ended,
            duration,
            result.exit_code,
            result.signal,
            result.pid,
            detail,
            "error" if fd is None else None,
            expire=self._expiry(job.script) if fd is not None else None,
        )
        if self._held is not None:  # the rows are not committed yet: delete after
            self._held += gone
        else:
            self._dispose(gone)
        return RunResult(
            job.name,
            result.status,
            result.exit_code,
            result.signal,
            duration,
            job.run_id,
            self.log_dir / job.rel if fd is not None else None,
            detail,
        )

    def _dispose(self, gone: list[str]) -> None:
        """Delete rotated logs (on the remover's thread while a group runs)."""
        if not gone:
            return
        if self._remover is not None:
            self._remover.give(gone)
        else:
            logs.remove(self.log_dir, gone)

    def _sink(
        self, fd: int | None, masker: Masker, secrets: list[str], echo: BinaryIO | None
    ) -> tuple[int, Pump | None]:
        """Where the child writes: the log (through a masking pipe when it has secrets).

        Without a log, ``run``'s output still reaches the terminal; else /dev/null.
        """
        target = fd
        if target is None and echo is not None:
            echo.flush()
            target = os.dup(echo.fileno())
        if target is None:
            return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC), None
        if not masker:
            return target, None
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pump = Pump(read_end, os.dup(target), masker, secrets)
        if target != fd:
            os.close(target)
        return write_end, pump

    def _write_footer(self, fd: int, result, duration: float, detail: str | None) -> str | None:
        size = os.fstat(fd).st_size
        return self._write(
            fd,
            logs.footer(
                result.status,
                result.exit_code,
                result.signal,
                duration,
                detail,
                not logs.ends_with_newline(fd, size),
            ),
        )

    def _argv(self, script: Script) -> list[str]:
        if isinstance(script.command, str):
            return ["/bin/sh", "-c", script.command]
        return list(script.command)

    def _env(
        self, script: Script, name: str, group: str | None, run_id: int
    ) -> tuple[dict[str, str], list[str]]:
        """The child's environment, and the values in it that are secret."""
        if self._base_env is None:
            self._base_env = dict(os.environ)
            settings = self.config.settings
            if settings.env_file:
                self._global_file = read_env_file(self.config.path(settings.env_file))
                self._base_env.update(self._global_file)
        env = dict(self._base_env)
        secrets = list(self._global_file.values())
        if script.env_file:
            from_file = read_env_file(self.config.path(script.env_file))
            env.update(from_file)
            secrets += from_file.values()
        for key, value in script.env.items():
            env[key] = _env_text(value)
        for key in (*self.config.settings.secret_env, *script.secret_env):
            if key in env:
                secrets.append(env[key])
        env["SCRIPT_MONITOR_SCRIPT"] = name
        env["SCRIPT_MONITOR_RUN_ID"] = str(run_id)
        env["SCRIPT_MONITOR_CONFIG_DIR"] = str(self.config.root)
        env[TOKEN_VAR] = f"{run_id}.{os.getpid()}.{os.urandom(6).hex()}"
        if group and group in self.config.groups:
            env["SCRIPT_MONITOR_GROUP"] = group
        else:
            env.pop("SCRIPT_MONITOR_GROUP", None)
        return env, secrets

    def _open_log(self, rel: str) -> tuple[int | None, str | None]:
        path = self.log_dir / rel
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        try:
            return os.open(path, flags, 0o640), None
        except FileNotFoundError:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                return os.open(path, flags, 0o640), None
            except OSError as e:
                return None, f"log not written: {e.strerror} ({path.parent})"
        except OSError as e:
            return None, f"log not written: {e.strerror} ({path})"

    @staticmethod
    def _write(fd: int, data: bytes) -> str | None:
        try:
            os.write(fd, data)
        except OSError as e:
            return f"log incomplete: {e.strerror}"
        return None

    def _start_echo(
        self, rel: str, fd: int, echo: BinaryIO
    ) -> tuple[threading.Thread, threading.Event]:
        done = threading.Event()
        offset = os.fstat(fd).st_size
        thread = threading.Thread(
            target=logs.follow,
            args=(self.log_dir / rel, offset, echo, done.is_set),
            daemon=True,
        )
        thread.start()
        return thread, done

    def _cwd(self, script: Script) -> str:
        """The script's working directory, resolved once per engine and configured value."""
        value = script.cwd or "."
        cwd = self._cwds.get(value)
        if cwd is None:
            cwd = self._cwds[value] = str(self.config.path(value))
        return cwd

    def _expiry(self, script: Script) -> tuple[str, int | None, float | None]:
        limit = self.config.log_limit_for(script)
        if limit.type == "count":
            return script.name, limit.value, None
        return script.name, None, time.time() - limit.value * 86400

    # ------------------------------------------------------------ groups

    def run_group(self, name: str) -> GroupResult:
        """Run a configured group in its configured mode."""
        group: Group = self.config.group(name)
        workers = self.config.workers_for(group) if group.execution == "parallel" else 1
        return self.run_many(
            group.name,
            group.execution,
            group.scripts,
            workers,
            group.stop_on_error and group.execution == "serial",
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
    ) -> GroupResult:
        """Serial (one worker) and parallel (many) share this path."""
        if self._remover is None:
            self._remover = logs.Remover(self.log_dir)
            try:
                return self.run_many(name, mode, scripts, workers, stop_on_error, record)
            finally:
                self._remover.close()
                self._remover = None
        outcome = GroupResult(name, mode, list(scripts))
        record = record or name
        outcome.group_run_id = self.store.start_group(record, self.trigger)
        if self.reporter:
            self.reporter.group_started(name, mode, outcome.scripts)
        results: dict[int, RunResult] = {}
        stopped = _Runner(self, outcome, record, workers, stop_on_error, results).run()
        skipped = [s for i, s in enumerate(outcome.scripts) if i not in results]
        if skipped:
            reason = (
                "interrupted before it started"
                if self.interrupt.fired
                else ("an earlier script failed (stop_on_error)")
            )
            self.store.add_skipped(skipped, self.trigger, outcome.group_run_id, record, reason)
        if stopped and self.reporter and not self.interrupt.fired:
            failed = next(r.script for r in results.values() if r.status in FAILED)
            self.reporter.group_stopped(failed, skipped)
        outcome.results = [
            results.get(i) or RunResult(s, "skipped") for i, s in enumerate(outcome.scripts)
        ]
        outcome.status = _group_status(outcome, self.interrupt)
        outcome.interrupted_by = self.interrupt.signum
        self.store.finish_group(outcome.group_run_id, outcome.status)
        if self.reporter:
            self.reporter.group_finished(outcome)
        return outcome


class _Runner:
    """Runs a group's scripts from one thread, waiting on all running ones at once.

    Serial is one slot, parallel is ``workers`` slots.  Each running child is watched
    through a pidfd in one poll(), so no thread per script contends for the GIL; only
    ending a tree (timeout, ``leftovers: kill``), which may take the kill grace, is
    handed to a short-lived thread so that the other scripts are not held up.
    """

    def __init__(
        self,
        engine: Engine,
        outcome: GroupResult,
        record: str,
        workers: int,
        stop_on_error: bool,
        results: dict[int, RunResult],
    ):
        self.engine, self.outcome, self.record = engine, outcome, record
        self.workers, self.stop_on_error, self.results = workers, stop_on_error, results
        self.pending = deque(enumerate(outcome.scripts))
        self.running: dict[int, tuple[int, _Job, float | None, int | None]] = {}
        self.ending: dict[int, threading.Thread] = {}  # trees a helper thread is ending
        self.done: deque[tuple[int, ProcResult]] = deque()
        self.stopped = False
        self.poller = select.poll()
        self.ready: set[int] = set()  # the descriptors the last poll found ready
        self.told: list[tuple[str, object]] | None = None  # progress held during a batch
        self._key = 0

    def run(self) -> bool:
        """Run until all ran, stop_on_error stopped it, or an interrupt; True if stopped."""
        wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.poller.register(wake_r, select.POLLIN)
        self.poller.register(self.engine.interrupt.fileno(), select.POLLIN)
        try:
            while True:
                self._step(wake_r)
                if not self.running:
                    if self._may_start():  # what was prepared could not start: go on
                        continue
                    return self.stopped
                if self.engine.interrupt.fired:
                    self._end_all("interrupted")
                    return self.stopped
                self._wait()
        finally:
            self._abandon()
            os.close(wake_r)
            os.close(self.wake_w)

    def _may_start(self) -> bool:
        return bool(self.pending) and not self.stopped and not self.engine.interrupt.fired

    def _step(self, wake_r: int) -> None:
        """Record the runs that ended and the runs to start next with one commit; start them.

        The rows of the new runs are committed before their processes start, so no
        process ever runs without its row; the logs that rotation frees are deleted
        only after the commit that marks them rotated.
        """
        engine = self.engine
        engine._held = []
        self.told = []  # progress is printed after the commit: see _tell
        prepared: list[tuple[int, _Job]] = []
        committed = False
        try:
            with engine.store.batch():
                self._collect(wake_r)
                while self._may_start() and len(self.running) + len(prepared) < self.workers:
                    index, name = self.pending.popleft()
                    self._tell("script_started", name)
                    job = engine._prepare(name, self.record, self.outcome.group_run_id, None)
                    prepared.append((index, job))
            committed = True
        finally:
            held, engine._held = engine._held, None
            told, self.told = self.told, None
            if committed:
                engine._dispose(held)
            else:  # not recorded, so not run: leave no log behind
                for _, job in prepared:
                    engine._discard(job)
        for event, arg in told:
            getattr(engine.reporter, event)(arg)
        for index, job in prepared:
            self._start(index, job)

    def _tell(self, event: str, arg: object) -> None:
        """Report progress; inside a batch, only once it is committed.

        Printing can block (a full pipe, a paused terminal): it must never do so while
        the batch holds the history's write lock, which other runs are waiting for.
        """
        if self.engine.reporter is None:
            return
        if self.told is not None:
            self.told.append((event, arg))
        else:
            getattr(self.engine.reporter, event)(arg)

    def _start(self, index: int, job: _Job) -> None:
        engine = self.engine
        engine._launch(job)
        if isinstance(job.proc, ProcResult):
            self._finish(index, job, job.proc)
            return
        try:
            pidfd: int | None = os.pidfd_open(job.proc.pid)
            self.poller.register(pidfd, select.POLLIN)
        except (AttributeError, OSError):
            pidfd = None  # no pidfd here: the wait below polls this child instead
        timeout = engine.config.timeout_for(job.script)
        deadline = time.monotonic() + timeout if timeout else None
        self._key += 1
        self.running[self._key] = (index, job, deadline, pidfd)

    def _wait(self) -> None:
        now = time.monotonic()
        waits = [
            d - now
            for k, (_, _, d, _) in self.running.items()
            if d is not None and k not in self.ending
        ]
        if any(pidfd is None for *_, pidfd in self.running.values()):
            waits.append(POLL_INTERVAL)
        # Capped: a timeout of 1e308 s is valid config but no poll() argument.
        wait_ms = -1 if not waits else max(0, int(min(*waits, 3600.0) * 1000) + 1)
        self.ready = {fd for fd, _ in self.poller.poll(wait_ms)}

    def _collect(self, wake_r: int) -> None:
        try:
            os.read(wake_r, 4096)
        except BlockingIOError:
            pass
        while self.done:
            key, result = self.done.popleft()
            self.ending.pop(key).join()
            index, job, _, _ = self._forget(key)
            self._finish(index, job, result)
        now = time.monotonic()
        ready, self.ready = self.ready, set()
        for key, (index, job, deadline, pidfd) in list(self.running.items()):
            if key in self.ending:
                continue
            # A child whose pidfd did not wake the poll has not exited: no waitpid for it.
            if (pidfd is None or pidfd in ready) and job.proc.poll() is not None:
                if job.script.leftovers == "kill":
                    self._end_in_thread(key, job, "exited")
                else:
                    self._forget(key)
                    self._finish(index, job, self.engine._conclude(job, "exited"))
            elif deadline is not None and now >= deadline:
                self._end_in_thread(key, job, "timeout")

    def _end_in_thread(self, key: int, job: _Job, status: str) -> None:
        """Conclude in a helper thread (it may wait out the kill grace), then wake the loop."""
        index, job, deadline, pidfd = self.running[key]
        if pidfd is not None:  # an ended child's pidfd stays readable: stop watching it
            self.poller.unregister(pidfd)
            os.close(pidfd)
            self.running[key] = (index, job, deadline, None)

        def end() -> None:
            result = self.engine._conclude(job, status)
            self.done.append((key, result))
            os.write(self.wake_w, b"!")

        thread = threading.Thread(target=end, name=f"end-{job.name}", daemon=True)
        self.ending[key] = thread
        thread.start()

    def _end_all(self, status: str) -> None:
        """End every running tree at once (an interrupt), then record each run."""
        outcomes: dict[int, ProcResult] = {}

        def end(key: int, job: _Job) -> None:
            outcomes[key] = self.engine._conclude(job, status)

        threads = [
            threading.Thread(target=end, args=(k, job), daemon=True)
            for k, (_, job, _, _) in self.running.items()
            if k not in self.ending
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for thread in self.ending.values():  # trees a helper was already ending (timeouts)
            thread.join()
        self.ending.clear()
        while self.done:
            key, result = self.done.popleft()
            outcomes[key] = result
        for key in sorted(outcomes):
            index, job, _, _ = self._forget(key)
            self._finish(index, job, outcomes[key])

    def _forget(self, key: int) -> tuple[int, _Job, float | None, int | None]:
        entry = self.running.pop(key)
        pidfd = entry[3]
        if pidfd is not None:
            self.poller.unregister(pidfd)
            os.close(pidfd)
        return entry

    def _finish(self, index: int, job: _Job, result: ProcResult) -> None:
        run = self.engine._end(job, result)
        self.results[index] = run
        self._tell("script_finished", run)
        if self.stop_on_error and run.status in FAILED:
            self.stopped = True

    def _abandon(self) -> None:
        """After an unexpected error: end every tree still running (their rows become lost)."""
        for key, (_, job, _, _) in list(self.running.items()):
            if key not in self.ending:
                terminate_tree(
                    job.proc, job.token, self.engine.config.settings.execution.kill_grace
                )
            self._forget(key)


def _group_status(outcome: GroupResult, interrupt: Interrupt) -> str:
    if interrupt.fired:
        return "interrupted"
    return "failed" if outcome.failed else "success"


def _detail(result, script: Script, timeout: float) -> str | None:
    notes = []
    if result.error:
        notes.append(result.error)
    if result.status == "timeout":
        notes.append(f"timed out after {timeout:g}s; its process tree was ended")
    if result.status == "interrupted":
        notes.append("interrupted; its process tree was ended")
    if result.leftovers:
        pids = " ".join(str(p) for p in result.leftovers[:20])
        action = "ended (leftovers: kill)" if script.leftovers == "kill" else "left running"
        notes.append(f"background processes still running after exit were {action}: {pids}")
    return "; ".join(notes) or None


def _env_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def read_env_file(path: Path) -> dict[str, str]:
    """Variables from a dotenv file (python-dotenv syntax)."""
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}
