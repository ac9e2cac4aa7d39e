"""The JSON API under ``/api/v1`` and Prometheus' ``/metrics`` (docs/WEB.md): each
answer from a ``Service`` method, in the shapes of ``serialize.py`` and as
``openapi.py`` describes them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..serialize import audit_json
from ..store.audit import MAX_ROWS as MAX_AUDIT_ROWS
from . import logstream
from .context import Web
from .openapi import document
from .respond import call, flag, json_answer, log_file, number, payload_answer, sse
from .service import MAX_LIMIT, dumps


def routes(web: Web) -> list[Route]:
    """The API's routes and /metrics."""
    service = web.service
    openapi = dumps(document())

    async def api_scripts(request: Request) -> Response:
        return payload_answer(request, await call(service.scripts))

    async def api_groups(request: Request) -> Response:
        return payload_answer(request, await call(service.groups))

    async def api_schedules(request: Request) -> Response:
        return json_answer(await call(service.schedules))

    async def api_history(request: Request) -> Response:
        limit = request.query_params.get("limit")
        n = 20 if limit is None else number(limit, "limit", 1, MAX_LIMIT)
        return json_answer(await call(service.history, request.path_params["name"], n))

    async def api_run(request: Request) -> Response:
        run_id = number(request.path_params["id"], "the run id", 1)
        return json_answer(await call(service.run_json, run_id))

    async def api_log(request: Request) -> Response:
        run_id = number(request.path_params["id"], "the run id", 1)
        download = flag(request.query_params.get("download"), "download")
        offset = request.headers.get("last-event-id") or request.query_params.get("offset")
        start = 0 if offset is None else number(offset, "the offset")
        run, source = await call(web.run_and_log, run_id)
        if "text/event-stream" in request.headers.get("accept", ""):
            return sse(logstream.follow(web.watches, run, source, start, web.status_of(run_id)))
        name = f"{run.script}-{run_id}.log"
        return await log_file(source, download, name)

    async def api_launch(request: Request) -> Response:
        await web.csrf_checked(request, api=True)
        kind = "script" if request.url.path.startswith("/api/v1/scripts/") else "group"
        await web.launched(request, kind, request.path_params["name"])
        return json_answer({"accepted": True}, 202)

    async def api_health(request: Request) -> Response:
        return json_answer(await call(service.health, web.who(request) is not None))

    async def api_audit(request: Request) -> Response:
        web.require(request, "admin")
        limit = request.query_params.get("limit")
        n = 100 if limit is None else number(limit, "limit", 1, MAX_AUDIT_ROWS)
        since = request.query_params.get("since")
        start = None if since is None else number(since, "since")
        found = await call(service.store.audit.rows, start, n)
        return json_answer([audit_json(r) for r in found])

    async def api_openapi(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    async def prometheus(request: Request) -> Response:
        return payload_answer(request, await call(web.metrics.payload))

    return [
        Route("/metrics", prometheus),
        Route("/api/v1/scripts", api_scripts),
        Route("/api/v1/scripts/{name}/runs", api_history),
        Route("/api/v1/scripts/{name}/run", api_launch, methods=["POST"]),
        Route("/api/v1/groups", api_groups),
        Route("/api/v1/groups/{name}/run", api_launch, methods=["POST"]),
        Route("/api/v1/schedules", api_schedules),
        Route("/api/v1/runs/{id}", api_run),
        Route("/api/v1/runs/{id}/log", api_log),
        Route("/api/v1/health", api_health),
        Route("/api/v1/audit", api_audit),
        Route("/api/v1/openapi.json", api_openapi),
    ]
