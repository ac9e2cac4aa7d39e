"""A run's log wherever it is: the file in this host's log directory, or the chunks a
worker shipped to the history (docs/DISTRIBUTED.md, "logs from anywhere").

The one reader behind ``logs``, ``logs --follow``, the dashboard's tail, the API's log
download and its Server-Sent Events.  Both kinds are read by byte offset
(``size()``, ``read(offset, n)``), so an SSE id means the same offset in either; a
remote log grows while its run goes on, as a local file does.

Which one: a run recorded by a process on another machine (its owner's host) is read
from the history; so is a run a worker took (its ``host`` is a worker's name) or a run
still running whose file is not here, and any run whose file is missing but whose
chunks are in the history.  Otherwise the local file, as before.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from . import logs
from .states import LogState, RunStatus
from .store import Run

PIECE = 1 << 16  # bytes read and written at a time


class LogUnavailable(Exception):
    """The run's log cannot be shown (rotated, cleared, never written, missing)."""


class LogSource(Protocol):
    remote: bool

    def size(self) -> int: ...
    def read(self, offset: int, n: int) -> bytes: ...
    def close(self) -> None: ...


class FileLog:
    """A log file in this host's log directory."""

    remote = False

    def __init__(self, path: Path):
        self.path = path
        self.fd = -1  # (__del__ of one whose open failed)
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a stream the client left before it began
        self.close()


class ChunkLog:
    """A remote run's log from the history's chunks (``run_logs``), as one byte stream.

    Knows where each chunk starts (one query for the chunks added since it last
    looked); a read fetches only the chunks it covers.  Safe to share between threads.
    """

    remote = True

    def __init__(self, store: Any, run_id: int):
        self.store, self.run_id = store, run_id
        self.starts: list[int] = []
        self.seqs: list[int] = []
        self.total = 0
        self.lock = threading.Lock()

    def size(self) -> int:
        with self.lock:
            after = self.seqs[-1] if self.seqs else -1
        new = self.store.logs.sizes(self.run_id, after)
        with self.lock:
            for seq, n in new:
                if self.seqs and seq <= self.seqs[-1]:
                    continue  # another thread took it meanwhile
                self.seqs.append(seq)
                self.starts.append(self.total)
                self.total += n
            return self.total

    def read(self, offset: int, n: int) -> bytes:
        with self.lock:
            end = min(offset + n, self.total)
            if offset >= end:
                return b""
            first = bisect.bisect_right(self.starts, offset) - 1
            last = bisect.bisect_left(self.starts, end) - 1
            seq_a, seq_b, base = self.seqs[first], self.seqs[last], self.starts[first]
        data = self.store.logs.span(self.run_id, seq_a, seq_b)
        return data[offset - base : end - base]

    def close(self) -> None:
        pass


_UNAVAILABLE = {
    LogState.ROTATED: "was rotated away",
    LogState.CLEARED: "was cleared",
    LogState.NONE: "was never written",
    LogState.ERROR: "could not be written",
}


def open_log(log_dir: Path, store: Any, run: Run) -> LogSource:
    """The log of ``run`` (a row of the history), here or in the history.

    Raises LogUnavailable with the reason when there is none to show.
    """
    if run.log_state != LogState.OK or not run.log_path:
        why = _UNAVAILABLE.get(run.log_state, run.log_state)
        detail = f" ({run.detail})" if run.detail else ""
        raise LogUnavailable(f"the log of run {run.id} of {run.script} {why}{detail}")
    try:
        path = logs.resolve(log_dir, run.log_path)
    except logs.LogPathError:
        raise LogUnavailable(f"run {run.id} names a log outside the log directory") from None
    if not elsewhere(run):
        try:
            return FileLog(path)
        except FileNotFoundError:
            pass
    chunks = ChunkLog(store, run.id)
    if elsewhere(run) or by_worker(run) or run.status == RunStatus.RUNNING or chunks.size():
        return chunks
    raise LogUnavailable(f"the log file of run {run.id} is missing: {path}")


def this_host() -> str:
    return os.uname().nodename


def elsewhere(run: Run) -> bool:
    """True when the process that recorded the run is on another machine."""
    owner = run.owner or ""
    host = owner.split("|", 1)[0] if owner.count("|") == 3 else ""
    return bool(host) and host != this_host()


def by_worker(run: Run) -> bool:
    """True when a worker ran it (its ``host`` is a worker's name, not this machine's)."""
    return bool(run.host) and run.host != this_host()


def copy(source: LogSource, out: BinaryIO, offset: int = 0) -> int:
    """Write the log from ``offset`` to its present end; return the offset reached."""
    end = source.size()
    while offset < end:
        data = source.read(offset, min(PIECE, end - offset))
        if not data:
            break
        out.write(data)
        offset += len(data)
    out.flush()
    return offset


def follow(
    source: LogSource,
    out: BinaryIO,
    done: Callable[[], bool],
    offset: int = 0,
    interval: float = 0.05,
) -> int:
    """Copy the log as it grows until ``done()`` (asked before each look, so what was
    written before the run ended is all shown); return the offset reached."""
    if source.remote:
        interval = max(interval, 0.25)  # a worker ships every 0.5 s: no point asking more
    while True:
        finished = done()
        offset = copy(source, out, offset)
        if finished:
            return offset
        time.sleep(interval)
