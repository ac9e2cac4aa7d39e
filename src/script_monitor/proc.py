"""Spawn one script in its own session, wait for it, end its whole tree.

Every child goes through ``run_process``.  The child's stdout and stderr are the
run's log file itself (opened for appending), so output lands on disk as it is
written, in the order it was written, without passing through this process and
without being held in memory.  Waiting uses a pidfd, so a run that ends is
noticed at once and a timeout or an interrupt wakes the waiter at once.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

POLL_INTERVAL = 0.02


class Interrupt:
    """A one-shot flag that wakes every waiting run when script-monitor is told to stop."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self.signum: int | None = None

    def fire(self, signum: int) -> None:
        """Called from a signal handler: remember the first signal, wake the waiters."""
        if self.signum is None:
            self.signum = signum
            try:
                os.write(self._w, b"!")
            except OSError:
                pass

    @property
    def fired(self) -> bool:
        return self.signum is not None

    def fileno(self) -> int:
        return self._r

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until fired; return whether it fired."""
        if self.fired:
            return True
        select.select([self._r], [], [], max(timeout, 0))
        return self.fired


@dataclass
class ProcResult:
    """How a child ended."""

    status: str  # success | failed | timeout | interrupted
    exit_code: int | None = None
    signal: int | None = None
    pid: int | None = None
    error: str | None = None
    leftovers: list[int] = field(default_factory=list)


def run_process(
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    out_fd: int,
    timeout: float,
    grace: float,
    interrupt: Interrupt,
    kill_leftovers: bool = False,
    on_spawn: Callable[[int], None] | None = None,
) -> ProcResult:
    """Run ``argv`` to completion, timeout or interrupt; never raises for child trouble."""
    if interrupt.fired:
        return ProcResult("interrupted", error="interrupted before it started")
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=out_fd,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        return ProcResult("failed", error=f"cannot start: {e.strerror or e}: {argv[0]!r}")
    if on_spawn is not None:
        on_spawn(proc.pid)
    status = _wait(proc, timeout, interrupt)
    if status != "exited":
        terminate_group(proc, grace)
        return ProcResult(status, proc.returncode, _signal_of(proc.returncode), proc.pid)
    code = proc.returncode
    result = ProcResult(
        "success" if code == 0 else "failed",
        code if code >= 0 else None,
        _signal_of(code),
        proc.pid,
    )
    if group_alive(proc.pid):
        result.leftovers = group_members(proc.pid)
        if kill_leftovers:
            terminate_group(proc, grace)
    return result


def _signal_of(code: int | None) -> int | None:
    return -code if code is not None and code < 0 else None


def _wait(proc: subprocess.Popen, timeout: float, interrupt: Interrupt) -> str:
    """Wait for exit; return 'exited', 'timeout' or 'interrupted'."""
    deadline = time.monotonic() + timeout if timeout else None
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return _wait_polling(proc, deadline, interrupt)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(interrupt.fileno(), select.POLLIN)
        while True:
            wait_ms = -1 if deadline is None else max(0, (deadline - time.monotonic()) * 1000)
            ready = {fd for fd, _ in poller.poll(wait_ms if wait_ms == -1 else int(wait_ms) + 1)}
            if pidfd in ready:
                proc.wait()
                return "exited"
            if interrupt.fired:
                return "interrupted"
            if deadline is not None and time.monotonic() >= deadline:
                return "timeout"
    finally:
        os.close(pidfd)


def _wait_polling(proc: subprocess.Popen, deadline: float | None, interrupt: Interrupt) -> str:
    while proc.poll() is None:
        if interrupt.fired:
            return "interrupted"
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        interrupt.wait(POLL_INTERVAL)
    return "exited"


def group_alive(pgid: int) -> bool:
    """Whether any process is left in the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """The pids in process group ``pgid`` (read from /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            members.append(int(entry))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the child's whole process group, SIGKILL whatever is left after ``grace``."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    _signal_group(pgid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None and not group_alive(pgid):
            return
        time.sleep(POLL_INTERVAL)
    _signal_group(pgid, signal.SIGKILL)
    proc.wait()
    end = time.monotonic() + 5
    while group_alive(pgid) and time.monotonic() < end:
        time.sleep(POLL_INTERVAL)
