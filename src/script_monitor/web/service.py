"""What the web server knows and does, without any HTTP: the configuration (reloaded
when its files change), the history (the same Store and serializer as the CLI),
cached renderings of both, and starting runs as separate processes.

Every method here is synchronous and may block on the database; the app calls them
in worker threads.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..config import Config, Group, Script, load_config
from ..errors import ConfigError
from ..serialize import (
    groups_json,
    run_json,
    runs_json,
    scheduler_json,
    schedules_json,
    scripts_json,
)
from ..store import GroupRun, Run, Store

log = logging.getLogger("script_monitor.web")

CONFIG_CHECK_EVERY = 1.0  # seconds between cheap stat() checks of the config files
REAP_EVERY = 1.0  # seconds between looks for runs whose process died (-> lost)
MAX_LIMIT = 10_000  # most runs one history request returns


class NotFound(Exception):
    """An unknown name or id, or a log that is not there: 404."""


class BadRequest(Exception):
    """A bad parameter: 400."""


class Forbidden(Exception):
    """The request's token may not do this: 403."""


class Conflict(Exception):
    """The target is already running and its overlap policy refuses another run: 409."""

    def __init__(self, message: str, run_id: int | None):
        super().__init__(message)
        self.run_id = run_id


class Busy(Exception):
    """Too many runs started from the web are alive: 429."""

    retry_after = 5


