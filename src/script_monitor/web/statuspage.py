"""The status page (``/status``): the facts of ``status`` (``statusreport.gather``) and
beside them the watchdog's findings, the notification outbox and recent output alerts,
each a list with its own filter (``?failures=TEXT`` and so on: a GET form without
JavaScript, narrowed as one types with it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..statusreport import extras, gather
from .pages import PAGE_TTL
from .respond import call
from .service import Service

if TYPE_CHECKING:
    from .context import Web

LISTS = ("problems", "running", "failures", "next", "watchdog", "outbox", "alerts")
MAX_FILTER = 200  # characters of a filter that count


def _keep(items: list[Any], text: str, words: Callable[[Any], str]) -> list[Any]:
    needle = text.strip().lower()[:MAX_FILTER]
    if not needle:
        return items
    return [i for i in items if needle in words(i).lower()]


def content(service: Service, pages: Any, filters: dict[str, str]) -> str:
    """The page up to its tail, for the given filters: cached while the history does not
    change, for at most PAGE_TTL seconds (the heartbeat's age and next runs move on)."""
    key = ("page:status", tuple(sorted((k, v) for k, v in filters.items() if v)))
    return service.cached(key, lambda: _build(service, pages, filters), ttl=PAGE_TTL)


def _build(service: Service, pages: Any, filters: dict[str, str]) -> str:
    config, store = service.config, service.store
    now = time.time()
    report = gather(config, store, now)
    more = extras(store)
    box = more["outbox"]
    f = filters.get
    lists = {
        "problems": _keep(report["problems"], f("problems", ""), str),
        "running": _keep(
            report["running"], f("running", ""), lambda r: f"{r.script} {r.group_name or ''}"
        ),
        "failures": _keep(
            report["failures"],
            f("failures", ""),
            lambda r: f"{r.script} {r.status} {r.group_name or ''} {r.detail or ''}",
        ),
        "next": _keep(report["next_runs"], f("next", ""), lambda r: f"{r['name']} {r['schedule']}"),
        "watchdog": _keep(
            more["watchdog"], f("watchdog", ""), lambda e: f"{e.kind} {e.subject} {e.detail or ''}"
        ),
        "outbox": _keep(
            box["undelivered"],
            f("outbox", ""),
            lambda m: f"{m.channel} {m.state} {m.event} {m.unit} {m.title} {m.last_error or ''}",
        ),
        "alerts": _keep(
            more["alerts"],
            f("alerts", ""),
            lambda a: f"{a.script} {a.severity} {a.pattern} {a.line}",
        ),
    }
    html = pages.env.get_template("status.html").render(
        report=report,
        lists=lists,
        filters={k: filters.get(k, "") for k in LISTS},
        counts=box["counts"],
        last_error=box["last_error"],
        now=now,
        scheduler=_scheduler_text(report),
    )
    return pages.head("Status") + service.redact(html)


def _scheduler_text(report: dict[str, Any]) -> str:
    s = report["scheduler"]
    if s["running"]:
        age = s["heartbeat_age"]
        beat = f"heartbeat {age:.0f}s ago" if age is not None else "no heartbeat yet"
        text = f"running (pid {s['pid']}), {beat}" if s["pid"] else f"running, {beat}"
        if s["stale"]:
            text += ": stale, it may be hung"
    elif not report["scheduled"]:
        text = "not running (no group has a schedule)"
    elif not report["ran_before"]:
        text = "not running (never started here; exported timers or cron may run the groups)"
    else:
        text = "not running"
    if not report["enabled"]:
        text += "; scheduling is paused (scheduling.enabled: false)"
    return text


def routes(web: Web) -> list[Route]:
    """The status page's route."""

    async def status_page(request: Request) -> Response:
        filters = {k: request.query_params.get(k, "") for k in LISTS}
        return await web.page(request, await call(content, web.service, web.pages, filters))

    return [Route("/status", status_page)]
