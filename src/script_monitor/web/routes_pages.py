"""The dashboard's HTML pages (docs/WEB.md): the overview, a script, a group, a run with
its live log, *Run now* from a form, the audit trail, and the static files.  The
group-run page is ``grouprun.py``, the status page ``statuspage.py``."""

from __future__ import annotations

import os
from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..store.audit import MAX_ROWS as MAX_AUDIT_ROWS
from . import logstream, runnow
from .context import Web
from .pages import HISTORY, MAX_HISTORY, OverviewView
from .respond import Gzipped, call, code_of, esc, headers_of, number, sse
from .service import Busy, Conflict, Forbidden

STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
Static = dict[str, tuple[bytes, str, str]]  # file name -> (body, media type, ETag)


def routes(web: Web, static: Static) -> list[Route]:
    """The pages' routes, serving ``static`` (``static_files()``) under /static/."""
    service, pages = web.service, web.pages
    overview_gz = Gzipped()  # the default overview's long prefix, compressed once

    async def overview(request: Request) -> Response:
        view = OverviewView.of(request.query_params)
        if view == OverviewView():
            return await web.page(request, await call(pages.overview, view), gz=overview_gz)
        return await web.page(request, await call(pages.overview, view))

    async def script_page(request: Request) -> Response:
        name = request.path_params["name"]
        limit = request.query_params.get("limit")
        n = HISTORY if limit is None else number(limit, "limit", 1, MAX_HISTORY)
        html = pages.head(name) + await call(pages.script, name, n)
        return await web.page(request, web.flashed(request, html, "script", name))

    async def group_page(request: Request) -> Response:
        name = request.path_params["name"]
        html = pages.head(name) + await call(pages.group, name)
        return await web.page(request, web.flashed(request, html, "group", name))

    async def run_page(request: Request) -> Response:
        run_id = number(request.path_params["id"], "the run id", 1)
        title, main = await call(pages.run, run_id)
        script = title.rsplit(" #", 1)[0]
        html = web.flashed(request, pages.head(title) + main, "script", script, run_id)
        return await web.page(request, html)

    async def run_events(request: Request) -> Response:
        run_id = number(request.path_params["id"], "the run id", 1)
        offset = request.headers.get("last-event-id") or request.query_params.get("offset")
        start = 0 if offset is None else number(offset, "the offset")
        run, source = await call(web.run_and_log, run_id)
        status = web.status_of(run_id)
        stream = logstream.follow(
            web.watches, run, source, start, status, html=True, end_html=pages.badge
        )
        return sse(stream)

    async def launch(request: Request) -> Response:
        await web.csrf_checked(request, api=False)
        name = request.path_params["name"]
        kind = "script" if request.url.path.startswith("/scripts/") else "group"
        try:
            before = await call(runnow.newest, service, kind, name)
            await web.launched(request, kind, name)
        except (Conflict, Busy, Forbidden) as e:
            if request.headers.get("hx-request"):
                raise
            # a form without JavaScript: back to the page, with the reason on it
            session, _new = web.session_for(request)
            getter = pages.script if kind == "script" else pages.group
            args = (name, HISTORY) if kind == "script" else (name,)
            main = await call(getter, *args)
            flash = f'<div class="notes"><p class="flash bad">{esc(str(e))}</p></div>'
            tail = pages.tail(session["csrf"], web.authed(request), web.who(request))
            html = pages.head(name) + flash + main + tail
            return HTMLResponse(html, code_of(e), headers_of(e) | {"Cache-Control": "no-store"})
        # to the new run once it is recorded (runnow), with a message saying it started
        run_id = await call(runnow.wait_for_new, service, kind, name, before)
        url = runnow.target(kind, name, run_id)
        if request.headers.get("hx-request"):
            message = runnow.started_message(kind, name, run_id or None)
            return HTMLResponse(message, headers={"HX-Redirect": url, "HX-Trigger": "sm-started"})
        return RedirectResponse(url, 303)

    async def audit_page(request: Request) -> Response:
        web.require(request, "admin")
        limit = request.query_params.get("limit")
        n = 200 if limit is None else number(limit, "limit", 1, MAX_AUDIT_ROWS)
        found = await call(service.store.audit.rows, None, n)
        return await web.page(request, pages.head("Audit") + pages.audit(found[::-1]))

    async def static_file(request: Request) -> Response:
        found = static.get(request.path_params["file"])
        if found is None:
            raise HTTPException(404, "no such file")
        body, media, etag = found
        headers = {"Cache-Control": "public, max-age=86400", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media, headers=headers)

    return [
        Route("/", overview),
        Route("/scripts/{name}", script_page),
        Route("/scripts/{name}/run", launch, methods=["POST"]),
        Route("/groups/{name}", group_page),
        Route("/groups/{name}/run", launch, methods=["POST"]),
        Route("/runs/{id}", run_page),
        Route("/runs/{id}/events", run_events),
        Route("/audit", audit_page),
        Route("/static/{file}", static_file),
    ]


def static_files() -> Static:
    """The package's static files, read once: no URL path ever reaches the file system."""
    import hashlib

    out = {}
    folder = resources.files("script_monitor.web") / "static"
    for entry in folder.iterdir():
        suffix = os.path.splitext(entry.name)[1]
        if suffix in STATIC_TYPES:
            body = entry.read_bytes()
            etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
            out[entry.name] = (body, STATIC_TYPES[suffix], etag)
    return out
