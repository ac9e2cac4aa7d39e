"""A pager for long output, as git does it: on a terminal only, and only when needed.

``paged()`` puts ``sys.stdout`` in front of a sink that holds the output back until
it is longer than the screen; then it starts ``$SCRIPT_MONITOR_PAGER``, else
``$PAGER``, else ``less`` (with ``LESS=FRX`` unless ``LESS`` is set), hands it what
was held back and streams the rest.  Shorter output goes to the terminal as if there
were no pager.  When stdout is not a terminal, or the pager is ``cat`` or empty,
nothing changes at all.  The sink says it is a terminal, so tables and colours look
the same inside the pager (``less -R`` shows the colours).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

    from _typeshed import ReadableBuffer

DEFAULT = "less"
DEFAULT_LESS = "FRX"  # quit if one screen, pass colours, keep the text on exit
ESCAPE = rb"\x1b\[[0-9;?]*[A-Za-z]"  # ANSI codes take no room on screen


def command(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """The pager's shell command, or None for no pager (``cat`` or empty)."""
    text = environ.get("SCRIPT_MONITOR_PAGER", environ.get("PAGER", DEFAULT)).strip()
    return None if text in ("", "cat") else text


@contextmanager
def paged(enabled: bool = True) -> Iterator[None]:
    """Page what is written to stdout inside the block, when it is longer than the screen."""
    pager = command() if enabled else None
    try:
        terminal = pager is not None and os.isatty(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # stdout replaced or closed
        terminal = False
    if pager is None or not terminal:
        yield
        return
    sys.stdout.flush()
    size = os.get_terminal_size(sys.stdout.fileno())
    sink = _Sink(sys.stdout.fileno(), pager, size.lines or 24, size.columns or 80)
    real = sys.stdout
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(sink), encoding=real.encoding, errors=real.errors, newline=None
    )
    try:
        yield
        sys.stdout.flush()
    finally:
        wrapper, sys.stdout = sys.stdout, real
        try:
            wrapper.flush()
        except (BrokenPipeError, ValueError):
            pass
        sink.finish()
        wrapper.close()


class _Sink(io.RawIOBase):
    """Holds output back until it needs more rows than the screen has, then pages it."""

    def __init__(self, fd: int, pager: str, rows: int, columns: int):
        self.fd, self.pager, self.rows, self.columns = fd, pager, rows, columns
        self.held = bytearray()
        self.used = 0  # screen rows taken by the complete lines held back
        self.proc: subprocess.Popen | None = None
        self.direct = False  # the pager could not be started: write to the terminal
        self.done = False
        import re

        self.escape = re.compile(ESCAPE)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        data = bytes(data)
        if self.done:  # after finish(): a late flush of the wrapper has nowhere to go
            pass
        elif self.direct:
            _write_all(self.fd, data)
        elif self.proc is not None:
            self._to_pager(data)
        else:
            self.held += data
            self.used += sum(self._height(line) for line in data.split(b"\n")[:-1])
            last = self.held[self.held.rfind(b"\n") + 1 :]
            # the prompt after the output takes one more row
            if self.used + (self._height(last) if last else 0) >= self.rows:
                self._start()
        return len(data)

    def _height(self, line: bytes | bytearray) -> int:
        width = len(self.escape.sub(b"", line).decode("utf-8", "replace").expandtabs())
        return max(1, -(-width // self.columns))

    def _start(self) -> None:
        if not _runnable(self.pager):
            print(f"script-monitor: cannot run the pager {self.pager!r}", file=sys.stderr)
            self._go_direct()
            return
        import subprocess

        env = dict(os.environ)
        env.setdefault("LESS", DEFAULT_LESS)
        env.setdefault("LV", "-c")
        self.proc = subprocess.Popen(["/bin/sh", "-c", self.pager], stdin=subprocess.PIPE, env=env)
        held, self.held = bytes(self.held), bytearray()
        self._to_pager(held)

    def _to_pager(self, data: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            # The user quit the pager: the command stops, as git's do.
            if self.proc.wait() not in (126, 127):
                raise
            self.proc = None  # the shell could not run it after all: show the rest plainly
            self._go_direct()
            _write_all(self.fd, data)

    def _go_direct(self) -> None:
        self.direct = True
        _write_all(self.fd, bytes(self.held))
        self.held = bytearray()

    def finish(self) -> None:
        """Write what was held back, or let the pager show the end and wait for it to quit."""
        proc, self.proc, self.done = self.proc, None, True
        if proc is None:
            _write_all(self.fd, bytes(self.held))
            self.held = bytearray()
            return
        import signal

        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the pager
        try:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except BrokenPipeError:
                pass
            proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)


def _runnable(pager: str) -> bool:
    """Whether the pager's program exists (a command the shell must read is trusted)."""
    import shlex
    import shutil

    try:
        first = shlex.split(pager)[0]
    except (ValueError, IndexError):
        return True
    return "=" in first or shutil.which(first) is not None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
