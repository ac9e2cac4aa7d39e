"""Signing in and out of the dashboard (``/login``, ``/logout``): a token exchanged for
a signed session cookie, each attempt in the audit trail, failures throttled per
address (docs/SECURITY.md)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import StoreError
from ..states import AuditAction, AuditResult, Refusal
from .context import Web
from .respond import call, form_of
from .security import SESSION_DAYS

log = logging.getLogger("script_monitor.web")


def routes(web: Web) -> list[Route]:
    """The sign-in form, signing in and signing out."""
    security, pages = web.security, web.pages

    async def login_form(request: Request) -> Response:
        if not security.token:
            return RedirectResponse("/", 303)
        session, new = web.session_for(request)
        next_path = local(request.query_params.get("next"))
        response = HTMLResponse(
            pages.login(session["csrf"], next_path, failed=False),
            headers={"Cache-Control": "no-store"},
        )
        return web.with_cookie(response, session, request) if new else response

    async def login(request: Request) -> Response:
        await web.csrf_checked(request, api=False)
        form = await form_of(request)
        token, next_path = form.get("token"), local(form.get("next"))
        if not security.token:
            return RedirectResponse("/", 303)
        identity = security.identity_of_token(token) if isinstance(token, str) else None
        client = request.state.client
        if identity is not None and isinstance(token, str):
            await web.note(client, identity.name, AuditAction.LOGIN, "/login", AuditResult.ACCEPTED)
            response = RedirectResponse(next_path, 303)
            return web.with_cookie(response, security.new_session(token), request)
        refused = AuditResult.REFUSED
        await web.note(client, "-", AuditAction.LOGIN, "/login", refused, Refusal.BAD_TOKEN)
        if security.throttle.fail(client):
            log.warning("too many failed sign-ins from %s: refused for a minute", client)
            await web.note(client, "-", AuditAction.LOGIN, "/login", refused, Refusal.THROTTLED)
        session = request.state.session
        return HTMLResponse(pages.login(session["csrf"], next_path, failed=True), 401)

    async def logout(request: Request) -> Response:
        await web.csrf_checked(request, api=False)
        session = request.state.session
        if session and isinstance(session.get("sid"), str):
            sid = session["sid"]
            security.revoked.add(sid)
            expires = float(session.get("t", 0)) + SESSION_DAYS * 86400
            try:
                await call(web.service.store.audit.revoke, sid, expires)
            except StoreError as e:
                log.warning("the signed-out session is revoked until a restart only: %s", e)
        await web.note_request(request, AuditAction.LOGOUT, "/logout", AuditResult.ACCEPTED)
        response = RedirectResponse("/login" if security.token else "/", 303)
        return web.with_cookie(response, security.new_session(), request)

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


def local(path: Any) -> str:
    """A path on this server to go to after signing in (never another site)."""
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        return "/"
    if "\\" in path or any(ord(c) < 32 for c in path):
        return "/"
    return path
