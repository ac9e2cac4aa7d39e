"""A run's supervisor on a worker: its script's tree dies with the worker.

A worker starts each script through this small program (run as a file, before any
import of the package, by ``python -S -E supervise.py WORKER_PID COMMAND...``):
``proc.spawn`` starts it in a new session as it would start the script; it starts the
script in that same session and process group, waits for it and exits as it did (the
same exit code, or the same signal), so the worker records the run as usual.  The
signals a timeout or an interrupt sends to that process group reach the script; the
supervisor ignores the catchable ones and ends only after the script.

It also watches the worker through a pidfd.  When the worker process is gone (SIGKILL,
the OOM killer, a crash) the supervisor ends the script's tree: SIGTERM to its process
group and to every process that carries the run's token
(``SCRIPT_MONITOR_RUN_TOKEN``, so descendants that left the group are found), then
SIGKILL after ``GRACE`` seconds.  A pidfd is used rather than ``PR_SET_PDEATHSIG``,
which fires when the *thread* that started the child ends, not the process.

Standard library only, and no import of script_monitor: it starts in about 15 ms.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

GRACE = 2.0  # seconds between SIGTERM and SIGKILL once the worker is gone
IGNORED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
DEFAULTS = {*IGNORED, signal.SIGPIPE, signal.SIGXFSZ}


def _token_carriers(token: str) -> list[int]:
    """Processes (not this one) whose environment carries the run's token."""
    needle = f"SCRIPT_MONITOR_RUN_TOKEN={token}".encode()
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    out.append(int(entry))
        except OSError:
            continue
    return out


def _signal_tree(token: str, sig: int) -> None:
    """The run's escaped descendants, then its process group (this one included)."""
    for pid in _token_carriers(token) if token else []:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    try:
        os.killpg(os.getpgrp(), sig)
    except OSError:
        pass


def _exit_as(status: int) -> None:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.stderr.write("usage: supervise.py WORKER_PID COMMAND...\n")
        os._exit(70)
    worker, command = int(argv[1]), argv[2:]
    try:
        watch = os.pidfd_open(worker)
    except OSError:
        os._exit(70)  # the worker is already gone: nothing may run unrecorded
    if os.getppid() != worker:
        os._exit(70)
    for sig in IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    try:
        child = os.posix_spawnp(command[0], command, os.environ, setsigdef=DEFAULTS)
    except OSError as e:
        sys.stderr.write(f"cannot start: {e.strerror or e}: {command[0]!r}\n")
        os._exit(127)
    done = os.pidfd_open(child)
    token = os.environ.get("SCRIPT_MONITOR_RUN_TOKEN", "")
    poller = select.poll()
    poller.register(watch, select.POLLIN)
    poller.register(done, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if done in ready:
            _, status = os.waitpid(child, 0)
            _exit_as(status)
        if watch in ready:  # the worker died: its run's tree must not outlive it
            _signal_tree(token, signal.SIGTERM)  # ignored here
            deadline = time.monotonic() + GRACE
            while time.monotonic() < deadline:
                pid, _ = os.waitpid(child, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.05)
            _signal_tree(token, signal.SIGKILL)  # this one last, with its group
            os._exit(137)


if __name__ == "__main__":
    main(sys.argv)
