"""Run logs: where they live, their header and footer, rotation, reading them back."""

from __future__ import annotations

import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

RULE = "=" * 60


class LogPathError(ValueError):
    """A log path that would lead outside the log directory."""


def new_log_name(script: str, started: float) -> str:
    """A unique log file name for a run, relative to the log directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    micro = int(started * 1_000_000) % 1_000_000
    return f"{script}/{stamp}.{micro:06d}-{os.getpid()}.log"


def resolve(log_dir: Path, relative: str) -> Path:
    """The absolute path of a stored log, refusing anything outside ``log_dir``."""
    path = (log_dir / relative).resolve()
    if not path.is_relative_to(log_dir.resolve()):
        raise LogPathError(relative)
    return path


def local_iso(ts: float) -> str:
    """``ts`` as local ISO 8601 time to the second with its UTC offset (what
    ``datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")`` gives,
    at a fraction of its cost: it is written into every log)."""
    t = time.localtime(ts)
    off = t.tm_gmtoff or 0
    sign = "-" if off < 0 else "+"
    hours, rest = divmod(abs(off), 3600)
    zone = f"{sign}{hours:02d}:{rest // 60:02d}" + (f":{rest % 60:02d}" if rest % 60 else "")
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + zone


def command_text(command: str | list[str] | list[str | int | float]) -> str:
    return command if isinstance(command, str) else shlex.join(map(str, command))


def header(
    script: str,
    command: str | list[str],
    started: float,
    trigger: str,
    group: str | None,
    run_id: int,
) -> bytes:
    lines = [
        RULE,
        f"script:  {script}" + (f"  (group {group})" if group else ""),
        f"command: {command_text(command)}",
        f"started: {local_iso(started)}",
        f"trigger: {trigger}    run: {run_id}",
        RULE,
        "",
    ]
    return "\n".join(lines).encode()


def footer(
    status: str,
    exit_code: int | None,
    sig: int | None,
    duration: float,
    detail: str | None,
    needs_newline: bool,
) -> bytes:
    code = f"exit code {exit_code}" if exit_code is not None else "no exit code"
    if sig is not None:
        code = f"killed by signal {sig}"
    lines = [RULE, f"finished: {status}, {code}, duration {duration:.3f}s"]
    if detail:
        lines.append(f"note: {detail}")
    lines.append(RULE)
    return ("\n" if needs_newline else "").encode() + "\n".join(lines).encode() + b"\n"


class Remover:
    """Deletes rotated logs on a helper thread while a group runs.

    Freeing a file's blocks is the slowest step of rotation on some filesystems
    (about 0.1-0.2 ms a file on ext4 mounted with ``discard``).  Off the loop's path
    it overlaps with the scripts' own run time.  The store has already marked the
    logs rotated; ``close`` returns once every one of them is deleted.
    """

    def __init__(self, log_dir: Path):
        self.root = os.path.realpath(log_dir)
        self.queue: Any = None  # a queue.SimpleQueue once a log is given
        self.thread: threading.Thread | None = None

    def give(self, relatives: list[str]) -> None:
        if not relatives:
            return
        if self.thread is None:
            import queue

            self.queue = queue.SimpleQueue()
            self.thread = threading.Thread(target=self._work, name="log-remover", daemon=True)
            self.thread.start()
        self.queue.put(relatives)

    def _work(self) -> None:
        while (batch := self.queue.get()) is not None:
            _remove(self.root, batch)

    def close(self) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
            self.thread = None


def _inside(root: str, relative: str) -> str | None:
    """``root/relative`` when it names a file below ``root``, else None.

    Logs are only ever deleted through the path they were written by, so a string
    check suffices (no symlink resolution, which costs a system call per part): it
    refuses absolute paths and any ``..`` that would climb out of the log directory.
    """
    path = os.path.normpath(os.path.join(root, relative))
    return path if path.startswith(root + os.sep) else None


def ends_with_newline(fd: int, size: int) -> bool:
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def remove(log_dir: Path, relatives: list[str]) -> None:
    """Delete log files (already marked gone in the store); missing ones are fine."""
    _remove(os.path.realpath(log_dir), relatives)


def _remove(root: str, relatives: list[str]) -> None:
    for rel in relatives:
        path = _inside(root, rel)
        if path is None:
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            print(f"script-monitor: cannot delete log {rel}: {e.strerror}", file=sys.stderr)


class Utf8Out:
    """A binary writer that replaces undecodable bytes, even when split across chunks."""

    def __init__(self, out: BinaryIO):
        import codecs

        self.out = out
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, chunk: bytes) -> None:
        self.out.write(self.decoder.decode(chunk).encode())

    def flush(self) -> None:
        self.out.flush()

    def finish(self) -> None:
        """Write out a trailing incomplete sequence (as a replacement character)."""
        self.out.write(self.decoder.decode(b"", final=True).encode())
        self.out.flush()


def follow(
    path: Path, offset: int, out: BinaryIO, done: Callable[[], bool], interval: float = 0.05
) -> int:
    """Copy what is appended to ``path`` from ``offset`` to ``out`` until ``done()``.

    Returns the offset reached.  Copies in chunks, never holding the file in memory.
    """
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            finished = done()
            chunk = f.read(1 << 16)
            while chunk:
                out.write(chunk)
                chunk = f.read(1 << 16)
            out.flush()
            if finished:
                return f.tell()
            time.sleep(interval)
