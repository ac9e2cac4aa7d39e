"""The local executor: starts runs as child processes of this one and reports their ends.

``engine.GroupRun`` decides which runs start (with ``planner``); an executor does it.
This one prepares a run (its row, its log, its environment), starts its process in
its own session, waits on every running child's pidfd in one ``poll()``, ends trees
on timeout or interrupt, and records each run's end.  A Celery executor would offer
the same methods (``prepare``, ``launch``, ``discard``, ``wait``, ``collect``,
``end_all``, ``abandon``) with workers on other hosts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store.api import History

import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol, cast

from . import logs
from .config import Config, Script, read_env_file
from .masking import Masker, Pump
from .proc import (
    POLL_INTERVAL,
    SAMPLE_EVERY,
    TOKEN_VAR,
    Interrupt,
    ProcResult,
    adopt,
    conclude,
    over_limits,
    spawn,
    terminate_tree,
    wait_for_exit,
)
from .results import RunResult
from .states import LogState, RunStatus
from .store.records import RunEnd

NO_SECRETS = Masker(())
PUMP_DRAIN = 1.0  # seconds to wait for the masking pipe's end after the script exits


class Job:
    """A run between its start and its end."""

    __slots__ = (
        "attempt",
        "echo",
        "env",
        "fd",
        "follower",
        "group",
        "index",
        "limits",
        "log_error",
        "masker",
        "matcher",
        "name",
        "next_look",
        "out_fd",
        "over",
        "proc",
        "pump",
        "rel",
        "result",
        "run",
        "run_id",
        "script",
        "secrets",
        "started",
        "token",
    )

    def __init__(
        self, name: str, script: Script, started: float, rel: str, fd: int | None, run_id: int
    ):
        self.name, self.script, self.started, self.rel = name, script, started, rel
        self.fd, self.run_id = fd, run_id
        self.index = 0  # the member of the group it runs for
        self.group: str | None = None
        self.echo: BinaryIO | None = None
        self.secrets: list[str] = []
        self.attempt = 1
        self.log_error: str | None = None
        self.token = ""
        self.masker: Masker | None = None
        self.matcher: Any = None  # an alerts.Matcher when the script has output alerts
        self.pump: Pump | None = None
        self.follower: tuple[threading.Thread, threading.Event] | None = None
        self.env: dict[str, str] | None = None  # until launched
        self.out_fd: int | None = None  # what the child writes to, until launched
        self.proc: Any = None  # a Popen or Child, or a ProcResult when it never started
        self.result: ProcResult | None = None  # how its process ended
        self.run: RunResult | None = None  # once recorded
        self.limits: tuple[int | None, float | None] | None = None  # (max_rss, max_cpu)
        self.over: str | None = None  # the limit it went over: ``max_rss`` or ``max_cpu``
        self.next_look = 0.0  # monotonic time of the next look at its tree (limits)


class Executor(Protocol):
    """What the group loop needs of an executor."""

    def prepare(
        self,
        name: str,
        group: str | None,
        group_run_id: int | None,
        echo: BinaryIO | None = None,
        attempt: int = 1,
    ) -> Job:
        """Record the run as started (inside the caller's store batch); start nothing yet."""
        ...

    def start(self, job: Job) -> None:
        """Start a prepared run whose row is committed."""
        ...

    def run_one(
        self,
        name: str,
        group: str | None,
        group_run_id: int | None,
        echo: BinaryIO | None,
        attempt: int,
    ) -> RunResult:
        """Run one attempt of one script outside a group loop (``run NAME``) to its end."""
        ...

    def open(self) -> None:
        """Get ready to run a group."""
        ...

    def close(self) -> None:
        """After a group."""
        ...

    def hold(self) -> None:
        """Keep what must wait for the batch's commit (rotated logs) until ``release``."""
        ...

    def release(self, committed: bool) -> None: ...

    def discard(self, job: Job) -> None:
        """Forget a prepared run whose row was never committed."""
        ...

    def wait(self, until: float | None) -> None:
        """Block until a run ends, the monotonic time ``until``, or an interrupt."""
        ...

    def collect(self) -> list[Job]:
        """Record the end of every run that ended since the last call (inside a batch)."""
        ...

    def end_all(self, status: str) -> list[Job]:
        """End every running run (an interrupt) and record each."""
        ...

    def abandon(self) -> None:
        """After an unexpected error: end every tree still running."""
        ...

    @property
    def running(self) -> int: ...


class LocalExecutor:
    """Runs scripts as children of this process; one instance per engine."""

    def __init__(self, config: Config, store: History, trigger: str, interrupt: Interrupt):
        self.config = config
        self.store = store
        self.trigger = trigger
        self.interrupt = interrupt
        self.log_dir = config.log_dir
        self._base_env: dict[str, str] | None = None
        self._global_file: dict[str, str] = {}
        self._cwds: dict[str, str] = {}
        self._remover: logs.Remover | None = None  # set while a group runs
        self._held: list[str] | None = None  # rotated logs held until a batch commits
        self._loop: _Loop | None = None

    # ------------------------------------------------------------ the group loop

    def open(self) -> None:
        """Get ready to run a group: a remover thread and a poll loop."""
        self._remover = logs.Remover(self.log_dir)
        self._loop = _Loop(self)

    def close(self) -> None:
        """After a group: stop watching, wait for rotated logs to be deleted."""
        loop, self._loop = self._loop, None
        adopt.reap()
        try:
            if loop is not None:
                loop.close()
        finally:
            if self._remover is not None:
                self._remover.close()
                self._remover = None

    def hold(self) -> None:
        """From now until ``release``, rotated logs are kept: their rows are not committed."""
        self._held = []

    def release(self, committed: bool) -> None:
        held, self._held = self._held or [], None
        if committed:
            self.dispose(held)

    def start(self, job: Job) -> None:
        assert self._loop is not None
        self._loop.start(job)

    def wait(self, until: float | None) -> None:
        assert self._loop is not None
        self._loop.wait(until)

    def collect(self) -> list[Job]:
        assert self._loop is not None
        return self._loop.collect()

    def end_all(self, status: str) -> list[Job]:
        assert self._loop is not None
        return self._loop.end_all(status)

    def abandon(self) -> None:
        if self._loop is not None:
            self._loop.abandon()

    @property
    def running(self) -> int:
        """Runs started and not yet collected."""
        loop = self._loop
        return len(loop.running) + len(loop.ended) if loop is not None else 0

    # ------------------------------------------------------------ one run

    def run_one(
        self,
        name: str,
        group: str | None,
        group_run_id: int | None,
        echo: BinaryIO | None,
        attempt: int,
    ) -> RunResult:
        job = self.prepare(name, group, group_run_id, echo, attempt)
        self.launch(job)
        if isinstance(job.proc, ProcResult):  # it could not start
            return self.finish(job, job.proc)
        timeout = self.config.timeout_for(job.script)
        status = wait_for_exit(job.proc, timeout, self.interrupt, self.limit_check(job))
        return self.finish(job, self.conclude(job, status))

    def limit_check(self, job: Job) -> Callable[[], bool] | None:
        """For a run with ``limits``: a look at its tree that says whether it went over."""
        if job.limits is None:
            return None

        def over() -> bool:
            return self.over_limit(job)

        return over

    def over_limit(self, job: Job) -> bool:
        """Whether the job's tree is over one of its limits now (noted in ``job.over``)."""
        assert job.limits is not None
        job.over = job.over or over_limits(job.proc.pid, job.token, *job.limits)
        return job.over is not None

    def prepare(
        self,
        name: str,
        group: str | None,
        group_run_id: int | None,
        echo: BinaryIO | None = None,
        attempt: int = 1,
    ) -> Job:
        """Record the run as started; ``launch`` opens its log and starts it.

        Inside a store batch the row is committed with the batch, and the process
        must only be launched after that commit.  The log file is created by
        ``launch``, not here: creating a file is the costliest step of a run on many
        disks, and done after the commit it overlaps with the runs already started
        instead of delaying every start of the batch.  The row names the log from
        the start; a log that cannot be created is marked when the run ends."""
        script = self.config.script(name)
        started = time.time()
        rel = logs.new_log_name(name, started)
        run_id = self.store.runs.start_run(
            name, self.trigger, started, group_run_id, group, rel, attempt=attempt
        )
        job = Job(name, script, started, rel, None, run_id)
        job.attempt, job.group, job.echo = attempt, group, echo
        env, job.secrets = self._env(script, name, group, run_id)
        job.token = env[TOKEN_VAR]
        job.masker = Masker(job.secrets) if job.secrets else NO_SECRETS
        job.env = env
        if script.limits is not None:
            job.limits = self.config.limits_for(script)
        return job

    def _open(self, job: Job) -> None:
        """Create the run's log with its header; set up where the child writes."""
        fd, job.log_error = self._open_log(job.rel)
        job.fd = fd
        script, masker = job.script, job.masker
        assert masker is not None
        if fd is not None:
            head = logs.header(
                job.name,
                cast("str | list[str]", script.command),
                job.started,
                self.trigger,
                job.group,
                job.run_id,
            )
            job.log_error = self._write(fd, masker.bytes(head) if masker else head)
        if script.alerts:  # output alerts (docs/NOTIFICATIONS.md): matched by the relay thread
            from .alerts import Matcher

            job.matcher = Matcher(script.alerts)
        job.out_fd, job.pump = self._sink(fd, masker, job.secrets, job.echo, job.matcher)
        echo = job.echo
        job.follower = self._start_echo(job.rel, fd, echo) if echo and fd is not None else None

    def launch(self, job: Job) -> None:
        """Open a prepared (and recorded) job's log and start its process."""
        self._open(job)
        if self.interrupt.fired:
            job.proc = ProcResult(RunStatus.INTERRUPTED, error="interrupted before it started")
        else:
            script = job.script
            assert job.env is not None and job.out_fd is not None
            adopt.run_started(job.token)
            job.proc = spawn(
                self._argv(script), cwd=self._cwd(script), env=job.env, out_fd=job.out_fd
            )
        if job.out_fd is not None and job.out_fd != job.fd:
            os.close(job.out_fd)  # the pipe's write end, or /dev/null: the child has its own
        job.env = None

    def discard(self, job: Job) -> None:
        """A prepared job whose row was never committed (its log is not created yet)."""
        if job.out_fd is not None and job.out_fd != job.fd:
            os.close(job.out_fd)
        if job.pump is not None:
            job.pump.finish(PUMP_DRAIN)  # its write end is closed: it ends at once
        if job.fd is not None:
            os.close(job.fd)
            logs.remove(self.log_dir, [job.rel])

    def conclude(self, job: Job, status: str) -> ProcResult:
        """End the job's tree if it must be ended; return how it ended."""
        grace = self.config.settings.execution.kill_grace
        result = conclude(job.proc, status, job.token, grace, job.script.leftovers == "kill")
        if job.over is not None and status == RunStatus.FAILED:
            limits = job.script.limits
            value = getattr(limits, job.over, None)
            shown = f"{value:g}s" if isinstance(value, float) else str(value)
            result.error = f"exceeded limits.{job.over} ({shown}); its process tree was ended"
        return result

    def finish(self, job: Job, result: ProcResult) -> RunResult:
        """Finish the log, record the end of the run, rotate the script's logs."""
        ended = time.time()
        duration = ended - job.started
        if job.pump is not None:
            job.pump.finish(PUMP_DRAIN)  # leftovers may hold the pipe: do not wait for them
        if job.follower is not None:
            job.follower[1].set()
            job.follower[0].join()
        alert = None
        if job.matcher is not None:  # output alerts: record them; `fail: true` fails the run
            from .alerts import conclude

            result, alert = conclude(job.matcher, self.store, job.run_id, job.name, result)
        detail = _detail(result, job.script, self.config.timeout_for(job.script))
        if alert:
            detail = f"{detail}; {alert}" if detail else alert
        if job.masker:
            detail = job.masker.text(detail)
        fd, log_error = job.fd, job.log_error
        if fd is not None:
            log_error = log_error or self._write_footer(fd, result, duration, detail)
            os.close(fd)
        if log_error:
            detail = f"{detail}; {log_error}" if detail else log_error
        anomaly = None
        if result.status == RunStatus.SUCCESS:
            rule = self.config.anomaly_for(job.script)
            if rule.enabled:  # the band of the runs before this one (docs/MONITORING.md)
                from .anomaly import classify

                band = self.store.runs.duration_band(
                    job.name, rule.window, rule.min_runs, rule.slow, rule.fast, job.run_id
                )
                anomaly = classify(duration, band)
        end = RunEnd(
            result.status,
            ended,
            duration,
            result.exit_code,
            result.signal,
            result.pid,
            detail,
            LogState.ERROR if fd is None else None,
            expire=self._expiry(job.script) if fd is not None else None,
            usage=result.usage,
            anomaly=anomaly,
        )
        gone = self.store.runs.finish_run(job.run_id, end)
        if self._held is not None:  # the rows are not committed yet: delete after
            self._held += gone
        else:
            self.dispose(gone)
        return RunResult(
            job.name,
            result.status,
            result.exit_code,
            result.signal,
            duration,
            job.run_id,
            self.log_dir / job.rel if fd is not None else None,
            detail,
            job.attempt,
            anomaly,
            result.usage,
        )

    def dispose(self, gone: list[str]) -> None:
        """Delete rotated logs (on the remover's thread while a group runs)."""
        if not gone:
            return
        if self._remover is not None:
            self._remover.give(gone)
        else:
            logs.remove(self.log_dir, gone)

    def _sink(
        self,
        fd: int | None,
        masker: Masker,
        secrets: list[str],
        echo: BinaryIO | None,
        matcher: Any = None,
    ) -> tuple[int, Pump | None]:
        """Where the child writes: the log (through a masking pipe when it has secrets or
        output alerts: the relay thread feeds the matcher).

        Without a log, ``run``'s output still reaches the terminal; else /dev/null.
        """
        target = fd
        if target is None and echo is not None:
            echo.flush()
            target = os.dup(echo.fileno())
        if target is None:
            return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC), None
        if not masker and matcher is None:
            return target, None
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pump = Pump(read_end, os.dup(target), masker, secrets, matcher and matcher.feed)
        if target != fd:
            os.close(target)
        return write_end, pump

    def _write_footer(
        self, fd: int, result: ProcResult, duration: float, detail: str | None
    ) -> str | None:
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
        return list(cast("list[str]", script.command))  # the loader made every word a str

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


