"""``Guard``: the checks every request passes before any handler runs (Host, Origin,
credentials, throttling) and the security headers of every answer (docs/SECURITY.md)."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import quote, unquote

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..states import AuditAction, AuditResult, Refusal
from . import ping
from .respond import is_api
from .security import COOKIE, SAFE_METHODS, Security, host_wellformed

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
LAUNCH_PATH = re.compile(r"/(?:api/v1/)?(scripts|groups)/([^/]+)/run")


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

        send_with_headers: Send = _no_store(add_headers) if is_api(path) else add_headers
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
            if is_api(path) or scope["method"] not in SAFE_METHODS:
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
    if is_api(scope["path"]):
        response: Response = JSONResponse({"error": message}, code, headers=headers)
    else:
        response = PlainTextResponse(f"{code}: {message}\n", code, headers=headers)
    await response(scope, receive, send)
