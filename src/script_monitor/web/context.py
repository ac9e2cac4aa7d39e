"""``Web``: what the route groups share, built once by ``create_app`` — the service and
the checks, the session cookie and CSRF, who is asking and what their role allows, the
audit trail, the page frame, a launch with its audit row, and the error pages."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from ..errors import StoreError
from ..states import AuditAction, AuditResult, Refusal
from ..tokens import Identity
from . import logstream, runnow
from .guard import audited
from .metrics import Metrics
from .pages import Pages
from .respond import Gzipped, call, code_of, esc, form_of, headers_of, is_api
from .security import COOKIE, SESSION_DAYS, Security, Throttle
from .service import BadRequest, Busy, Conflict, Forbidden, NotFound, Service

if TYPE_CHECKING:
    from ..logsource import LogSource
    from ..store import Run

log = logging.getLogger("script_monitor.web")
# why a launch was refused, by the error that refused it (the first that matches)
LAUNCH_REFUSALS: tuple[tuple[type[Exception], Refusal], ...] = (
    (Forbidden, Refusal.ROLE),
    (Conflict, Refusal.OVERLAP),
    (Busy, Refusal.LAUNCH_CAP),
    (NotFound, Refusal.UNKNOWN),
)


class Web:
    """The app's shared state and the helpers its handlers call."""

    def __init__(self, service: Service, security: Security) -> None:
        self.service = service
        self.security = security
        self.pages = Pages(service)
        self.metrics = Metrics(service)
        self.watches = logstream.Watches()  # the log files followed by event streams
        self.quiet = Throttle()  # refused rows per client address

    # ------------------------------------------------------------ who is asking

    @staticmethod
    def who(request: Request) -> Identity | None:
        return request.state.identity

    def authed(self, request: Request) -> bool:
        return self.security.authed(request.state.session)

    def require(self, request: Request, role: str) -> None:
        """403 unless the request's identity has ``role``."""
        identity = self.who(request)
        if identity is None or not identity.may(role):
            raise Forbidden(
                f"this needs the {role} role; the token '{identity.name}' is {identity.role}"
                if identity
                else f"this needs the {role} role"
            )

    # ------------------------------------------------------------ sessions and CSRF

    def session_for(self, request: Request) -> tuple[dict[str, Any], bool]:
        """The request's session, or a new one (True: it must be set as a cookie)."""
        session = request.state.session
        return (session, False) if session else (self.security.new_session(), True)

    def with_cookie(
        self, response: Response, session: dict[str, Any], request: Request
    ) -> Response:
        response.set_cookie(
            COOKIE,
            self.security.encode(session),
            max_age=SESSION_DAYS * 86400,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def csrf_checked(self, request: Request, api: bool) -> None:
        """403 unless a state-changing request may go on (see the module security)."""
        if request.state.bearer:
            return
        if api and not request.state.cookie:
            return  # no session cookie: not a browser's dashboard request (token checked)
        value = request.headers.get("x-csrf-token")
        if value is None and not api:
            value = (await form_of(request)).get("csrf")
        if not self.security.csrf_ok(request.state.session, value):
            found = audited(request.url.path, request.method)
            if found is not None:
                await self.note_request(request, *found, AuditResult.REFUSED, Refusal.CSRF)
            raise HTTPException(403, "missing or wrong CSRF token")

    # ------------------------------------------------------------ the audit trail

    async def note(
        self, client: str, name: str, action: str, target: str, result: str, reason: str = ""
    ) -> None:
        """One row of the audit trail; a history that cannot be written is logged.

        Refusals are recorded for at most 10 a minute per client address (then none for
        a minute), so that a flood of refused requests cannot fill the disk."""
        if result == AuditResult.REFUSED and reason != Refusal.THROTTLED:  # that one: once
            if self.quiet.retry_after(client):
                return
            self.quiet.fail(client)
        audit = self.service.store.audit
        try:
            await call(audit.record, name, client, action, target, result, reason)
        except StoreError as e:
            log.warning("audit trail not written (%s %s %s): %s", action, target, result, e)

    async def note_request(
        self, request: Request, action: str, target: str, result: str, reason: str = ""
    ) -> None:
        identity = self.who(request)
        name = identity.name if identity else "-"
        await self.note(request.state.client, name, action, target, result, reason)

    # ------------------------------------------------------------ runs

    async def launched(self, request: Request, kind: str, name: str) -> None:
        """Start a run for the request (its role permitting), with its audit row."""
        target = f"{kind}:{name}"
        try:
            self.require(request, "operator")
            await call(self.service.launch, kind, name)
        except (Forbidden, Conflict, Busy, NotFound) as e:
            reason = next(r for cls, r in LAUNCH_REFUSALS if isinstance(e, cls))
            refused = AuditResult.REFUSED
            await self.note_request(request, AuditAction.LAUNCH, target, refused, reason)
            raise
        await self.note_request(request, AuditAction.LAUNCH, target, AuditResult.ACCEPTED)

    def run_and_log(self, run_id: int) -> tuple[Run, LogSource]:
        run = self.service.run(run_id)
        return run, self.service.log_source(run)

    def status_of(self, run_id: int) -> Callable[[], Awaitable[str]]:
        """An async reader of a run's status (an event stream ends when it does)."""

        def get() -> str:
            return self.service.run(run_id).status

        async def status() -> str:
            return await call(get)

        return status

    # ------------------------------------------------------------ pages

    async def page(
        self, request: Request, prefix: str, status: int = 200, gz: Gzipped | None = None
    ) -> Response:
        """A page: ``prefix`` (the head and content) and the tail for the visitor."""
        session, new = self.session_for(request)
        tail = self.pages.tail(session["csrf"], self.authed(request), self.who(request))
        headers = {"Vary": "Accept-Encoding", "Cache-Control": "no-store"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = await call((gz or Gzipped()).body, prefix, tail)
        else:
            body = (prefix + tail).encode()
        response = Response(body, status, headers, media_type="text/html")
        return self.with_cookie(response, session, request) if new else response

    @staticmethod
    def flashed(request: Request, html: str, kind: str, name: str, run_id: int = 0) -> str:
        """``html`` with the message of a run just started, after a *Run now* (runnow)."""
        if request.query_params.get("started") != "1":
            return html
        return runnow.with_flash(html, runnow.started_message(kind, name, run_id or None))

    # ------------------------------------------------------------ errors

    async def on_error(self, request: Request, exc: Exception) -> Response:
        """Every error's answer: JSON for the API and htmx, else an HTML page."""
        extra: dict[str, str] = {}
        body: dict[str, Any] = {}
        if isinstance(exc, Conflict | Busy | Forbidden):
            code, message, extra = code_of(exc), str(exc), headers_of(exc)
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
        if is_api(request.url.path) or request.headers.get("hx-request"):
            if request.headers.get("hx-request") and not is_api(request.url.path):
                return HTMLResponse(f'<p class="flash bad">{esc(message)}</p>', code, extra)
            return JSONResponse({"error": message, **body}, code, extra)
        session, _new = self.session_for(request)
        html = self.pages.error(
            code, message, session["csrf"], self.authed(request), self.who(request)
        )
        return HTMLResponse(html, code, extra)
