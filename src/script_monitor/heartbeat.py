"""The scheduler's lock (one daemon per config directory) and its heartbeat file.

Other commands (``list-schedules``, ``status``, the watchdog) read both to tell
whether a scheduler runs and whether it is alive.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

from .errors import EXIT_FAILED, ScriptMonitorError

HEARTBEAT_EVERY = 5.0  # real seconds between heartbeat writes
HEARTBEAT_STALE = 30.0  # a heartbeat older than this means a hung scheduler
LOCK_FILE = "scheduler.lock"
HEARTBEAT_FILE = "scheduler.heartbeat"


class AlreadyRunning(ScriptMonitorError):
    """Another scheduler holds the lock of this config directory."""

    exit_code = EXIT_FAILED


# ---------------------------------------------------------------- lock and heartbeat


_FLOCK = "hhqqi4x"  # struct flock on Linux (64-bit off_t), padded to its C size


def lock_holder(state_dir: Path) -> int | None:
    """The pid holding the scheduler lock (0 if not visible here), or None when free."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        kind, _, _, _, pid = struct.unpack(_FLOCK, answer)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


class SchedulerLock:
    """The one-scheduler-per-config-directory lock (POSIX record lock)."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning naming the holder."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = lock_holder(self.path.parent) or _heartbeat_pid(self.path.parent)
            who = f" (pid {pid})" if pid else ""
            raise AlreadyRunning(
                f"a scheduler is already running for this config directory{who}; "
                f"only one may run at a time (lock: {self.path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        """Drop the lock (closing the file releases it)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _heartbeat_pid(state_dir: Path) -> int | None:
    beat = read_heartbeat(state_dir)
    return beat.get("pid") if beat else None


def read_heartbeat(state_dir: Path) -> dict[str, Any] | None:
    """The last heartbeat written by a scheduler of this state directory, if any."""
    try:
        data = json.loads((state_dir / HEARTBEAT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def scheduler_status(state_dir: Path, now: float | None = None) -> dict[str, Any]:
    """Whether a scheduler runs for this state directory: running, pid, heartbeat age."""
    holder = lock_holder(state_dir)
    if holder is None:
        return {"running": False, "pid": None, "heartbeat_age": None, "stale": False}
    beat = read_heartbeat(state_dir) or {}
    pid = holder or beat.get("pid")
    updated = beat.get("updated")
    age = (now or time.time()) - updated if isinstance(updated, int | float) else None
    stale = age is None or age > HEARTBEAT_STALE
    return {"running": True, "pid": pid, "heartbeat_age": age, "stale": stale}


def write_json(path: Path, data: dict) -> None:
    """Replace a small file atomically (write a temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
