"""The OpenAPI 3 description of /api/v1 (served at /api/v1/openapi.json): the paths here,
the component schemas in ``apischemas.py``.

Written by hand, next to the serializer it describes (``serialize.py``); the schemathesis
test in tests/test_web_schema.py checks every response of the live server against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import __version__
from ..config import NAME_PATTERN
from .apischemas import SCHEMAS
from .service import MAX_LIMIT


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


def _array(ref: str, description: str) -> dict[str, Any]:
    schema = {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
DENIED = {
    "401": _error("a token is configured and the request has no valid one"),
    "403": _error(
        "Host or Origin not this server's, no CSRF token with a session cookie, or the "
        "token's role does not allow this"
    ),
    "429": {
        **_error("too many wrong tokens from this client address: wait a minute"),
        "headers": RETRY,
    },
}
NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": NAME_PATTERN.replace("(?!\\.{1,2}$)", "")},
}
MAX_INT = 2**63 - 1  # SQLite's largest integer
RUN_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
}


def _get(
    summary: str, ok: dict[str, Any], *errors: str, params: Iterable[dict[str, Any]] = ()
) -> dict[str, Any]:
    responses = {"200": ok, **DENIED}
    if "400" in errors:
        responses["400"] = _error("a bad parameter")
    if "404" in errors:
        responses["404"] = _error("no such script, group, run or log")
    return {"get": {"summary": summary, "parameters": list(params), "responses": responses}}


def _post(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": "Starts `script-monitor run` (or `run-group`) as a separate process "
            "recorded with trigger `api`; it outlives a restart of the server. Needs the "
            "operator or admin role. Refused with 409 while the script or group is running "
            "(unless the group's overlap policy is `allow`), and with 429 while "
            "`web.max_launches` runs started from the web are alive.",
            "parameters": [NAME],
            "responses": {
                "202": _json("Accepted", "the run was started"),
                "404": _error("no such script or group"),
                "409": _json("Refusal", "already running; its overlap policy refuses another"),
                **DENIED,
                "429": {
                    **_error(
                        "web.max_launches runs started from the web are alive, or too many "
                        "wrong tokens from this client address"
                    ),
                    "headers": RETRY,
                },
            },
        }
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the API."""
    log_ok = {
        "description": "The log as it is now (text/plain); with `Accept: text/event-stream`, "
        "Server-Sent Events: the log from its start (or from `Last-Event-ID` / `?offset=N`) "
        "and then what is written, until the run ends. Each event's `id` is the byte offset "
        "just after its data; carriage returns are sent as line breaks; a final "
        "`event: end` carries the run's status.",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
    health = _get("Liveness and the scheduler's heartbeat", _json("Health", "the server is up"))
    health["get"]["security"] = []
    health["get"]["responses"] = {"200": health["get"]["responses"]["200"], **DENIED}
    since = {
        "name": "since",
        "in": "query",
        "required": False,
        "description": "only rows at or after this Unix time",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
    }
    audit_limit = {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 100},
    }
    limit = {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 20},
    }
    offset = {
        "name": "offset",
        "in": "query",
        "required": False,
        "description": "with text/event-stream: start at this byte offset",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
    }
    download = {
        "name": "download",
        "in": "query",
        "required": False,
        "description": "true: sent as an attachment (Content-Disposition)",
        "schema": {"type": "boolean"},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "script-monitor",
            "version": __version__,
            "description": "The same objects as the CLI's --json output. With a token configured "
            "(web.token, web.tokens), every endpoint but /health needs "
            "`Authorization: Bearer TOKEN`; the token's role decides what it may do "
            "(docs/SECURITY.md).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/scripts": _get("Every script (`list --json`)", _array("Script", "scripts")),
            "/api/v1/scripts/{name}/runs": _get(
                "A script's runs, newest first (`history NAME --json`)",
                _array("Run", "runs"),
                "400",
                "404",
                params=[NAME, limit],
            ),
            "/api/v1/scripts/{name}/run": _post("Run a script now"),
            "/api/v1/groups": _get("Every group (`list-groups --json`)", _array("Group", "groups")),
            "/api/v1/groups/{name}/run": _post("Run a group now"),
            "/api/v1/schedules": _get(
                "Scheduled groups (`list-schedules --json`)", _json("Schedules", "schedules")
            ),
            "/api/v1/runs/{id}": _get(
                "One run", _json("Run", "the run"), "400", "404", params=[RUN_ID]
            ),
            "/api/v1/group-runs/{id}": _get(
                "One group run: every attempt, skips and edges (`history --group NAME --json`)",
                _json("GroupRunDetail", "the group run"),
                "400",
                "404",
                params=[RUN_ID],
            ),
            "/api/v1/runs/{id}/log": _get(
                "A run's log", log_ok, "400", "404", params=[RUN_ID, offset, download]
            ),
            "/api/v1/checks": _get(
                "Every passive check (docs/MONITORING.md)", _array("Check", "checks")
            ),
            "/api/v1/checks/{name}": _get(
                "A passive check with its newest runs and pings",
                _json("CheckDetail", "the check"),
                "400",
                "404",
                params=[NAME, limit],
            ),
            "/api/v1/health": health,
            "/api/v1/audit": _get(
                "The audit trail, oldest first (`audit --json`; admin role)",
                _array("AuditRow", "rows"),
                "400",
                params=[since, audit_limit],
            ),
            "/api/v1/openapi.json": _get(
                "This document",
                {"description": "OpenAPI 3", "content": {"application/json": {"schema": {}}}},
            ),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
