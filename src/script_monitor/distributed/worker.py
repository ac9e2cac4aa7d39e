"""What a worker does with one run: claim it, run it as the local engine does, beat,
ship its log to the history, record its end.

The run's row was written by the caller.  ``LocalExecutor`` prepares, launches,
concludes and finishes the run exactly as for a local run (own session, timeout and
tree kill, env and secrets, masking, the log file and its rotation); it is given a
``_ClaimedRun`` in place of the store, whose ``start_run`` claims the existing row
instead of inserting one and whose ``finish_run`` ships the rest of the log first.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import msgspec

from ..anomaly import Band
from ..anomaly import duration_band as band_of
from ..config import Config
from ..errors import StoreBusy, StoreError, StoreUnreachable
from ..executor import LocalExecutor
from ..proc import Interrupt, ProcResult, adopt, wait_for_exit
from ..states import RunStatus
from ..store import RunEnd, Store
from .guard import Guardian

LOG_CAP = 8 * 1024 * 1024  # bytes of one run's output shipped to the history
CHUNK = 64 * 1024
SHIP_EVERY = 0.5  # seconds

log = logging.getLogger("script_monitor.worker")


class Duplicate(Exception):
    """The run was claimed by another delivery of its message (or already ended)."""


class Runs:
    """This worker's runs: one heartbeat thread for all of them; ends them when told to,
    or when the store cannot be reached for ``lost_after`` seconds.  One more thread
    ships the logs of all of them to the history while they run."""

    def __init__(self, store: Store, lost_after: float):
        self.store = store
        self.lost_after = lost_after
        self.every = max(0.2, min(lost_after / 4, 5.0))
        self.active: dict[int, Interrupt] = {}
        self.shippers: dict[int, _Shipper] = {}
        self.guardian: Guardian | None = None  # ends the scripts if this worker dies
        self.lock = threading.Lock()
        self.last_ok = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self.thread.start()
        self.shipping = threading.Thread(target=self._ship_loop, name="ship", daemon=True)
        self.shipping.start()

    def add(self, run_id: int, interrupt: Interrupt) -> None:
        with self.lock:
            self.active[run_id] = interrupt

    def remove(self, run_id: int) -> None:
        with self.lock:
            self.active.pop(run_id, None)
            self.shippers.pop(run_id, None)

    def ship(self, shipper: _Shipper) -> None:
        """Ship this run's log every ``SHIP_EVERY`` seconds until ``unship``."""
        with self.lock:
            self.shippers[shipper.run_id] = shipper

    def unship(self, run_id: int) -> None:
        with self.lock:
            self.shippers.pop(run_id, None)

    def _ship_loop(self) -> None:
        while not self.stop.wait(SHIP_EVERY):
            with self.lock:
                shippers = list(self.shippers.values())
            for shipper in shippers:
                shipper.ship()

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            with self.lock:
                ids = list(self.active)
            if not ids:
                self.last_ok = time.monotonic()
                continue
            try:
                end = self.store.claims.beat(ids, time.time())
                self.last_ok = time.monotonic()
            except Exception:
                if time.monotonic() - self.last_ok < self.lost_after:
                    continue
                end = ids  # the store is out of reach: end the scripts rather than run unrecorded
            with self.lock:
                for run_id in end:
                    if run_id in self.active:
                        self.active[run_id].fire(signal.SIGTERM)


class _Shipper:
    """Copies a run's log file into the history in chunks while it is written (``ship``,
    called by the worker's shipping thread); ``rest`` hands over what is left when the
    run ends, recorded with the run's end in one statement."""

    def __init__(self, store: Store, run_id: int, path: str):
        self.store, self.run_id, self.path = store, run_id, path
        self.offset = 0
        self.seq = 0
        self.capped = False
        self.done = False
        self.lock = threading.Lock()

    def ship(self) -> None:
        with self.lock:
            if self.done:
                return
            for part in self._take():
                try:
                    self.store.logs.add(self.run_id, self.seq, part)
                except Exception:
                    return  # tried again next turn from the same offset
                self._shipped(part)

    def rest(self) -> list[tuple[int, bytes]]:
        """The chunks not shipped yet, as (seq, bytes); nothing is shipped after this."""
        with self.lock:
            self.done = True
            out = []
            for part in self._take():
                out.append((self.seq, part))
                self._shipped(part)
            return out

    def _take(self) -> list[bytes]:
        """The chunks of what the file holds beyond the shipped part, up to the cap."""
        if self.capped:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(LOG_CAP - self.offset + 1)
        except OSError:
            return []
        if self.offset + len(data) > LOG_CAP:
            data = data[: LOG_CAP - self.offset]
            note = (
                f"\n[script-monitor: the output went on past {LOG_CAP // 1024} KiB; the rest is"
                " only in the worker's log file]\n"
            ).encode()
            data += note
        return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]

    def _shipped(self, part: bytes) -> None:
        self.seq += 1
        self.offset += len(part)
        self.capped = self.offset > LOG_CAP  # only the note can take it past the cap


