"""The ASGI application: the dashboard, the JSON API and /metrics (docs/WEB.md).

Handlers are thin: parse and check the request, call the Service (in a worker thread,
since the database may block), shape the response.  ``Guard`` checks every request's
Host, Origin and credentials before any handler runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote

from anyio import to_thread
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request, cookie_parser
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import StoreError
from ..serialize import audit_json
from ..states import AuditAction, AuditResult, Refusal
from ..store.audit import MAX_ROWS as MAX_AUDIT_ROWS
from ..tokens import Identity
from . import grouprun, logstream, ping, runnow, statuspage
from .limits import BODY_TIMEOUT
from .metrics import Metrics
from .openapi import document
from .pages import HISTORY, MAX_HISTORY, OverviewView, Pages
from .security import COOKIE, SAFE_METHODS, SESSION_DAYS, Security, Throttle, host_wellformed
from .service import (
    MAX_LIMIT,
    BadRequest,
    Busy,
    Conflict,
    Forbidden,
    NotFound,
    Payload,
    Service,
    dumps,
)

if TYPE_CHECKING:
    from ..logsource import LogSource
    from ..store import Run

T = TypeVar("T")
log = logging.getLogger("script_monitor.web")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
PUBLIC = frozenset({"/api/v1/health", "/login", "/favicon.ico"})  # exact paths
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
DIGITS = re.compile(r"[0-9]{1,19}")
MAX_INT = 2**63 - 1
MAX_FORM = 64 * 1024  # bytes; the dashboard's forms are a token and a path


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/metrics"


# ---------------------------------------------------------------- the guard


class Guard:
    """Host, Origin and credential checks for every request, and security headers."""

    def __init__(
        self,
        app: ASGIApp,
        security: Security,
        note: Callable[..., Awaitable[None]],
        static: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.sec = security
        self.note = note  # async (scope, identity name, action, target, result, reason)
        self.static = frozenset(f"/static/{name}" for name in static)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = scope["path"]
        sec = self.sec

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                present = {k.lower() for k, _ in message["headers"]}
                message["headers"] = list(message["headers"]) + [
                    h for h in SECURITY_HEADERS if h[0] not in present
                ]
            await send(message)

        send_with_headers: Send = _no_store(add_headers) if _is_api(path) else add_headers
        try:
            host = headers.get("host")
            if host is not None and not host_wellformed(host):
                raise ValueError("malformed Host header")  # 400, as any malformed header
            if not sec.host_ok(host, scope.get("scheme") == "https"):
                await _deny(scope, receive, send_with_headers, 403, "unexpected Host header")
                return
            if scope["method"] not in SAFE_METHODS and not sec.origin_ok(
                headers.get("origin"), headers.get("sec-fetch-site"), host
            ):
                await self._refused(scope, Refusal.CROSS_SITE)
                await _deny(scope, receive, send_with_headers, 403, "cross-site request refused")
                return
            raw_cookie = cookie_parser(headers.get("cookie", "")).get(COOKIE)
            session = sec.decode(raw_cookie)
            authorization = headers.get("authorization")
        except (ValueError, UnicodeError, RecursionError):
            await _deny(scope, receive, send_with_headers, 400, "malformed request headers")
            return
        client = client_of(scope)
        wait = sec.throttle.retry_after(client)
        if wait and not path.startswith("/static/"):
            await _deny(
                scope, receive, send_with_headers, 429, "too many failed sign-ins; wait", wait
            )
            return
        bearer = sec.bearer(authorization)
        if authorization and sec.token and bearer is None:
            await self._failed(scope, client, AuditAction.AUTH, path)
            await _deny(scope, receive, send_with_headers, 401, "a valid token is required")
            return
        identity = sec.identity(session, bearer)
        state = scope.setdefault("state", {})
        state.update(
            session=session,
            cookie=raw_cookie is not None,
            bearer=bearer is not None,
            identity=identity,
            client=client,
        )
        public = (
            path in PUBLIC or path in self.static or (path == "/metrics" and not sec.metrics_auth)
        )
        public = public or path.startswith(ping.PREFIX)  # a check's key is its secret
        if identity is None and not public:
            if scope["method"] not in SAFE_METHODS:
                await self._refused(scope, Refusal.NO_TOKEN)
            if _is_api(path) or scope["method"] not in SAFE_METHODS:
                await _deny(scope, receive, send_with_headers, 401, "a valid token is required")
            else:
                query = scope.get("query_string", b"").decode("latin-1")
                target = path + (f"?{query}" if query else "")
                response = RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
                await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    async def _refused(self, scope: Scope, reason: Refusal) -> None:
        """The audit row of a launch, sign-in or sign-out refused before its handler."""
        found = audited(scope["path"], scope["method"])
        if found is not None:
            action, target = found
            await self.note(client_of(scope), "-", action, target, AuditResult.REFUSED, reason)

    async def _failed(self, scope: Scope, client: str, action: AuditAction, target: str) -> None:
        """A wrong token: one audit row, and one more failure counted for its address."""
        await self.note(client, "-", action, target, AuditResult.REFUSED, Refusal.BAD_TOKEN)
        if self.sec.throttle.fail(client):
            log.warning("too many failed sign-ins from %s: refused for a minute", client)
            await self.note(client, "-", action, target, AuditResult.REFUSED, Refusal.THROTTLED)


LAUNCH_PATH = re.compile(r"/(?:api/v1/)?(scripts|groups)/([^/]+)/run")


def audited(path: str, method: str) -> tuple[AuditAction, str] | None:
    """(action, target) of a request that the audit trail records, else None."""
    if method != "POST":
        return None
    if path in ("/login", "/logout"):
        return (AuditAction.LOGIN if path == "/login" else AuditAction.LOGOUT), path
    m = LAUNCH_PATH.fullmatch(path)
    if m:
        return AuditAction.LAUNCH, f"{m.group(1)[:-1]}:{unquote(m.group(2))}"
    return None


def client_of(scope: Scope) -> str:
    """The client's address (as the trusted proxy reports it); "unix" on a unix socket."""
    client = scope.get("client")
    return str(client[0]) if client else "unix"


