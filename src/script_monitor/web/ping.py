"""``/ping``: passive checks report in over HTTP (docs/MONITORING.md, docs/WEB.md).

``POST`` (or ``GET``, for one-line ``curl``/``wget`` calls) ``/ping/{name or key}`` is a
success; ``/start``, ``/fail`` and ``/{exit code}`` after it report a start, a failure or
an exit code.  The body (its last 10 kB) is the run's log.  No server token is needed:
a check with a ``key`` is reached only through its key, one without a key by its name.
An unknown check, a wrong key and a bad suffix get the same 404, so nobody can tell
which; an address that gets 404 again and again is refused for a while (429).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import queue
import re
import threading
import time
from typing import Any

from anyio import to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..states import PingKind
from .limits import BODY_TIMEOUT
from .security import Throttle

PREFIX = "/ping/"
MAX_BODY = 1024 * 1024  # bytes a ping may send (the last 10 kB are kept)
METHODS = ["GET", "POST"]
EXIT_CODE = re.compile(r"[0-9]{1,3}")
NOT_FOUND = "404: no such check\n"
REFRESH_EVERY = 1.0  # seconds: how stale the configuration a ping is looked up in may be
WATCH_MIN, WATCH_MAX = 0.5, 10.0  # seconds between the server's looks at its checks

log = logging.getLogger("script_monitor.web")


def routes(service: Any) -> list[Route]:
    """The ``/ping`` routes over ``service`` (web/service.py)."""
    misses = Throttle()  # 404s per client address
    writer = Writer(service)
    threading.Thread(target=_watch, args=(service,), name="checks", daemon=True).start()

    async def ping(request: Request) -> Response:
        client = request.state.client
        wait = misses.retry_after(client)
        if wait:
            return PlainTextResponse(
                "429: too many pings of unknown checks; wait\n", 429, {"Retry-After": str(wait)}
            )
        parsed = _kind(request.path_params.get("what"))
        check = None
        if parsed is not None:
            if writer.stale():  # a changed checks.yaml is read within a second
                await to_thread.run_sync(writer.refresh)
            check = writer.find(request.path_params["slug"])
        if check is None or parsed is None:
            misses.fail(client)
            return PlainTextResponse(NOT_FOUND, 404)
        body = await _body(request)
        if isinstance(body, Response):
            return body
        kind, code = parsed
        await writer.record(check, kind, code, body, client)  # answered once committed
        return PlainTextResponse("OK\n")

    async def api_checks(request: Request) -> Response:
        return _json(await to_thread.run_sync(checks_json, service))

    async def api_check(request: Request) -> Response:
        from .service import MAX_LIMIT, BadRequest

        text = request.query_params.get("limit", "20")
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
        name = request.path_params["name"]
        return _json(await to_thread.run_sync(check_detail, service, name, int(text)))

    return [
        Route(PREFIX + "{slug}", ping, methods=METHODS),
        Route(PREFIX + "{slug}/{what}", ping, methods=METHODS),
        Route("/api/v1/checks", api_checks),
        Route("/api/v1/checks/{name}", api_check),
    ]


def _json(value: Any) -> Response:
    from .service import dumps

    return Response(dumps(value), media_type="application/json")


def views(service: Any) -> list[Any]:
    """Every check as it stands now (``check_time.views``), for the API and the pages."""
    from ..check_time import views as check_views

    service.refresh()
    config, store = service.config, service.store
    if not config.checks:
        return []
    return check_views(config, store.checks.states(), store.reads.last_runs(), time.time())


def checks_json(service: Any) -> list[dict[str, Any]]:
    """``GET /api/v1/checks``: every check (the ``check`` objects of ``list --json``)."""
    from ..serialize import check_json

    return service.redact([check_json(service.config, v) for v in views(service)])


def check_detail(service: Any, name: str, limit: int) -> dict[str, Any]:
    """``GET /api/v1/checks/{name}``: a check with its newest runs and pings."""
    from ..check_time import view
    from ..serialize import check_json, ping_json, runs_json
    from .service import NotFound

    service.refresh()
    config, store = service.config, service.store
    check = config.checks.get(name)
    if check is None:
        raise NotFound(f"unknown check '{name}'")
    runs = store.runs.history(name, limit)
    v = view(config, check, store.checks.state(name), runs[0] if runs else None, time.time())
    out = check_json(config, v)
    out["runs"] = runs_json(runs)
    out["recent_pings"] = [ping_json(p) for p in store.checks.pings(name, limit)]
    return service.redact(out)


def _kind(what: str | None) -> tuple[PingKind, int | None] | None:
    """What the path's suffix reports (None: no such suffix)."""
    if what is None:
        return PingKind.SUCCESS, None
    if what in ("start", "fail"):
        return PingKind(what), None
    if EXIT_CODE.fullmatch(what) and int(what) <= 255:
        return PingKind.EXIT, int(what)
    return None


