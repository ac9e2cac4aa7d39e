"""The ASGI application: the dashboard, the JSON API and /metrics (docs/WEB.md).

``create_app`` builds the shared ``Web`` context once and gathers the route groups,
each a module with one ``routes()`` function:

=================  ==========================================================
``routes_pages``   the dashboard's pages, *Run now* from a form, static files
``routes_auth``    ``/login`` and ``/logout``
``routes_api``     ``/api/v1/...`` and ``/metrics``
``grouprun``       a group run's page and JSON
``statuspage``     ``/status``
``ping``           a passive check's ``/ping/...`` and ``/api/v1/checks``
=================  ==========================================================

Handlers are thin: parse and check the request, call the Service (in a worker thread,
since the database may block), shape the response (``respond``).  ``Guard``
(``guard``) checks every request's Host, Origin and credentials before any handler
runs; every error becomes an answer in ``Web.on_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from ..errors import StoreError
from . import grouprun, ping, routes_api, routes_auth, routes_pages, statuspage
from .context import Web
from .guard import Guard
from .respond import call
from .security import Security
from .service import BadRequest, Busy, Conflict, Forbidden, NotFound, Service


def create_app(service: Service, security: Security) -> Starlette:
    """The ASGI app serving ``service`` behind ``security``'s checks."""
    web = Web(service, security)
    static = routes_pages.static_files()
    routes = [
        *routes_pages.routes(web, static),
        *routes_auth.routes(web),
        *routes_api.routes(web),
        *ping.routes(service),
        *grouprun.routes(web),
        *statuspage.routes(web),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def revoked() -> None:
            with contextlib.suppress(StoreError):  # also those signed out by another server
                security.revoked |= await call(service.store.audit.revoked)

        async def reaper() -> None:
            while True:
                await asyncio.sleep(5)
                await revoked()
                service.reap_children()

        await revoked()  # before the first request: a revoked cookie never works
        task = asyncio.get_running_loop().create_task(reaper())
        warm = asyncio.get_running_loop().create_task(_warm(web))
        try:
            yield
        finally:
            task.cancel()
            warm.cancel()
            service.reap_children()
            from ..notify import settle  # a message being sent is recorded before leaving

            await asyncio.to_thread(settle, service.config)

    handlers = {
        Exception: web.on_error,
        HTTPException: web.on_error,
        NotFound: web.on_error,
        BadRequest: web.on_error,
        Conflict: web.on_error,
        Busy: web.on_error,
        Forbidden: web.on_error,
        StoreError: web.on_error,
        404: web.on_error,
        405: web.on_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    return Guard(app, security, web.note, frozenset(static))  # type: ignore[return-value]


async def _warm(web: Web) -> None:
    """Fill the caches once at start, so the first visitor does not wait."""
    with contextlib.suppress(Exception):
        await call(web.metrics.payload)
        await call(web.pages.overview)
