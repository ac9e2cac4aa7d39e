"""The worker's side of its guardian (supervise.py): the scripts it runs die with it.

The guardian is told the token of each run before its process starts and after it has
ended; if the worker dies, it ends the processes of the runs still going.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

PROGRAM = Path(__file__).resolve().parent.parent / "supervise.py"


class Guardian:
    """One per worker process, in a session of its own."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-E", str(PROGRAM), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        self.pipe: IO[bytes] | None = self.proc.stdin
        self.lock = threading.Lock()

    def _send(self, line: str) -> None:
        with self.lock:
            if self.pipe is None:
                return
            try:
                self.pipe.write(line.encode() + b"\n")
                self.pipe.flush()
            except OSError:  # the guardian is gone: nothing more it can do
                self.pipe = None

    def started(self, token: str) -> None:
        """Before the run's process starts."""
        self._send(f"+{token}")

    def ended(self, token: str) -> None:
        """After the run's process tree was concluded."""
        self._send(f"-{token}")

    def stop(self) -> None:
        """A clean stop of the worker: the guardian leaves every process alone."""
        self._send("q")
        with self.lock:
            if self.pipe is not None:
                try:
                    self.pipe.close()
                except OSError:
                    pass
                self.pipe = None
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