class Writer:
    """Records pings on one thread, every ping waiting at that moment in one transaction
    (a commit costs more than a ping's rows): each request is answered once its ping is
    committed.  A batch that fails is written again one ping at a time, so that one bad
    ping costs no other its record."""

    BATCH = 500  # pings at most in one transaction

    def __init__(self, service: Any):
        self.service = service
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.refreshed = 0.0
        self.index: tuple[Any, dict[str, Any]] = (None, {})
        threading.Thread(target=self._run, name="pings", daemon=True).start()

    def stale(self) -> bool:
        return time.monotonic() - self.refreshed > REFRESH_EVERY

    def refresh(self) -> None:
        self.refreshed = time.monotonic()
        self.service.refresh()

    def find(self, slug: str) -> Any:
        """The check a ping's path names: by its key, or by its name when it has none."""
        config = self.service.config
        if self.index[0] is not config:
            names: dict[str, Any] = {}
            for check in config.checks.values():
                names[check.key if check.key is not None else check.name] = check
            self.index = (config, names)
        found = self.index[1].get(slug)
        key = found.key if found is not None and found.key is not None else None
        if key is not None and not hmac.compare_digest(key.encode(), slug.encode()):
            return None
        return found

    async def record(
        self, check: Any, kind: PingKind, code: int | None, body: bytes, client: str
    ) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.queue.put((loop, done, (check, kind, code, body, client)))
        await done

    def _run(self) -> None:
        while True:
            items = [self.queue.get()]
            while len(items) < self.BATCH:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            errors = self._write([item[2] for item in items])
            by_loop: dict[Any, list] = {}  # one wake-up of each event loop per batch
            for (loop, done, _), error in zip(items, errors, strict=True):
                by_loop.setdefault(loop, []).append((done, error))
            for loop, settled in by_loop.items():
                loop.call_soon_threadsafe(_settle, settled)

    def _write(self, pings: list[tuple]) -> list[Exception | None]:
        from ..pings import record_ping

        service = self.service
        config, store, masker = service.config, service.store, service.masker()
        errors: list[Exception | None] = [None] * len(pings)
        messages = 0
        try:
            with store.batch():
                for check, kind, code, body, client in pings:
                    done = record_ping(
                        config, store, check, kind, code, body, client, masker=masker
                    )
                    messages += done[1]
        except Exception:
            messages = 0
            for i, (check, kind, code, body, client) in enumerate(pings):
                try:
                    done = record_ping(
                        config, store, check, kind, code, body, client, masker=masker
                    )
                    messages += done[1]
                except Exception as e:  # answered 503 (a store error) or 500
                    errors[i] = e
        if messages:
            from ..notify import deliver

            try:
                deliver(config, store, wait=False)
            except Exception as e:
                log.warning("checks: notifications: %s", e)
        return errors


def _settle(settled: list[tuple[asyncio.Future, Exception | None]]) -> None:
    for done, error in settled:
        if done.done():  # the client went away
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


async def _body(request: Request) -> bytes | Response:
    """The request's body, its last 10 kB; a response when it is refused."""
    from ..store.checks import BODY_LIMIT

    data = bytearray()
    total = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            async for chunk in request.stream():
                data += chunk
                total += len(chunk)
                if total > MAX_BODY:
                    return PlainTextResponse("413: the body is too large (1 MB at most)\n", 413)
                if len(data) > 2 * BODY_LIMIT:
                    del data[: len(data) - BODY_LIMIT]
    except TimeoutError:
        return PlainTextResponse("408: the body came too slowly\n", 408)
    except ClientDisconnect:
        return PlainTextResponse("400: the client went away\n", 400)
    return bytes(data[-BODY_LIMIT:])


def _watch(service: Any) -> None:
    """The server watches its checks (``watchdog.check_checks``): ``missed`` and
    ``overdue`` are noticed within half a grace (0.5 to 10 seconds), and pending
    messages are delivered, even where no scheduler runs."""
    from ..notify import deliver
    from ..watchdog import check_checks, clock_now

    while True:
        graces = [service.config.grace_of(c) / 2 for c in service.config.checks.values()]
        time.sleep(min(max(min(graces, default=WATCH_MAX), WATCH_MIN), WATCH_MAX))
        try:
            service.refresh()
            config, store = service.config, service.store
            if not config.checks:
                continue
            _, _, new = check_checks(config, store, clock_now())
            channels = config.settings.notifications.channels
            if channels and (new or store.outbox.due(time.time())):
                deliver(config, store, wait=False)
        except Exception as e:  # a locked or unreachable store: the next look tries again
            log.warning("checks: %s", e)
