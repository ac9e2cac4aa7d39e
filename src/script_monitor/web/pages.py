"""The dashboard's HTML: Jinja2 templates with autoescaping, over the Service's data.

Pages are rendered in two parts: the page's own content (``main``), which is the same
for every visitor and is cached while the history does not change, and the frame
around it (the session's CSRF token, the sign-out button), rendered per request.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
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


FOLD = 50  # rows of a long list shown before "show all": the first FOLD failing, FOLD others
MAX_QUERY = 100  # characters of the name filter that count
SORT_FAILURES = "failures"
FAILING = "failing"  # the status filter "failed, timed out or lost"
NEVER = "never"  # the status filter "never run"
STATUS_CHOICES = [
    ("", "any status"),
    (FAILING, "failing (failed, timeout, lost)"),
    *((s.value, s.value) for s in RunStatus),
    (NEVER, "never run"),
]
_STATUS_KEYS = frozenset(k for k, _ in STATUS_CHOICES)


class OverviewView(msgspec.Struct, frozen=True):
    """What the overview shows: a name filter, a status, a group, failures first, all."""

    q: str = ""
    status: str = ""
    group: str = ""
    sort: str = ""
    all: bool = False

    @classmethod
    def of(cls, params: Any) -> OverviewView:
        """From a request's query (anything unknown is ignored, never an error)."""
        status = params.get("status", "")
        sort = params.get("sort", "")
        return cls(
            q=params.get("q", "").strip()[:MAX_QUERY],
            status=status if status in _STATUS_KEYS else "",
            group=params.get("group", "")[:MAX_QUERY],
            sort=SORT_FAILURES if sort == SORT_FAILURES else "",
            all=params.get("all", "") in ("1", "true"),
        )

    @property
    def query(self) -> str:
        """The view as a query string (for the page's own refresh and links)."""
        from urllib.parse import urlencode

        fields = {"q": self.q, "status": self.status, "group": self.group, "sort": self.sort}
        if self.all:
            fields["all"] = "1"
        return urlencode({k: v for k, v in fields.items() if v})

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.status or self.group)

    def matches(self, name: str, last: Any) -> bool:
        if self.q and self.q.lower() not in name.lower():
            return False
        if not self.status:
            return True
        if self.status == NEVER:
            return last is None
        if last is None:
            return False
        if self.status == FAILING:
            return last.status in FAILURES
        return bool(last.status == self.status)

    def fold(self, rows: list[Any], failing: Any) -> list[Any]:
        """A long list folded: its first FOLD failing rows and its first FOLD others, in
        order (so that a page of 5 000 scripts stays small); all of them with ``all``."""
        if self.all or len(rows) <= FOLD:
            return rows
        out, others, bad = [], 0, 0
        for row in rows:
            if failing(row):
                if bad < FOLD:
                    bad += 1
                    out.append(row)
            elif others < FOLD:
                others += 1
                out.append(row)
        return out


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
        self._next_cache: tuple[int, float, dict[str, datetime]] | None = None

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

    def overview(self, view: OverviewView | None = None) -> str:
        """The overview up to its tail, for a filter (cached while the history does not
        change, per filter)."""
        view = view or OverviewView()
        return self.service.cached(
            ("page:overview", view),
            lambda: self.head("Overview") + self._overview(view),
            ttl=PAGE_TTL,
        )

    def _overview(self, view: OverviewView) -> str:
        from ..heartbeat import scheduler_status

        svc = self.service
        config = svc.config
        store = svc.store
        last = svc.last_runs()
        last_groups = store.reads.last_group_runs()
        enabled = config.settings.scheduling.enabled
        nexts: dict[str, datetime] = {}
        if enabled:
            nexts = self._nexts(last_groups)
        script_next: dict[str, datetime] = {}
        for g in config.groups.values():
            if g.name in nexts:
                for s in g.scripts:
                    if s not in script_next or nexts[g.name] < script_next[s]:
                        script_next[s] = nexts[g.name]
        members = set(config.groups[view.group].scripts) if view.group in config.groups else None

        def failing(run: Any) -> bool:
            return run is not None and run.status in FAILURES

        script_rows = [
            s
            for s in config.scripts.values()
            if view.matches(s.name, last.get(s.name)) and (members is None or s.name in members)
        ]
        group_rows = [
            g
            for g in config.groups.values()
            if view.matches(g.name, last_groups.get(g.name))
            and (not view.group or g.name == view.group or view.group not in config.groups)
        ]
        if view.sort == SORT_FAILURES:
            script_rows.sort(key=lambda s: not failing(last.get(s.name)))
            group_rows.sort(key=lambda g: not failing(last_groups.get(g.name)))
        shown_scripts = view.fold(script_rows, lambda s: failing(last.get(s.name)))
        shown_groups = view.fold(group_rows, lambda g: failing(last_groups.get(g.name)))
        recent = store.reads.latest_runs_by_script([s.name for s in shown_scripts], RECENT)
        recent_groups = store.reads.latest_group_runs([g.name for g in shown_groups], RECENT)
        scripts: list[dict[str, Any]] = [
            {
                "name": s.name,
                "description": svc.redact(s.description),
                "last": last.get(s.name),
                "next": script_next.get(s.name),
                "recent": recent.get(s.name, [])[::-1],
            }
            for s in shown_scripts
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
            for g in shown_groups
        ]
        from ..leadership import with_members

        ttl = config.settings.scheduling.lease_ttl
        status = with_members(scheduler_status(config.state_dir), self.service.store, ttl)
        every = config.scripts.values()
        return self.env.get_template("overview.html").render(
            scripts=scripts,
            groups=groups,
            matched_scripts=len(script_rows),
            matched_groups=len(group_rows),
            total_scripts=len(config.scripts),
            total_groups=len(config.groups),
            failing=sum(1 for s in every if failing(last.get(s.name))),
            running=sum(
                1 for s in every if (r := last.get(s.name)) and r.status is RunStatus.RUNNING
            ),
            scheduler=_scheduler_text(status, enabled),
            view=view,
            statuses=STATUS_CHOICES,
            group_names=list(config.groups),
            checks=_checks(svc),
        )

    def _nexts(self, last_groups: dict[str, Any]) -> dict[str, datetime]:
        """group -> its next run: computed at most every PAGE_TTL seconds per
        configuration, not on every change of the history (250 schedules take ~0.1 s)."""
        from ..schedule_time import schedule_rows

        now = time.monotonic()
        key = self.service.config_gen
        hit = self._next_cache
        if hit is not None and hit[0] == key and now - hit[1] < PAGE_TTL:
            return hit[2]
        nexts = {
            r["name"]: r["next"]
            for r in schedule_rows(self.service.config, last_groups, datetime.now(UTC))
            if r["next"] is not None
        }
        self._next_cache = (key, now, nexts)
        return nexts

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
            chart=_chart(runs[:HISTORY][::-1], script, config.settings.display.date_format),
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
        last = svc.store.reads.last_runs(group.scripts)
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