def _detail(result: ProcResult, script: Script, timeout: float) -> str | None:
    notes = []
    if result.error:
        notes.append(result.error)
    if result.status == RunStatus.TIMEOUT:
        notes.append(f"timed out after {timeout:g}s; its process tree was ended")
    if result.status == RunStatus.INTERRUPTED:
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


def _ended(job: Job) -> ProcResult:
    assert job.result is not None
    return job.result


class _Loop:
    """The running children of a group, watched from one thread in one ``poll()``.

    Each child is watched through a pidfd, so no thread per script contends for the
    GIL; only ending a tree (timeout, ``leftovers: kill``), which may take the kill
    grace, is handed to a short-lived thread so that the other scripts are not held up.
    """

    def __init__(self, executor: LocalExecutor):
        self.ex = executor
        self.running: dict[int, tuple[Job, float | None, int | None]] = {}
        self.ending: dict[int, threading.Thread] = {}  # trees a helper thread is ending
        self.done: deque[tuple[int, ProcResult]] = deque()
        self.ended: list[Job] = []  # runs that could not start, to report with the next collect
        self.poller = select.poll()
        self.ready: set[int] = set()  # the descriptors the last poll found ready
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.poller.register(self.wake_r, select.POLLIN)
        self.poller.register(executor.interrupt.fileno(), select.POLLIN)
        self._key = 0

    def close(self) -> None:
        try:
            self.abandon()
        finally:
            os.close(self.wake_r)
            os.close(self.wake_w)

    def start(self, job: Job) -> None:
        ex = self.ex
        ex.launch(job)
        if isinstance(job.proc, ProcResult):
            job.result = job.proc
            self.ended.append(job)
            return
        try:
            fd = os.pidfd_open(job.proc.pid)
            self.poller.register(fd, select.POLLIN)
            pidfd: int | None = fd
        except (AttributeError, OSError):
            pidfd = None  # no pidfd here: the wait below polls this child instead
        timeout = ex.config.timeout_for(job.script)
        deadline = time.monotonic() + timeout if timeout else None
        job.next_look = time.monotonic() + SAMPLE_EVERY
        self._key += 1
        self.running[self._key] = (job, deadline, pidfd)

    def wait(self, until: float | None) -> None:
        if self.ended or self.done:
            return
        now = time.monotonic()
        waits = [
            d - now
            for k, (_, d, _) in self.running.items()
            if d is not None and k not in self.ending
        ]
        if until is not None:
            waits.append(until - now)
        if any(pidfd is None for *_, pidfd in self.running.values()):
            waits.append(POLL_INTERVAL)
        looks = [j.next_look for j, _, _ in self.running.values() if j.limits is not None]
        if looks:  # runs with limits: wake for the next look at their trees
            waits.append(min(looks) - now)
        # Capped: a timeout of 1e308 s is valid config but no poll() argument.
        wait_ms = -1 if not waits else max(0, int(min(*waits, 3600.0) * 1000) + 1)
        self.ready = {fd for fd, _ in self.poller.poll(wait_ms)}

    def collect(self) -> list[Job]:
        """Finish and record the runs that ended; return them."""
        try:
            os.read(self.wake_r, 4096)
        except BlockingIOError:
            pass
        out: list[Job] = []
        for job in self.ended:
            self._finish(job, _ended(job), out)
        self.ended = []
        while self.done:
            key, result = self.done.popleft()
            self.ending.pop(key).join()
            job, _, _ = self._forget(key)
            self._finish(job, result, out)
        now = time.monotonic()
        ready, self.ready = self.ready, set()
        for key, (job, deadline, pidfd) in list(self.running.items()):
            if key in self.ending:
                continue
            # A child whose pidfd did not wake the poll has not exited: no waitpid for it.
            if (pidfd is None or pidfd in ready) and job.proc.poll() is not None:
                if job.script.leftovers == "kill":
                    self._end_in_thread(key, job, "exited")
                else:
                    self._forget(key)
                    self._finish(job, self.ex.conclude(job, "exited"), out)
            elif deadline is not None and now >= deadline:
                self._end_in_thread(key, job, RunStatus.TIMEOUT)
            elif job.limits is not None and now >= job.next_look:
                job.next_look = now + SAMPLE_EVERY
                if self.ex.over_limit(job):
                    self._end_in_thread(key, job, RunStatus.FAILED)
        return out

    def _finish(self, job: Job, result: ProcResult, out: list[Job]) -> None:
        job.run = self.ex.finish(job, result)
        out.append(job)

    def _end_in_thread(self, key: int, job: Job, status: str) -> None:
        """Conclude in a helper thread (it may wait out the kill grace), then wake the loop."""
        job, deadline, pidfd = self.running[key]
        if pidfd is not None:  # an ended child's pidfd stays readable: stop watching it
            self.poller.unregister(pidfd)
            os.close(pidfd)
            self.running[key] = (job, deadline, None)

        def end() -> None:
            result = self.ex.conclude(job, status)
            self.done.append((key, result))
            os.write(self.wake_w, b"!")

        thread = threading.Thread(target=end, name=f"end-{job.name}", daemon=True)
        self.ending[key] = thread
        thread.start()

    def end_all(self, status: str) -> list[Job]:
        """End every running tree at once (an interrupt), then record each run."""
        outcomes: dict[int, ProcResult] = {}

        def end(key: int, job: Job) -> None:
            outcomes[key] = self.ex.conclude(job, status)

        threads = [
            threading.Thread(target=end, args=(k, job), daemon=True)
            for k, (job, _, _) in self.running.items()
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
        out: list[Job] = []
        for job in self.ended:
            self._finish(job, _ended(job), out)
        self.ended = []
        for key in sorted(outcomes):
            job, _, _ = self._forget(key)
            self._finish(job, outcomes[key], out)
        return out

    def _forget(self, key: int) -> tuple[Job, float | None, int | None]:
        entry = self.running.pop(key)
        pidfd = entry[2]
        if pidfd is not None:
            self.poller.unregister(pidfd)
            os.close(pidfd)
        return entry

    def abandon(self) -> None:
        """After an unexpected error: end every tree still running (their rows become lost)."""
        for key, (job, _, _) in list(self.running.items()):
            if key not in self.ending:
                terminate_tree(job.proc, job.token, self.ex.config.settings.execution.kill_grace)
            self._forget(key)
