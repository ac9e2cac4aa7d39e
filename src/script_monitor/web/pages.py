"""The dashboard's HTML: Jinja2 templates with autoescaping, over the Service's data.

Pages are rendered in two parts: the page's own content (``main``), which is the same
for every visitor and is cached while the history does not change, and the frame
around it (the session's CSRF token, the sign-out button), rendered per request.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader
from msgspec.structs import asdict

from .. import __version__
from ..logs import command_text
from ..render import duration_text
from ..states import FAILURES, RunStatus
from ..store import AuditRow, Run
from ..tokens import Identity
from . import logstream
from .security import SESSION_DAYS
from .service import NotFound, Service

RECENT = 10  # runs in a strip on the overview
HISTORY = 50  # runs on a script's page (?limit= up to MAX_HISTORY)
MAX_HISTORY = 2000
PAGE_TTL = 5.0  # seconds a cached page may show "next run" times that moved on


def environment(service: Service) -> Environment:
    env = Environment(
        loader=PackageLoader("script_monitor.web", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def when(ts: float | datetime | None) -> str:
        if ts is None:
            return "-"
        fmt = service.config.settings.display.date_format
        moment = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
        return moment.astimezone().strftime(fmt)

    def isotime(ts: float | None) -> str:
        if ts is None:
            return ""
        return datetime.fromtimestamp(ts, UTC).astimezone().isoformat(timespec="seconds")

    def size(n: int) -> str:
        value = float(n)
        for unit in ("bytes", "KiB", "MiB"):
            if value < 1024:
                return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
            value /= 1024
        return f"{value:.1f} GiB"

    env.filters.update(when=when, isotime=isotime, dur=duration_text, size=size)
    return env


class Pages:
    """Renders each page's content; ``frame`` wraps it for one request."""

    def __init__(self, service: Service):
        self.service = service
        self.env = environment(service)
        self.asset_version = __version__

    def head(self, title: str, trusted: bool = True) -> str:
        """The page up to its content: the same for every visitor (cached with it).
        The configuration's error (it quotes paths and values) only when ``trusted``."""
        return self.env.get_template("head.html").render(
            title=title,
            config_error=self.service.config_error if trusted else None,
            asset_version=self.asset_version,
        )

    def tail(self, csrf: str, authed: bool, identity: Identity | None = None) -> str:
        """The page after its content: the visitor's CSRF token and sign-out button;
        the config directory and the audit link only for those who may see them."""
        return self.env.get_template("tail.html").render(
            csrf=csrf,
            authed=authed,
            version=__version__,
            root=str(self.service.root) if identity else "",
            who=identity.name if authed and identity else "",
            admin=identity is not None and identity.may("admin"),
        )

    def frame(
        self, title: str, main: str, csrf: str, authed: bool, identity: Identity | None = None
    ) -> str:
        return self.head(title, identity is not None) + main + self.tail(csrf, authed, identity)

    # ------------------------------------------------------------ overview

    def overview(self) -> str:
        """The overview up to its tail (cached while the history does not change)."""
        return self.service.cached(
            "page:overview", lambda: self.head("Overview") + self._overview(), ttl=PAGE_TTL
        )

    def _overview(self) -> str:
        from ..heartbeat import scheduler_status
        from ..schedule_time import schedule_rows

        svc = self.service
        config = svc.config
        store = svc.store
        last = store.reads.last_runs()
        last_groups = store.reads.last_group_runs()
        enabled = config.settings.scheduling.enabled
        nexts = {}
        if enabled:
            nexts = {
                r["name"]: r["next"]
                for r in schedule_rows(config, last_groups, datetime.now(UTC))
                if r["next"] is not None
            }
        script_next: dict[str, datetime] = {}
        for g in config.groups.values():
            if g.name in nexts:
                for s in g.scripts:
                    if s not in script_next or nexts[g.name] < script_next[s]:
                        script_next[s] = nexts[g.name]
        recent = store.reads.latest_runs_by_script(list(config.scripts), RECENT)
        recent_groups = store.reads.latest_group_runs(list(config.groups), RECENT)
        scripts: list[dict[str, Any]] = [
            {
                "name": s.name,
                "description": svc.redact(s.description),
                "last": last.get(s.name),
                "next": script_next.get(s.name),
                "recent": recent.get(s.name, [])[::-1],
            }
            for s in config.scripts.values()
        ]
        groups: list[dict[str, Any]] = [
            {
                "name": g.name,
                "description": svc.redact(g.description),
                "mode": g.execution,
                "schedule": g.schedule,
                "last": last_groups.get(g.name),
                "next": nexts.get(g.name),
                "recent": [
                    {**asdict(r), "duration": r.ended - r.started if r.ended else None}
                    for r in recent_groups.get(g.name, [])[::-1]
                ],
            }
            for g in config.groups.values()
        ]
        from ..leadership import with_members

        ttl = config.settings.scheduling.lease_ttl
        status = with_members(scheduler_status(config.state_dir), self.service.store, ttl)
        return self.env.get_template("overview.html").render(
            scripts=scripts,
            groups=groups,
            failing=sum(1 for s in scripts if s["last"] and s["last"].status in FAILURES),
            running=sum(
                1 for s in scripts for r in s["recent"][-1:] if r.status is RunStatus.RUNNING
            ),
            scheduler=_scheduler_text(status, enabled),
        )

    # ------------------------------------------------------------ a script

    def script(self, name: str, limit: int) -> str:
        svc = self.service
        svc.refresh()
        script = svc.script(name)
        config = svc.config
        runs = svc.store.runs.history(name, limit)
        member_of = [g.name for g in config.groups.values() if name in g.scripts]
        timeout = config.timeout_for(script)
        return self.env.get_template("script.html").render(
            script=script,
            description=svc.redact(script.description),
            command=svc.redact(command_text(script.command)),
            timeout=duration_text(timeout) if timeout else "none",
            member_of=member_of,
            next=self._next_of(member_of),
            runs=runs,
            limit=limit,
            chart=_chart(runs[:HISTORY][::-1]),
        )

    def _next_of(self, groups: list[str]) -> datetime | None:
        from ..schedule_time import schedule_rows

        config = self.service.config
        if not config.settings.scheduling.enabled:
            return None
        times = [
            r["next"]
            for r in schedule_rows(config, {}, datetime.now(UTC))
            if r["name"] in groups and r["next"] is not None
        ]
        return min(times, default=None)

    # ------------------------------------------------------------ a group

    def group(self, name: str) -> str:
        svc = self.service
        svc.refresh()
        group = svc.group(name)
        config = svc.config
        last = svc.store.reads.last_runs()
        runs = [
            {**asdict(g), "members": svc.store.runs.runs_of_group_run(g.id)}
            for g in svc.store.runs.group_history(name, 20)
        ]
        return self.env.get_template("group.html").render(
            group=group,
            description=svc.redact(group.description),
            workers=config.workers_for(group),
            zone=config.zone_of(group),
            next=self._next_of([name]) if group.schedule else None,
            members=[{"name": s, "last": last.get(s)} for s in group.scripts],
            runs=runs,
        )

    # ------------------------------------------------------------ a run

    def run(self, run_id: int) -> tuple[str, str]:
        """(title, content) of a run's page: its facts and the tail of its log."""
        svc = self.service
        run = svc.run(run_id)
        log = None
        missing = ""
        try:
            source = svc.log_source(run)
            try:
                log = logstream.tail(source)
            finally:
                source.close()
        except NotFound as e:
            missing = str(e)
        except OSError as e:
            missing = f"the log cannot be read: {e.strerror}"
        html = self.env.get_template("run.html").render(
            run=run,
            log=log,
            log_missing=missing,
            live=log is not None and run.status is RunStatus.RUNNING,
        )
        return f"{run.script} #{run_id}", html

    def badge(self, status: str) -> str:
        module: Any = self.env.get_template("_macros.html").module
        return str(module.badge(status))

    # ------------------------------------------------------------ other pages

    def login(self, csrf: str, next_path: str, failed: bool) -> str:
        main = self.env.get_template("login.html").render(
            csrf=csrf, next=next_path, failed=failed, days=SESSION_DAYS
        )
        return self.frame("Sign in", main, csrf, authed=False)

    def error(
        self, code: int, message: str, csrf: str, authed: bool, identity: Identity | None = None
    ) -> str:
        main = self.env.get_template("error.html").render(code=code, message=message)
        return self.frame(str(code), main, csrf, authed, identity)

    def audit(self, rows: list[AuditRow]) -> str:
        """The audit trail, newest first (for admins)."""
        return self.env.get_template("audit.html").render(rows=rows)