class Payload:
    """A response body computed once and served many times (gzip made when first asked)."""

    def __init__(self, body: bytes, media_type: str):
        self.body = body
        self.media_type = media_type
        self._gz: bytes | None = None
        self.etag = f'"{hash(body) & 0xFFFFFFFFFFFF:x}"'

    @property
    def gz(self) -> bytes:
        if self._gz is None:
            import gzip

            self._gz = gzip.compress(self.body, compresslevel=5)
        return self._gz


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class Service:
    """One config directory as the web server sees it."""

    def __init__(self, config: Config, command: list[str]):
        from ..config import fingerprint

        self._fingerprint_of = fingerprint
        self.root = config.root
        self.config = config
        self.config_gen = 0
        self.config_error: str | None = None
        self._fingerprint = fingerprint(config)
        self._config_checked = time.monotonic()
        self.store = Store(config.state_dir, config.store_url, config.settings.store.retry_for)
        self._reaped = 0.0
        self._lock = threading.Lock()
        self._cache: dict[Any, tuple[Any, float, Any]] = {}
        self._builders: dict[Any, threading.Lock] = {}
        self.command = command  # how to run script-monitor again (for runs started here)
        self.children: list[tuple[str, str, subprocess.Popen]] = []  # (kind, name, process)
        self._launching = threading.Lock()
        self._masker: tuple[int, Any] | None = None
        self._last: Any = None  # lastruns.LastRuns, made on first use

    def last_runs(self) -> dict[str, Run]:
        """The newest run of every script (as ``store.reads.last_runs``), kept up to date
        from the runs recorded since rather than read afresh (``lastruns``)."""
        if self._last is None:
            from .lastruns import LastRuns

            self._last = LastRuns(self.store)
        return self._last.get()

    # ------------------------------------------------------------ freshness

    def refresh(self) -> tuple:
        """Reload a changed configuration, mark dead runs lost; return the data's version.

        The version changes whenever anyone commits to the history or the configuration
        is reloaded, so anything computed from both can be cached under it.
        """
        now = time.monotonic()
        with self._lock:
            if now - self._config_checked >= CONFIG_CHECK_EVERY:
                self._config_checked = now
                self._maybe_reload()
            if now - self._reaped >= REAP_EVERY:
                self._reaped = now
                self.store.runs.reap_lost()
        return (*self.store.reads.data_version(), self.config_gen)

    def _maybe_reload(self) -> None:
        current = self._fingerprint_of(self.config)
        if current == self._fingerprint:
            return
        self._fingerprint = current
        try:
            config = load_config(self.root)
        except ConfigError as e:
            self.config_error = str(e.problems[0]) if e.problems else str(e)
            log.warning("configuration is invalid; keeping the last good one: %s", e)
            return
        if config.state_dir != self.config.state_dir:
            log.warning("paths.state_dir changed: restart the server to follow it")
        self.config = config
        self.config_error = None
        self.config_gen += 1
        self._fingerprint = self._fingerprint_of(config)

    def cached(
        self, key: Any, build: Callable[[], Any], ttl: float | None = None, extra: Any = None
    ) -> Any:
        """``build()``, or its last result while the data's version (and ``extra``) is the
        same and it is younger than ``ttl`` seconds.  Concurrent misses build it once."""
        version = (self.refresh(), extra)
        hit = self._cache.get(key)
        if hit and hit[0] == version and (ttl is None or time.monotonic() - hit[1] < ttl):
            return hit[2]
        with self._lock:
            lock = self._builders.setdefault(key, threading.Lock())
        with lock:
            hit = self._cache.get(key)
            if hit and hit[0] == version and (ttl is None or time.monotonic() - hit[1] < ttl):
                return hit[2]
            value = build()
            with self._lock:
                if len(self._cache) > 256:  # e.g. many different ?limit= values
                    self._cache.clear()
                self._cache[key] = (version, time.monotonic(), value)
            return value

    # ------------------------------------------------------------ the API's objects

    def scripts(self) -> Payload:
        """``list --json`` (with checks, whose state moves with the clock: cached 1 s)."""

        def build() -> Payload:
            last = self.last_runs()
            checks = []
            if self.config.checks:
                from ..check_time import views

                checks = views(self.config, self.store.checks.states(), last, time.time())
            return Payload(dumps(self.redact(scripts_json(self.config, last, checks))), "json")

        return self.cached("api:scripts", build, ttl=1.0 if self.config.checks else None)

    def groups(self) -> Payload:
        """``list-groups --json``."""
        return self.cached(
            "api:groups",
            lambda: Payload(
                dumps(self.redact(groups_json(self.config, self.store.reads.last_group_runs()))),
                "json",
            ),
        )

    def schedules(self) -> dict[str, Any]:
        """``list-schedules --json`` (not cached: next runs and the heartbeat move)."""
        from ..heartbeat import scheduler_status
        from ..schedule_time import schedule_rows

        self.refresh()
        config = self.config
        rows = schedule_rows(config, self.store.reads.last_group_runs(), datetime.now(UTC))
        from ..leadership import with_members

        ttl = config.settings.scheduling.lease_ttl
        status = with_members(scheduler_status(config.state_dir), self.store, ttl)
        return schedules_json(rows, status, config.settings.scheduling.enabled)

    def history(self, name: str, limit: int) -> list[dict[str, Any]]:
        """``history NAME --json --limit N`` (of a script, or of a passive check)."""
        self.refresh()
        if name not in self.config.checks:
            self.script(name)
        return runs_json(self.store.runs.history(name, limit))

    def run(self, run_id: int) -> Run:
        """One run's row (404 when unknown)."""
        self.refresh()
        row = self.store.runs.run(run_id)
        if row is None:
            raise NotFound(f"no run {run_id}")
        return row

    def run_json(self, run_id: int) -> dict[str, Any]:
        return run_json(self.run(run_id))

    def health(self, details: bool) -> dict[str, Any]:
        """ok or error and the version; with ``details`` (a signed-in request, or no
        token configured) also the scheduler, its heartbeat and the configuration error."""
        from .. import __version__
        from ..heartbeat import read_heartbeat, scheduler_status

        try:
            self.refresh()
            ok = self.config_error is None
        except Exception:  # the history cannot be read: not ok, and no details to anyone
            ok = False
            details = False
        out: dict[str, Any] = {"status": "ok" if ok else "error", "version": __version__}
        if not details:
            return out
        state_dir = self.config.state_dir
        beat = read_heartbeat(state_dir) or {}
        updated = beat.get("updated")
        from ..leadership import with_members

        ttl = self.config.settings.scheduling.lease_ttl
        out.update(
            scheduler=scheduler_json(with_members(scheduler_status(state_dir), self.store, ttl)),
            heartbeat=updated if isinstance(updated, int | float) else None,
            config_error=self.config_error,
        )
        return out

    # ------------------------------------------------------------ secrets

    def masker(self) -> Any:
        """The configuration's secrets (as ``redact.config_masker``), per configuration."""
        cached = self._masker
        if cached is None or cached[0] != self.config_gen:
            from ..redact import config_masker

            cached = self._masker = (self.config_gen, config_masker(self.config))
        return cached[1]

    def redact(self, value: Any) -> Any:
        """``value`` with every secret of the configuration replaced by ``***``."""
        from ..redact import redact

        return redact(value, self.masker())

    def script(self, name: str) -> Script:
        try:
            return self.config.scripts[name]
        except KeyError:
            raise NotFound(f"unknown script '{name}'") from None

    def group(self, name: str) -> Group:
        try:
            return self.config.groups[name]
        except KeyError:
            raise NotFound(f"unknown group '{name}'") from None

    # ------------------------------------------------------------ logs

    def log_source(self, run: Run) -> Any:
        """The log of a run, opened: this host's file, or a remote run's chunks in the
        history (``logsource``); NotFound when it was never written, rotated, cleared or
        is missing.  The caller closes it."""
        from ..logsource import LogUnavailable, open_log

        try:
            return open_log(self.config.log_dir, self.store, run)
        except LogUnavailable as e:
            raise NotFound(str(e)) from None

    # ------------------------------------------------------------ starting runs

    def launch(self, kind: str, name: str) -> None:
        """Start ``run NAME`` or ``run-group NAME`` as its own process, recorded with
        trigger ``api``: in a new session, so that it outlives this server.

        Refused (Conflict) while the target is running, unless it is a group whose
        overlap policy is ``allow``; refused (Busy) while ``web.max_launches`` runs
        started here are alive."""
        self.refresh()
        if kind == "script":
            self.script(name)
            policy = "skip"  # a script has no overlap policy: one run at a time
            argv = [*self.command, "--config-dir", str(self.root), "run", "--quiet"]
        else:
            policy = self.group(name).overlap
            argv = [*self.command, "--config-dir", str(self.root), "run-group"]
        argv += ["--trigger", "api", "--", name]
        env = {k: v for k, v in os.environ.items() if k != "SCRIPT_MONITOR_WEB_TOKEN"}
        with self._launching:
            self.reap_children()
            if policy != "allow":
                self._refuse_overlap(kind, name)
            if len(self.children) >= self.config.settings.web.max_launches:
                raise Busy(
                    f"{len(self.children)} runs started from the web are still going "
                    f"(web.max_launches); try again when one has ended"
                )
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.root,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
            with self._lock:
                self.children.append((kind, name, child))
        log.info("started %s %s (pid %d)", kind, name, child.pid)

    def _refuse_overlap(self, kind: str, name: str) -> None:
        """Conflict when ``name`` is running: a run in the history, or a process started
        here that has not recorded its run yet."""
        from ..states import RunStatus

        last: Run | GroupRun | None
        if kind == "script":
            last = self.store.runs.latest_run(name, with_log=True)
        else:
            newest = self.store.runs.group_history(name, 1)
            last = newest[0] if newest else None
        if last is not None and last.status == RunStatus.RUNNING:
            raise Conflict(f"{kind} '{name}' is already running (run {last.id})", last.id)
        for k, n, child in self.children:
            if (k, n) == (kind, name):
                raise Conflict(
                    f"{kind} '{name}' is already running (started from here, pid {child.pid})",
                    None,
                )

    def reap_children(self) -> None:
        """Collect the exit status of runs started here that have ended (no zombies)."""
        with self._lock:
            self.children = [c for c in self.children if c[2].poll() is None]