def _no_store(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(k.lower() == b"cache-control" for k, _ in headers):
                headers.append((b"cache-control", b"no-store"))
            message["headers"] = headers
        await send(message)

    return wrapped


async def _deny(
    scope: Scope, receive: Receive, send: Send, code: int, message: str, retry: int = 0
) -> None:
    headers = {"WWW-Authenticate": 'Bearer realm="script-monitor"'} if code == 401 else {}
    if retry:
        headers["Retry-After"] = str(retry)
    if _is_api(scope["path"]):
        response: Response = JSONResponse({"error": message}, code, headers=headers)
    else:
        response = PlainTextResponse(f"{code}: {message}\n", code, headers=headers)
    await response(scope, receive, send)


# ---------------------------------------------------------------- helpers


async def call(fn: Callable[..., T], *args: Any) -> T:
    """Run a Service method in a worker thread (the database may block)."""
    return await to_thread.run_sync(fn, *args)


def _int(text: str | None, what: str, low: int = 0, high: int = MAX_INT) -> int:
    if text is None or not DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise BadRequest(f"{what} must be a whole number from {low} to {high}")
    return int(text)


async def form_of(request: Request) -> dict[str, str]:
    """The fields of a url-encoded form (the dashboard's only kind), read once."""
    cached = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    fields: dict[str, str] = {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        body = b""
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_FORM:
                        raise BadRequest("the form is too large")
        except TimeoutError:
            raise HTTPException(408, "the request's body came too slowly") from None
        except ClientDisconnect:  # not an error of ours: one line at debug level
            log.debug("the client went away during %s %s", request.method, request.url.path)
            raise HTTPException(400, "the client went away") from None
        for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            fields.setdefault(key, value)
    request.state.form = fields
    return fields


def _bool(text: str | None, what: str) -> bool:
    if text is None:
        return False
    value = text.lower()
    if value not in ("true", "false", "1", "0"):
        raise BadRequest(f"{what} must be true or false")
    return value in ("true", "1")


def _payload(request: Request, payload: Payload) -> Response:
    media = "application/json" if payload.media_type == "json" else payload.media_type
    headers = {"ETag": payload.etag, "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == payload.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(payload.gz, media_type=media, headers=headers)
    return Response(payload.body, media_type=media, headers=headers)


def _json(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status, media_type="application/json")


# ---------------------------------------------------------------- the app


def create_app(service: Service, security: Security) -> Starlette:
    """The ASGI app serving ``service`` behind ``security``'s checks."""
    pages = Pages(service)
    metrics = Metrics(service)
    watches = logstream.Watches()
    static = _static_files()

    # ------------------------------------------------------------ sessions and CSRF

    def session_for(request: Request) -> tuple[dict[str, Any], bool]:
        """The request's session, or a new one (True: it must be set as a cookie)."""
        session = request.state.session
        return (session, False) if session else (security.new_session(), True)

    def with_cookie(response: Response, session: dict[str, Any], request: Request) -> Response:
        response.set_cookie(
            COOKIE,
            security.encode(session),
            max_age=SESSION_DAYS * 86400,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    def authed(request: Request) -> bool:
        return security.authed(request.state.session)

    def who(request: Request) -> Identity | None:
        return request.state.identity

    quiet = Throttle()  # refused rows per client address

    async def note(
        client: str, name: str, action: str, target: str, result: str, reason: str = ""
    ) -> None:
        """One row of the audit trail; a history that cannot be written is logged.

        Refusals are recorded for at most 10 a minute per client address (then none for
        a minute), so that a flood of refused requests cannot fill the disk."""
        if result == AuditResult.REFUSED and reason != Refusal.THROTTLED:  # that one: once
            if quiet.retry_after(client):
                return
            quiet.fail(client)
        try:
            await call(service.store.audit.record, name, client, action, target, result, reason)
        except StoreError as e:
            log.warning("audit trail not written (%s %s %s): %s", action, target, result, e)

    async def note_request(
        request: Request, action: str, target: str, result: str, reason: str = ""
    ) -> None:
        identity = who(request)
        name = identity.name if identity else "-"
        await note(request.state.client, name, action, target, result, reason)

    def require(request: Request, role: str) -> None:
        identity = who(request)
        if identity is None or not identity.may(role):
            raise Forbidden(
                f"this needs the {role} role; the token '{identity.name}' is {identity.role}"
                if identity
                else f"this needs the {role} role"
            )

    overview_gz = _Gzipped()

    async def page(
        request: Request, prefix: str, status: int = 200, gz: _Gzipped | None = None
    ) -> Response:
        """A page: ``prefix`` (the head and content) and the tail for the visitor."""
        session, new = session_for(request)
        tail = pages.tail(session["csrf"], authed(request), who(request))
        headers = {"Vary": "Accept-Encoding", "Cache-Control": "no-store"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = await call((gz or _Gzipped()).body, prefix, tail)
        else:
            body = (prefix + tail).encode()
        response = Response(body, status, headers, media_type="text/html")
        return with_cookie(response, session, request) if new else response

    async def csrf_checked(request: Request, api: bool) -> None:
        """403 unless a state-changing request may go on (see the module security)."""
        if request.state.bearer:
            return
        if api and not request.state.cookie:
            return  # no session cookie: not a browser's dashboard request (token checked)
        value = request.headers.get("x-csrf-token")
        if value is None and not api:
            value = (await form_of(request)).get("csrf")
        if not security.csrf_ok(request.state.session, value):
            found = audited(request.url.path, request.method)
            if found is not None:
                await note_request(request, *found, AuditResult.REFUSED, Refusal.CSRF)
            raise HTTPException(403, "missing or wrong CSRF token")

    # ------------------------------------------------------------ API

    async def api_scripts(request: Request) -> Response:
        return _payload(request, await call(service.scripts))

    async def api_groups(request: Request) -> Response:
        return _payload(request, await call(service.groups))

    async def api_schedules(request: Request) -> Response:
        return _json(await call(service.schedules))

    async def api_history(request: Request) -> Response:
        limit = request.query_params.get("limit")
        n = 20 if limit is None else _int(limit, "limit", 1, MAX_LIMIT)
        return _json(await call(service.history, request.path_params["name"], n))

    async def api_run(request: Request) -> Response:
        run_id = _int(request.path_params["id"], "the run id", 1)
        return _json(await call(service.run_json, run_id))

    async def api_log(request: Request) -> Response:
        run_id = _int(request.path_params["id"], "the run id", 1)
        download = _bool(request.query_params.get("download"), "download")
        offset = request.headers.get("last-event-id") or request.query_params.get("offset")
        start = 0 if offset is None else _int(offset, "the offset")
        run, source = await call(_run_and_log, run_id)
        if "text/event-stream" in request.headers.get("accept", ""):
            return _sse(logstream.follow(watches, run, source, start, status_of(run_id)))
        name = f"{run.script}-{run_id}.log"
        return await _file(source, download, name)

    async def launched(request: Request, kind: str, name: str) -> None:
        """Start a run for the request (its role permitting), with its audit row."""
        target = f"{kind}:{name}"
        try:
            require(request, "operator")
            await call(service.launch, kind, name)
        except Forbidden:
            await note_request(
                request, AuditAction.LAUNCH, target, AuditResult.REFUSED, Refusal.ROLE
            )
            raise
        except Conflict:
            await note_request(
                request, AuditAction.LAUNCH, target, AuditResult.REFUSED, Refusal.OVERLAP
            )
            raise
        except Busy:
            await note_request(
                request, AuditAction.LAUNCH, target, AuditResult.REFUSED, Refusal.LAUNCH_CAP
            )
            raise
        except NotFound:
            await note_request(
                request, AuditAction.LAUNCH, target, AuditResult.REFUSED, Refusal.UNKNOWN
            )
            raise
        await note_request(request, AuditAction.LAUNCH, target, AuditResult.ACCEPTED)

    async def api_launch(request: Request) -> Response:
        await csrf_checked(request, api=True)
        kind = "script" if request.url.path.startswith("/api/v1/scripts/") else "group"
        await launched(request, kind, request.path_params["name"])
        return _json({"accepted": True}, 202)

    async def api_health(request: Request) -> Response:
        return _json(await call(service.health, who(request) is not None))

    async def api_audit(request: Request) -> Response:
        require(request, "admin")
        limit = request.query_params.get("limit")
        n = 100 if limit is None else _int(limit, "limit", 1, MAX_AUDIT_ROWS)
        since = request.query_params.get("since")
        start = None if since is None else _int(since, "since")
        found = await call(service.store.audit.rows, start, n)
        return _json([audit_json(r) for r in found])

    openapi = dumps(document())

    async def api_openapi(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    async def prometheus(request: Request) -> Response:
        return _payload(request, await call(metrics.payload))

    def _run_and_log(run_id: int) -> tuple[Run, LogSource]:
        run = service.run(run_id)
        return run, service.log_source(run)

    def status_of(run_id: int) -> Callable[[], Awaitable[str]]:
        def get() -> str:
            run = service.run(run_id)
            return run.status

        async def status() -> str:
            return await call(get)

        return status

    # ------------------------------------------------------------ dashboard

    async def overview(request: Request) -> Response:
        view = OverviewView.of(request.query_params)
        if view == OverviewView():
            return await page(request, await call(pages.overview, view), gz=overview_gz)
        return await page(request, await call(pages.overview, view))

    async def script_page(request: Request) -> Response:
        name = request.path_params["name"]
        limit = request.query_params.get("limit")
        n = HISTORY if limit is None else _int(limit, "limit", 1, MAX_HISTORY)
        html = pages.head(name) + await call(pages.script, name, n)
        return await page(request, flashed(request, html, "script", name))

    async def group_page(request: Request) -> Response:
        name = request.path_params["name"]
        html = pages.head(name) + await call(pages.group, name)
        return await page(request, flashed(request, html, "group", name))

    async def run_page(request: Request) -> Response:
        run_id = _int(request.path_params["id"], "the run id", 1)
        title, main = await call(pages.run, run_id)
        script = title.rsplit(" #", 1)[0]
        return await page(
            request, flashed(request, pages.head(title) + main, "script", script, run_id)
        )

    async def run_events(request: Request) -> Response:
        run_id = _int(request.path_params["id"], "the run id", 1)
        offset = request.headers.get("last-event-id") or request.query_params.get("offset")
        start = 0 if offset is None else _int(offset, "the offset")
        run, source = await call(_run_and_log, run_id)
        stream = logstream.follow(
            watches, run, source, start, status_of(run_id), html=True, end_html=pages.badge
        )
        return _sse(stream)

    async def launch(request: Request) -> Response:
        await csrf_checked(request, api=False)
        name = request.path_params["name"]
        kind = "script" if request.url.path.startswith("/scripts/") else "group"
        try:
            before = await call(runnow.newest, service, kind, name)
            await launched(request, kind, name)
        except (Conflict, Busy, Forbidden) as e:
            if request.headers.get("hx-request"):
                raise
            # a form without JavaScript: back to the page, with the reason on it
            session, _new = session_for(request)
            getter = pages.script if kind == "script" else pages.group
            args = (name, HISTORY) if kind == "script" else (name,)
            main = await call(getter, *args)
            flash = f'<div class="notes"><p class="flash bad">{_esc(str(e))}</p></div>'
            html = (
                pages.head(name)
                + flash
                + main
                + pages.tail(session["csrf"], authed(request), who(request))
            )
            return HTMLResponse(html, _code_of(e), _headers_of(e) | {"Cache-Control": "no-store"})
        # to the new run once it is recorded (runnow), with a message saying it started
        run_id = await call(runnow.wait_for_new, service, kind, name, before)
        url = runnow.target(kind, name, run_id)
        if request.headers.get("hx-request"):
            message = runnow.started_message(kind, name, run_id or None)
            return HTMLResponse(message, headers={"HX-Redirect": url, "HX-Trigger": "sm-started"})
        return RedirectResponse(url, 303)

    def flashed(request: Request, html: str, kind: str, name: str, run_id: int = 0) -> str:
        """``html`` with the message of a run just started, after a *Run now* (runnow)."""
        if request.query_params.get("started") != "1":
            return html
        return runnow.with_flash(html, runnow.started_message(kind, name, run_id or None))

    async def login_form(request: Request) -> Response:
        if not security.token:
            return RedirectResponse("/", 303)
        session, new = session_for(request)
        next_path = _local(request.query_params.get("next"))
        response = HTMLResponse(
            pages.login(session["csrf"], next_path, failed=False),
            headers={"Cache-Control": "no-store"},
        )
        return with_cookie(response, session, request) if new else response

    async def login(request: Request) -> Response:
        await csrf_checked(request, api=False)
        form = await form_of(request)
        token, next_path = form.get("token"), _local(form.get("next"))
        if not security.token:
            return RedirectResponse("/", 303)
        identity = security.identity_of_token(token) if isinstance(token, str) else None
        client = request.state.client
        if identity is not None and isinstance(token, str):
            await note(client, identity.name, AuditAction.LOGIN, "/login", AuditResult.ACCEPTED)
            response = RedirectResponse(next_path, 303)
            return with_cookie(response, security.new_session(token), request)
        await note(client, "-", AuditAction.LOGIN, "/login", AuditResult.REFUSED, Refusal.BAD_TOKEN)
        if security.throttle.fail(client):
            log.warning("too many failed sign-ins from %s: refused for a minute", client)
            await note(
                client, "-", AuditAction.LOGIN, "/login", AuditResult.REFUSED, Refusal.THROTTLED
            )
        session = request.state.session
        return HTMLResponse(pages.login(session["csrf"], next_path, failed=True), 401)

    async def logout(request: Request) -> Response:
        await csrf_checked(request, api=False)
        session = request.state.session
        if session and isinstance(session.get("sid"), str):
            sid = session["sid"]
            security.revoked.add(sid)
            expires = float(session.get("t", 0)) + SESSION_DAYS * 86400
            try:
                await call(service.store.audit.revoke, sid, expires)
            except StoreError as e:
                log.warning("the signed-out session is revoked until a restart only: %s", e)
        await note_request(request, AuditAction.LOGOUT, "/logout", AuditResult.ACCEPTED)
        response = RedirectResponse("/login" if security.token else "/", 303)
        return with_cookie(response, security.new_session(), request)

    async def audit_page(request: Request) -> Response:
        require(request, "admin")
        limit = request.query_params.get("limit")
        n = 200 if limit is None else _int(limit, "limit", 1, MAX_AUDIT_ROWS)
        found = await call(service.store.audit.rows, None, n)
        return await page(request, pages.head("Audit") + pages.audit(found[::-1]))

    async def static_file(request: Request) -> Response:
        found = static.get(request.path_params["file"])
        if found is None:
            raise HTTPException(404, "no such file")
        body, media, etag = found
        headers = {"Cache-Control": "public, max-age=86400", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media, headers=headers)

    # ------------------------------------------------------------ errors

    async def on_error(request: Request, exc: Exception) -> Response:
        extra: dict[str, str] = {}
        body: dict[str, Any] = {}
        if isinstance(exc, Conflict | Busy | Forbidden):
            code, message, extra = _code_of(exc), str(exc), _headers_of(exc)
            if isinstance(exc, Conflict):
                body["run"] = exc.run_id
        elif isinstance(exc, NotFound):
            code, message = 404, str(exc)
        elif isinstance(exc, BadRequest):
            code, message = 400, str(exc)
        elif isinstance(exc, StoreError):
            code, message = 503, str(exc)
        elif isinstance(exc, HTTPException):
            code, message = exc.status_code, str(exc.detail)
            extra = dict(exc.headers or {})
            if code == 404 and message == "Not Found":
                message = "no such page"
        else:
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            code, message = 500, "internal error (see the server's log)"
        if _is_api(request.url.path) or request.headers.get("hx-request"):
            if request.headers.get("hx-request") and not _is_api(request.url.path):
                return HTMLResponse(f'<p class="flash bad">{_esc(message)}</p>', code, extra)
            return JSONResponse({"error": message, **body}, code, extra)
        session, _new = session_for(request)
        html = pages.error(code, message, session["csrf"], authed(request), who(request))
        return HTMLResponse(html, code, extra)

    routes = [
        Route("/", overview),
        Route("/scripts/{name}", script_page),
        Route("/scripts/{name}/run", launch, methods=["POST"]),
        Route("/groups/{name}", group_page),
        Route("/groups/{name}/run", launch, methods=["POST"]),
        Route("/runs/{id}", run_page),
        Route("/runs/{id}/events", run_events),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/audit", audit_page),
        Route("/static/{file}", static_file),
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
        *ping.routes(service),
    ]
    routes += grouprun.routes(service, pages, page, call, _int, flashed)
    routes += statuspage.routes(service, pages, page, call)

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
        warm = asyncio.get_running_loop().create_task(_warm(metrics, pages))
        try:
            yield
        finally:
            task.cancel()
            warm.cancel()
            service.reap_children()

    handlers = {
        Exception: on_error,
        HTTPException: on_error,
        NotFound: on_error,
        BadRequest: on_error,
        Conflict: on_error,
        Busy: on_error,
        Forbidden: on_error,
        StoreError: on_error,
        404: on_error,
        405: on_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    return Guard(app, security, note, frozenset(static))  # type: ignore[return-value]


async def _warm(metrics: Metrics, pages: Pages) -> None:
    """Fill the caches once at start, so the first visitor does not wait."""
    with contextlib.suppress(Exception):
        await call(metrics.payload)
        await call(pages.overview)


class _Gzipped:
    """gzip of a page whose long prefix is shared by many requests: the prefix is
    compressed once and the compressor's state copied for each request's short tail."""

    def __init__(self) -> None:
        self.entry: tuple[str, bytes, Any] | None = None
        self.lock = threading.Lock()

    def body(self, prefix: str, tail: str) -> bytes:
        with self.lock:
            entry = self.entry
            if entry is None or entry[0] is not prefix:
                packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip stream
                entry = self.entry = (prefix, packer.compress(prefix.encode()), packer)
            packer = entry[2].copy()
        return entry[1] + packer.compress(tail.encode()) + packer.flush()


def _code_of(exc: Exception) -> int:
    return 409 if isinstance(exc, Conflict) else 429 if isinstance(exc, Busy) else 403


def _headers_of(exc: Exception) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else {}


def _esc(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def _local(path: Any) -> str:
    """A path on this server to go to after signing in (never another site)."""
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        return "/"
    if "\\" in path or any(ord(c) < 32 for c in path):
        return "/"
    return path


def _sse(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _file(source: LogSource, download: bool, name: str) -> Response:
    """The log as it is now: exactly the bytes present when the request came (this host's
    file or a remote run's chunks, ``logsource``)."""
    try:
        size = await call(source.size)
    except BaseException:
        source.close()
        raise

    async def body() -> AsyncIterator[bytes]:
        pos = 0
        try:
            while pos < size:
                chunk = await call(source.read, pos, min(1 << 16, size - pos))
                if not chunk:
                    break
                pos += len(chunk)
                yield chunk
        finally:
            source.close()

    headers = {"Content-Length": str(size)}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return StreamingResponse(body(), media_type="text/plain; charset=utf-8", headers=headers)


def _static_files() -> dict[str, tuple[bytes, str, str]]:
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