class _ClaimedRun:
    """The history as LocalExecutor sees it for one claimed run: its recorder's
    ``start_run`` claims the row the caller wrote instead of adding one, and its
    ``finish_run`` records the end with the rest of the log."""

    def __init__(
        self, store: Store, tracker: Runs, run_id: int, host: str, log_dir: str, window: int = 0
    ):
        self._store, self.tracker, self.run_id = store, tracker, run_id
        self.host, self.log_dir = host, log_dir
        self.window = window  # the anomaly band's (0: the script has none)
        self.durations: list[float] | None = None
        self.shipper: _Shipper | None = None
        self.runs = self
        self.alerts = store.alerts
        self.batch = store.batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store.runs, name)

    def start_run(
        self,
        script: str,
        trigger: str,
        started: float,
        group_run_id: int | None = None,
        group: str | None = None,
        log_path: str | None = None,
        attempt: int = 1,
    ) -> int:
        owner = self._store.core.owner_text  # this worker process: reap_lost here knows it
        claims = self._store.claims
        if self.window:  # the anomaly band's durations come with the claim
            self.durations = claims.claim_with_durations(
                self.run_id, self.host, owner, started, log_path, self.window
            )
            if self.durations is None:
                raise Duplicate(self.run_id)
        elif not claims.claim_run(self.run_id, self.host, owner, started, log_path):
            raise Duplicate(self.run_id)
        if log_path:
            self.shipper = _Shipper(self._store, self.run_id, os.path.join(self.log_dir, log_path))
            self.tracker.ship(self.shipper)
        return self.run_id

    def duration_band(
        self,
        script: str,
        window: int = 50,
        min_runs: int = 10,
        slow: float = 3.0,
        fast: float = 0.2,
        before: int | None = None,
    ) -> Band | None:
        """The script's usual durations (read with the claim), or None (no anomaly
        mark) when the store is out of reach: the run's end matters more than its mark."""
        if self.durations is not None and window == self.window and before == self.run_id:
            return band_of(self.durations, slow=slow, fast=fast, min_runs=min_runs)
        try:
            return self._store.runs.duration_band(script, window, min_runs, slow, fast, before)
        except StoreError:
            return None

    def finish_run(self, run_id: int, end: RunEnd) -> list[str]:
        """Record the run's end with its log's last chunks, waiting for the store for as
        long as it takes: the run stays among this worker's runs meanwhile, so it beats
        again as soon as the store answers and nobody takes it for lost (recording it
        twice is harmless).  Other store errors are not waited out."""
        chunks: list[tuple[int, bytes]] = []
        if self.shipper is not None:
            self.tracker.unship(run_id)
            chunks = self.shipper.rest()
            if self.shipper.capped:
                note = f"log in the history capped at {LOG_CAP // 1024} KiB"
                detail = f"{end.detail}; {note}" if end.detail else note
                end = msgspec.structs.replace(end, detail=detail)
        pause = 1.0
        while True:
            try:
                return self._store.claims.finish_claimed(run_id, chunks, end)
            except (StoreUnreachable, StoreBusy) as e:
                log.warning("run %d: cannot record its end yet (%s); trying again", run_id, e)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)


def run_claimed(
    config: Config, store: Store, runs: Runs, host: str, message: dict[str, Any]
) -> str:
    """Run the message's run unless another delivery has it; return what happened."""
    run_id = int(message["run_id"])
    name = message["script"]
    if name not in config.scripts:
        if store.claims.claim_run(run_id, host, str(store.owner), time.time(), None):
            detail = f"the worker {host} has no script {name!r} in its configuration"
            store.runs.finish_run(run_id, RunEnd(RunStatus.FAILED, time.time(), 0.0, detail=detail))
        return "unknown script"
    interrupt = Interrupt()
    rule = config.anomaly_for(config.scripts[name])
    window = rule.window if rule.enabled else 0
    claimed = _ClaimedRun(store, runs, run_id, host, str(config.log_dir), window)
    ex = LocalExecutor(config, claimed, message.get("trigger", "manual"), interrupt)
    try:
        try:
            job = ex.prepare(
                name, message.get("group"), message.get("group_run_id"), None,
                int(message.get("attempt", 1)),
            )  # fmt: skip
        except Duplicate:
            return "duplicate"
        except StoreError:  # not claimed: the message goes back to the queue, not away
            from celery.exceptions import Reject

            raise Reject("the store could not record the claim", requeue=True) from None
        runs.add(run_id, interrupt)
        guard = runs.guardian
        if guard is not None:
            guard.started(job.token)
        try:
            ex.launch(job)
            if isinstance(job.proc, ProcResult):
                result = job.proc
            else:
                status = wait_for_exit(
                    job.proc, config.timeout_for(job.script), interrupt, ex.limit_check(job)
                )
                result = ex.conclude(job, status)
            ex.finish(job, result)
        finally:
            runs.remove(run_id)
            if guard is not None:
                guard.ended(job.token)
            adopt.reap()
        return str(result.status)
    finally:
        for fd in (interrupt._r, interrupt._w):
            os.close(fd)
