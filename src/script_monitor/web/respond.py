"""What every handler uses to read a request and shape its answer: numbers and flags
from the query, the dashboard's forms, JSON and cached payloads, event streams, a log
file as it is now, and the gzip of a page whose long prefix many requests share."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

from anyio import to_thread
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from .limits import BODY_TIMEOUT
from .service import BadRequest, Busy, Conflict, Payload, dumps

if TYPE_CHECKING:
    from ..logsource import LogSource

T = TypeVar("T")
log = logging.getLogger("script_monitor.web")

DIGITS = re.compile(r"[0-9]{1,19}")
MAX_INT = 2**63 - 1
MAX_FORM = 64 * 1024  # bytes; the dashboard's forms are a token and a path


def is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/metrics"


async def call(fn: Callable[..., T], *args: Any) -> T:
    """Run a Service method in a worker thread (the database may block)."""
    return await to_thread.run_sync(fn, *args)


# ---------------------------------------------------------------- reading


def number(text: str | None, what: str, low: int = 0, high: int = MAX_INT) -> int:
    """A whole number from a path or query parameter, else 400."""
    if text is None or not DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise BadRequest(f"{what} must be a whole number from {low} to {high}")
    return int(text)


def flag(text: str | None, what: str) -> bool:
    """true/false/1/0 from a query parameter (absent: false), else 400."""
    if text is None:
        return False
    value = text.lower()
    if value not in ("true", "false", "1", "0"):
        raise BadRequest(f"{what} must be true or false")
    return value in ("true", "1")


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


# ---------------------------------------------------------------- answering


def json_answer(value: Any, status: int = 200) -> Response:
    return Response(dumps(value), status, media_type="application/json")


def payload_answer(request: Request, payload: Payload) -> Response:
    """A cached payload: 304 for its ETag, gzip when the client takes it."""
    media = "application/json" if payload.media_type == "json" else payload.media_type
    headers = {"ETag": payload.etag, "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == payload.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(payload.gz, media_type=media, headers=headers)
    return Response(payload.body, media_type=media, headers=headers)


def sse(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def log_file(source: LogSource, download: bool, name: str) -> Response:
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


def code_of(exc: Exception) -> int:
    """The status of a refused launch: 409 running, 429 too many, 403 not allowed."""
    return 409 if isinstance(exc, Conflict) else 429 if isinstance(exc, Busy) else 403


def headers_of(exc: Exception) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else {}


def esc(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


class Gzipped:
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