def _chart(runs: list[Run], script: Any, fmt: str) -> dict[str, Any]:
    """The duration chart of finished runs, oldest first (``svg.duration_chart``), with
    the band of usual durations that the duration-anomaly marks use (``anomaly``)."""
    from ..anomaly import duration_band
    from .svg import Point, duration_chart

    done = [r for r in runs if r.duration is not None and r.status is not RunStatus.SKIPPED]
    settings = getattr(script, "anomaly", None)  # a script's anomaly settings, when it has them
    window = int(getattr(settings, "window", 50) or 50)
    ok = [float(r.duration or 0.0) for r in done if r.status is RunStatus.SUCCESS][-window:]
    band = duration_band(
        ok,
        slow=float(getattr(settings, "slow", 3.0)),
        fast=float(getattr(settings, "fast", 0.2)),
        min_runs=int(getattr(settings, "min_runs", 10)),
    )
    points = [
        Point(
            r.id, r.status.value, r.started, float(r.duration or 0.0), getattr(r, "anomaly", None)
        )
        for r in done
    ]
    chart: dict[str, Any] = {"count": len(done), "band": band}
    drawn: tuple[float, float | None, float | None] | None = None
    if band is not None:
        drawn = (band.median, band.low, band.high)
    elif ok:
        drawn = (statistics.median(ok), None, None)
    chart["svg"] = duration_chart(points, drawn, fmt)
    if done:
        chart["top"] = max(p.duration for p in points)
        chart["median"] = statistics.median(p.duration for p in points)
        chart["ok"] = sum(1 for r in done if r.status is RunStatus.SUCCESS)
    return chart


def _checks(svc: Service) -> list[dict[str, Any]]:
    """The overview's passive checks (``_checks.html``)."""
    from .ping import views

    return [
        {
            "name": v.check.name,
            "description": svc.redact(v.check.description),
            "every": v.check.schedule or f"every {v.check.period:g}s",
            "status": v.status.value,
            "last_ping": v.state.last_ping if v.state else None,
            "next_due": v.next_due,
            "last": v.last_run,
        }
        for v in views(svc)
    ]
