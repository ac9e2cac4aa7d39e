"""A group run's page (``/group-runs/{id}``: facts, timeline, dependency graph, every
attempt) and its JSON (``GET /api/v1/group-runs/{id}``, as ``history --group --json``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..grouprun import GroupRunReport, gather
from ..serialize import group_run_detail_json
from ..states import GroupStatus, RunStatus
from . import svg
from .respond import call, number
from .service import NotFound, Service, dumps

if TYPE_CHECKING:
    from .context import Web

FOLD = 50  # rows of the attempts table shown of each kind before "show all"
LIVE_TTL = 1.0  # seconds a running group run's page may be reused (its bars grow)


def report(service: Service, group_run_id: int) -> GroupRunReport:
    service.refresh()
    found = gather(service.config, service.store, group_run_id)
    if found is None:
        raise NotFound(f"no group run {group_run_id}")
    return found


def as_json(service: Service, group_run_id: int) -> bytes:
    """The API's answer, cached as the page is."""

    def build() -> tuple[bool, bytes]:
        rep = report(service, group_run_id)
        body = dumps(service.redact(group_run_detail_json(rep)))
        return rep.run.status is GroupStatus.RUNNING, body

    running, body = service.cached(("api:group-run", group_run_id), build)
    if running:
        running, body = service.cached(("api:group-run:live", group_run_id), build, LIVE_TTL)
    return body


def drawing(rep: GroupRunReport, now: float) -> dict[str, Any]:
    """The timeline's rows and the graph's outcomes of a group run."""
    rows: dict[str, svg.Row] = {s: svg.Row(s) for s in rep.scripts}
    outcome: dict[str, str] = {}
    for r in rep.runs:
        row = rows.setdefault(r.script, svg.Row(r.script))
        outcome[r.script] = r.status.value
        if r.status is RunStatus.SKIPPED:
            row.skipped = r.detail or ""
            continue
        end = r.ended if r.status is not RunStatus.RUNNING else None
        row.bars.append(svg.Bar(r.id, r.attempt, r.status.value, r.started, end, r.detail))
    for row in rows.values():
        if row.bars:
            row.skipped = None
    running = rep.run.status is GroupStatus.RUNNING
    end_of_view = now if running or rep.run.ended is None else rep.run.ended
    return {
        "timeline": svg.timeline(list(rows.values()), rep.run.started, end_of_view),
        "graph": svg.graph(rep.scripts, rep.edges, outcome),
        "outcome": outcome,
    }


def folded(runs: list[Any]) -> list[Any]:
    """The attempts table of a big group folded: the first FOLD attempts that are not a
    plain success (failures, retries, skips) and the first FOLD others, in order."""
    if len(runs) <= 2 * FOLD:
        return runs
    out, plain, other = [], 0, 0
    for r in runs:
        if r.status is RunStatus.SUCCESS and r.attempt == 1:
            if plain < FOLD:
                plain += 1
                out.append(r)
        elif other < FOLD:
            other += 1
            out.append(r)
    return out


def content(
    service: Service, pages: Any, group_run_id: int, every: bool = False
) -> tuple[str, str]:
    """The page up to its tail: cached while the history does not change (and, while the
    group runs, for LIVE_TTL seconds, since its bars grow with the clock)."""

    def build() -> tuple[bool, str, str]:
        rep = report(service, group_run_id)
        g = rep.run
        running = g.status is GroupStatus.RUNNING
        title = f"{g.group_name} · group run #{g.id}"
        html = pages.env.get_template("group_run.html").render(
            g=g,
            rep=rep,
            runs=rep.runs if every else folded(rep.runs),
            every=every,
            running=running,
            known=g.group_name in service.config.groups,
            **drawing(rep, time.time()),
        )
        return running, g.group_name, pages.head(title) + service.redact(html)

    running, name, html = service.cached(("page:group-run", group_run_id), build)
    if running:
        running, name, html = service.cached(("page:group-run:live", group_run_id), build, LIVE_TTL)
    return name, html


def routes(web: Web) -> list[Route]:
    """The group-run page and its JSON."""
    service, pages = web.service, web.pages

    async def group_run_page(request: Request) -> Response:
        gid = number(request.path_params["id"], "the group run id", 1)
        every = request.query_params.get("attempts") == "all"
        name, html = await call(content, service, pages, gid, every)
        return await web.page(request, web.flashed(request, html, "group", name, gid))

    async def api_group_run(request: Request) -> Response:
        gid = number(request.path_params["id"], "the group run id", 1)
        body = await call(as_json, service, gid)
        return Response(body, media_type="application/json")

    return [
        Route("/group-runs/{id}", group_run_page),
        Route("/api/v1/group-runs/{id}", api_group_run),
    ]
