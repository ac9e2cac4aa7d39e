"""A worker's guardian: the scripts a worker runs die with it.

Each worker starts one guardian (``python -S -E supervise.py WORKER_PID``, in a session
of its own, so that a signal to the worker's process group does not reach it) and
tells it, through a pipe on its stdin, the token of every run it starts (``+TOKEN``)
and ends (``-TOKEN``); ``q`` is a clean stop.  When the pipe closes without ``q``, or
the worker's pidfd says it is gone, the worker died (SIGKILL, the OOM killer, a
crash): the guardian ends every process that carries the token of a run still going
(``SCRIPT_MONITOR_RUN_TOKEN`` in its environment, so descendants that left the
script's process group or session are found too), SIGTERM and then SIGKILL after
``GRACE`` seconds, and exits.  One process per worker, nothing per run: a run costs
two short writes to the pipe.  A pidfd and a pipe are used rather than
``PR_SET_PDEATHSIG``, which fires when the *thread* that started a child ends, not
the process.

Standard library only, and no import of script_monitor: it starts in milliseconds.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

GRACE = 2.0  # seconds between SIGTERM and SIGKILL once the worker is gone


def carriers(tokens: set[str]) -> list[int]:
    """Processes (not this one) whose environment carries one of these run tokens."""
    needles = {f"SCRIPT_MONITOR_RUN_TOKEN={t}".encode() for t in tokens}
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needles & set(f.read().split(b"\0")):
                    out.append(int(entry))
        except OSError:
            continue
    return out


def end_runs(tokens: set[str]) -> None:
    """SIGTERM every process of these runs, then SIGKILL what is left after GRACE."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = carriers(tokens) if tokens else []
        for pid in pids:
            try:
                os.killpg(os.getpgid(pid), sig)  # its process group, then itself
            except OSError:
                pass
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if sig == signal.SIGTERM and pids:
            deadline = time.monotonic() + GRACE
            while time.monotonic() < deadline and carriers(tokens):
                time.sleep(0.1)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.stderr.write("usage: supervise.py WORKER_PID\n")
        os._exit(70)
    worker = int(argv[1])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)  # only the worker's end ends this
    try:
        watch = os.pidfd_open(worker)
    except OSError:
        watch = None
    gone = watch is None or os.getppid() != worker
    active: set[str] = set()
    poller = select.poll()
    poller.register(0, select.POLLIN)
    if watch is not None:
        poller.register(watch, select.POLLIN)
    pending = b""
    while not gone:
        for fd, _ in poller.poll():
            if fd == watch:
                gone = True
                continue
            data = os.read(0, 65536)
            if not data:
                gone = True
                continue
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                if text == "q":
                    os._exit(0)
                if text.startswith("+"):
                    active.add(text[1:])
                elif text.startswith("-"):
                    active.discard(text[1:])
    end_runs(active)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