def _scheduler_text(status: dict[str, Any], enabled: bool) -> str:
    if not status["running"]:
        text = "not running"
    elif status["stale"]:
        text = "running, but no recent heartbeat"
    else:
        text = "running"
    if status.get("shared") and status.get("schedulers"):  # several hosts: who leads
        text = (
            ("running here" if status["running"] else "not running here")
            + "; "
            + ", ".join(f"{m.role} {m.host} (pid {m.pid})" for m in status["schedulers"])
        )
    return text + ("" if enabled else " (scheduling paused)")


def _chart(runs: list[Run]) -> dict[str, Any]:
    """Bars for the durations of finished runs, oldest first, in a 600 x 160 box."""
    done = [
        (r, r.duration)
        for r in runs
        if r.duration is not None and r.status is not RunStatus.SKIPPED
    ]
    width, height, base = 600, 160, 150
    chart: dict[str, Any] = {"width": width, "height": height, "base": base, "bars": []}
    chart["count"] = len(done)
    if not done:
        return chart
    top = max(d for _, d in done) or 1.0
    step = width / max(len(done), 40)
    for i, (r, duration) in enumerate(done):
        h = max(2.0, (base - 4) * duration / top)
        chart["bars"].append(
            {
                "id": r.id,
                "status": r.status,
                "duration": duration,
                "x": round(i * step + step * 0.1, 2),
                "w": round(step * 0.8, 2),
                "y": round(base - h, 2),
                "h": round(h, 2),
            }
        )
    chart["top"] = top
    chart["median"] = statistics.median(d for _, d in done)
    chart["ok"] = sum(1 for r, _ in done if r.status is RunStatus.SUCCESS)
    return chart
