"""The OpenAPI 3 description of /api/v1 (served at /api/v1/openapi.json).

Written by hand, next to the serializer it describes (``serialize.py``); the schemathesis
test in tests/test_web_schema.py checks every response of the live server against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import __version__
from ..config import NAME_PATTERN
from ..states import CheckStatus, LogState, PingKind, RunStatus
from .service import MAX_LIMIT


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


TIME = {"type": "string", "description": "ISO 8601 date and time"}
STATUS = {"type": "string", "enum": [s.value for s in RunStatus]}
GROUP_STATUS = {
    "type": "string",
    "description": "a group run's status: a run status, or missed (a tick the scheduler "
    "recorded as not run)",
}
TRIGGER = {"type": "string", "description": "manual, schedule, api or ping"}
RUN_REF = {"allOf": [{"$ref": "#/components/schemas/Run"}]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Run": {
        "type": "object",
        "description": "One run of a script, as in `history NAME --json`.",
        "required": [
            "id",
            "script",
            "group",
            "group_run_id",
            "trigger",
            "status",
            "exit_code",
            "signal",
            "started",
            "ended",
            "duration",
            "log",
            "log_state",
            "detail",
            "attempt",
            "host",
            "cpu_user",
            "cpu_system",
            "max_rss",
            "anomaly",
        ],
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "script": {"type": "string"},
            "group": _nullable({"type": "string"}),
            "group_run_id": _nullable({"type": "integer"}),
            "trigger": TRIGGER,
            "status": STATUS,
            "exit_code": _nullable({"type": "integer"}),
            "signal": _nullable({"type": "integer"}),
            "started": _nullable(TIME),
            "ended": _nullable(TIME),
            "duration": _nullable({"type": "number", "minimum": 0}),
            "log": {"type": "boolean", "description": "whether the log file is there"},
            "log_state": {"type": "string", "enum": [s.value for s in LogState]},
            "detail": _nullable({"type": "string"}),
            "attempt": {"type": "integer", "minimum": 1, "description": "1, 2, ... (retries)"},
            "host": _nullable({"type": "string", "description": "the host that ran it"}),
            "cpu_user": _nullable(
                {"type": "number", "minimum": 0, "description": "user CPU seconds of its tree"}
            ),
            "cpu_system": _nullable(
                {"type": "number", "minimum": 0, "description": "system CPU seconds of its tree"}
            ),
            "max_rss": _nullable(
                {"type": "integer", "minimum": 0, "description": "peak resident bytes"}
            ),
            "anomaly": _nullable(
                {
                    "type": "string",
                    "enum": ["slow", "fast"],
                    "description": "its duration left the script's usual band",
                }
            ),
        },
    },
    "GroupRun": {
        "type": "object",
        "required": ["id", "status", "trigger", "started", "ended", "detail"],
        "properties": {
            "id": {"type": "integer"},
            "status": GROUP_STATUS,
            "trigger": TRIGGER,
            "started": _nullable(TIME),
            "ended": _nullable(TIME),
            "detail": _nullable({"type": "string"}),
        },
    },
    "GroupRunDetail": {
        "type": "object",
        "description": "One group run with every attempt of its scripts, the reasons of the"
        " skipped ones and the group's edges, as in `history --group NAME --json`.",
        "required": [
            "schema_version",
            "id",
            "group",
            "status",
            "trigger",
            "owner",
            "started_by",
            "started",
            "ended",
            "duration",
            "detail",
            "scripts",
            "runs",
            "skipped",
            "edges",
        ],
        "properties": {
            "schema_version": {"type": "integer"},
            "id": {"type": "integer"},
            "group": {"type": "string"},
            "status": GROUP_STATUS,
            "trigger": TRIGGER,
            "owner": {"type": "string", "description": "the process that ran it"},
            "started_by": _nullable(
                {"type": "string", "description": "the web token's name (trigger api)"}
            ),
            "started": TIME,
            "ended": _nullable(TIME),
            "duration": _nullable({"type": "number", "minimum": 0}),
            "detail": _nullable({"type": "string"}),
            "scripts": {"type": "array", "items": {"type": "string"}},
            "runs": {
                "type": "array",
                "description": "every attempt, in the order they were recorded",
                "items": {"$ref": "#/components/schemas/Run"},
            },
            "skipped": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["script", "reason"],
                    "properties": {"script": {"type": "string"}, "reason": {"type": "string"}},
                },
            },
            "edges": {
                "type": "array",
                "description": "dependency -> dependent (`depends_on`)",
                "items": {
                    "type": "object",
                    "required": ["from", "to"],
                    "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
                },
            },
        },
    },
    "Script": {
        "type": "object",
        "description": "A configured script (or a passive check) and its latest run, as in "
        "`list --json`.",
        "required": ["name", "kind", "description", "last_run", "check"],
        "properties": {
            "name": {"type": "string"},
            "kind": {"type": "string", "enum": ["script", "check"]},
            "description": {"type": "string"},
            "last_run": _nullable(RUN_REF),
            "check": _nullable({"allOf": [{"$ref": "#/components/schemas/Check"}]}),
        },
    },
    "Check": {
        "type": "object",
        "description": "A passive check and where it stands (docs/MONITORING.md).",
        "required": [
            "name",
            "description",
            "status",
            "schedule",
            "period",
            "grace",
            "timezone",
            "keyed",
            "last_ping",
            "last_ping_kind",
            "next_due",
            "late_at",
            "pings",
            "last_run",
        ],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in CheckStatus]},
            "schedule": _nullable({"type": "string"}),
            "period": _nullable({"type": "number", "minimum": 0}),
            "grace": {"type": "number", "minimum": 0},
            "timezone": {"type": "string"},
            "keyed": {"type": "boolean", "description": "pings must give its key"},
            "last_ping": _nullable(TIME),
            "last_ping_kind": _nullable({"type": "string", "enum": [k.value for k in PingKind]}),
            "next_due": _nullable(TIME),
            "late_at": _nullable(TIME),
            "pings": {"type": "integer", "minimum": 0},
            "last_run": _nullable(RUN_REF),
        },
    },
    "CheckDetail": {
        "type": "object",
        "description": "A passive check with its newest runs and pings.",
        "allOf": [{"$ref": "#/components/schemas/Check"}],
        "required": ["runs", "recent_pings"],
        "properties": {
            "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
            "recent_pings": {"type": "array", "items": {"$ref": "#/components/schemas/Ping"}},
        },
    },
    "Ping": {
        "type": "object",
        "required": ["id", "at", "kind", "exit_code", "client", "run", "body_size"],
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "at": TIME,
            "kind": {"type": "string", "enum": [k.value for k in PingKind]},
            "exit_code": _nullable({"type": "integer"}),
            "client": {"type": "string"},
            "run": _nullable({"type": "integer"}),
            "body_size": {"type": "integer", "minimum": 0},
        },
    },
    "Group": {
        "type": "object",
        "description": "A configured group and its latest run, as in `list-groups --json`.",
        "required": [
            "name",
            "description",
            "execution",
            "stop_on_error",
            "max_parallel_workers",
            "schedule",
            "scripts",
            "depends_on",
            "last_run",
        ],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "execution": {"type": "string", "enum": ["serial", "parallel"]},
            "stop_on_error": {"type": "boolean"},
            "max_parallel_workers": {"type": "integer", "minimum": 1},
            "schedule": _nullable({"type": "string"}),
            "scripts": {"type": "array", "items": {"type": "string"}},
            "depends_on": {
                "type": "object",
                "description": "member -> the members it needs",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
            "last_run": _nullable({"allOf": [{"$ref": "#/components/schemas/GroupRun"}]}),
        },
    },
    "SchedulerStatus": {
        "type": "object",
        "required": ["running", "pid", "heartbeat_age", "stale", "schedulers"],
        "properties": {
            "running": {"type": "boolean"},
            "pid": _nullable({"type": "integer"}),
            "heartbeat_age": _nullable({"type": "number", "description": "seconds"}),
            "stale": {"type": "boolean"},
            "schedulers": {
                "type": "array",
                "description": "every scheduler alive on the store, the leader first",
                "items": {"$ref": "#/components/schemas/SchedulerMember"},
            },
        },
    },
    "SchedulerMember": {
        "type": "object",
        "required": ["role", "host", "pid", "config_dir", "version", "started", "heartbeat_age"],
        "properties": {
            "role": {"type": "string", "enum": ["leader", "standby"]},
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "config_dir": {"type": "string"},
            "version": {"type": "string"},
            "started": {"type": "string", "format": "date-time"},
            "heartbeat_age": {"type": "number", "description": "seconds"},
        },
    },
    "Schedules": {
        "type": "object",
        "description": "As in `list-schedules --json`.",
        "required": ["schema_version", "scheduler", "enabled", "groups"],
        "properties": {
            "schema_version": {"type": "integer"},
            "scheduler": {"$ref": "#/components/schemas/SchedulerStatus"},
            "enabled": {"type": "boolean"},
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "name",
                        "schedule",
                        "expression",
                        "timezone",
                        "next_run",
                        "last_run",
                    ],
                    "properties": {
                        "name": {"type": "string"},
                        "schedule": {"type": "string"},
                        "expression": {"type": "string"},
                        "timezone": {"type": "string"},
                        "next_run": _nullable(TIME),
                        "last_run": _nullable(
                            {"allOf": [{"$ref": "#/components/schemas/GroupRun"}]}
                        ),
                    },
                },
            },
        },
    },
    "Refusal": {
        "type": "object",
        "description": "The target is already running and its overlap policy refuses a "
        "second run: `run` is the running run's id (null while the process started a moment "
        "ago has not recorded it yet).",
        "required": ["error", "run"],
        "properties": {"error": {"type": "string"}, "run": _nullable({"type": "integer"})},
    },
    "AuditRow": {
        "type": "object",
        "description": "One launch, sign-in, sign-out or wrong token, as in `audit --json`.",
        "required": ["id", "at", "token_name", "client", "action", "target", "result", "reason"],
        "properties": {
            "id": {"type": "integer"},
            "at": TIME,
            "token_name": {"type": "string", "description": "the token's name; - if none"},
            "client": {"type": "string"},
            "action": {"type": "string", "enum": ["launch", "login", "logout", "auth"]},
            "target": {"type": "string"},
            "result": {"type": "string", "enum": ["accepted", "refused"]},
            "reason": {"type": "string"},
        },
    },
    "Health": {
        "type": "object",
        "description": "Without a valid token (when tokens are configured) only `status` and "
        "`version`.",
        "required": ["status", "version"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "error"]},
            "version": {"type": "string"},
            "scheduler": {"$ref": "#/components/schemas/SchedulerStatus"},
            "heartbeat": _nullable(
                {"type": "number", "description": "Unix time of the scheduler's last heartbeat"}
            ),
            "config_error": _nullable(
                {"type": "string", "description": "why a changed configuration was not loaded"}
            ),
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["accepted"],
        "properties": {"accepted": {"type": "boolean", "enum": [True]}},
    },
}


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
