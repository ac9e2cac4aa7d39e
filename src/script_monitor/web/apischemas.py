"""The component schemas of the OpenAPI document (``openapi.py``): the JSON objects of
the API, as ``serialize.py`` writes them (docs/JSON.md)."""

from __future__ import annotations

from typing import Any

from ..states import CheckStatus, LogState, PingKind, RunStatus


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
