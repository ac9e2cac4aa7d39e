"""Every `--json` output matches docs/JSON.md, which is read here as the schema.

One scenario makes every kind of value appear (a running run, a failed, a skipped and
a signalled one, a recorded skipped tick, a running scheduler), then every command
with `--json` is run and its output checked against the documented tables: the same
keys, the documented types, times as ISO 8601 with the local offset, durations as
numbers of seconds. Every documented key must be seen with a value at least once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from helpers import MAIN, ROOT, cli, make_config, wait_for, write
from script_monitor.serialize import SCHEMA_VERSION
from script_monitor.store import RunEnd

DOC = ROOT / "docs" / "JSON.md"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
PRIMITIVES = {"integer", "number", "string", "boolean", "time", "seconds", "object"}


INHERITED: set[tuple[str, str]] = set()  # (object, key) taken over with "every key of"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_doc(text: str) -> tuple[int, dict[str, str], dict[str, dict[str, str]]]:
    """(schema version, command -> output type, object -> {key: type})."""
    version = int(re.search(r"\*\*Schema version: (\d+)\*\*", text).group(1))
    outputs: dict[str, str] = {}
    objects: dict[str, dict[str, str]] = {}
    section = current = None
    for line in text.splitlines():
        if line.startswith("## "):
            section, current = line[3:].strip(), None
        elif line.startswith("### "):
            current = line[4:].strip()
            objects[current] = {}
        elif line.startswith("|") and not set(line) <= set("|-: "):
            cells = _cells(line)
            if section == "Outputs" and cells[0].startswith("`"):
                words = cells[0].strip("`").split()
                sub = len(words) > 2 and (words[1] == "--group" or words[1].islower())
                if "--summary" in words:  # `history NAME --json --summary`: its own output
                    outputs[f"{words[0]} --summary"] = cells[2]
                else:
                    outputs[" ".join(words[:2]) if sub else words[0]] = cells[2]
            elif current and cells[0] != "key":
                extends = re.fullmatch(r"\*every key of (.+)\*", cells[0])
                if extends:
                    objects[current].update(objects[extends.group(1)])
                    INHERITED.update((current, k) for k in objects[extends.group(1)])
                else:
                    objects[current][cells[0].strip("`")] = cells[1]
    return version, outputs, objects


VERSION, OUTPUTS, OBJECTS = parse_doc(DOC.read_text())
# Checked by tests/test_notify.py, in a scenario with channels, alerts and watchdog findings.
NOTIFY_OUTPUTS = {"notifications", "notify-test", "alerts", "watchdog"}
NOTIFY_OBJECTS = {"notification", "alert", "url result", "notify-test", "missed tick"}
NOTIFY_OBJECTS |= {"overdue run", "watched scheduler", "watchdog"}
# Checked by tests/test_checks.py (the API's check detail, a late check in `watchdog`).
CHECK_OBJECTS = {"check detail", "ping", "late check"}


class Checker:
    """Checks values against the documented types; remembers which keys had a value."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def check(self, value, typ: str, where: str) -> None:
        if typ.endswith(" or null"):
            if value is None:
                return
            typ = typ[: -len(" or null")]
        assert value is not None, f"{where}: null, documented as {typ}"
        if typ.startswith("list of "):
            assert isinstance(value, list), f"{where}: not a list"
            for i, item in enumerate(value):
                self.check(item, typ[len("list of ") :], f"{where}[{i}]")
        elif typ in PRIMITIVES:
            self._primitive(value, typ, where)
        else:
            assert typ in OBJECTS, f"{where}: undocumented type {typ!r}"
            assert isinstance(value, dict), f"{where}: not an object"
            assert set(value) == set(OBJECTS[typ]), (where, set(value) ^ set(OBJECTS[typ]))
            for key, kind in OBJECTS[typ].items():
                self.check(value[key], kind, f"{where}.{key}")
                if value[key] is not None:
                    self.seen.add((typ, key))

    @staticmethod
    def _primitive(value, typ: str, where: str) -> None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if typ == "integer":
            assert isinstance(value, int) and not isinstance(value, bool), where
        elif typ == "number":
            assert number, where
        elif typ == "seconds":
            assert number and value >= 0, f"{where}: {value!r} is not seconds"
            assert round(value, 3) == value, f"{where}: more than millisecond precision"
        elif typ == "string":
            assert isinstance(value, str), where
        elif typ == "boolean":
            assert isinstance(value, bool), where
        elif typ == "object":
            assert isinstance(value, dict), where
        elif typ == "time":
            assert isinstance(value, str) and TIME.match(value), f"{where}: {value!r}"
            instant = datetime.fromisoformat(value)
            assert instant.utcoffset() == instant.astimezone().utcoffset(), f"{where}: not local"


def test_the_documented_version_is_the_serializers():
    assert VERSION == SCHEMA_VERSION
    for typ in ("schedules", "status", "configuration"):
        assert OBJECTS[typ]["schema_version"] == "integer"


def test_every_command_with_json_is_documented():
    from script_monitor.cli import VERBS, build_parser

    with_json = set()
    for verb in VERBS:
        sub = build_parser(verb)._subparsers._group_actions[0].choices[verb]
        if any("--json" in a.option_strings for a in sub._actions):
            with_json.add(verb)
    assert with_json == {command.split()[0] for command in OUTPUTS}


@pytest.fixture
def scenario(config_dir: Path, marker: str):
    """A configuration and history in which every documented value occurs."""
    conf = make_config(
        config_dir,
        {
            "ok": "true",
            "bad": "exit 3",
            "sig": "kill -9 $$",
            "slow": {"command": f"sleep 60 # {marker}", "description": "takes a minute"},
            "after": "true",
        },
        [
            {
                "name": "nightly",
                "description": "every first of January",
                "stop_on_error": True,
                "schedule": "0 0 1 1 *",
                "scripts": ["bad", "after"],
            },
            {
                "name": "pair",
                "execution": "parallel",
                "scripts": ["ok", "sig"],
                "depends_on": {"sig": "ok"},
            },
            {"name": "long", "scripts": ["slow"], "schedule": "@daily", "timezone": "Asia/Kolkata"},
            {"name": "chain", "scripts": ["bad", "after"], "depends_on": {"after": ["bad"]}},
        ],
        {"execution": {"default_timeout": 90.5}},
    )
    sm = ("--config-dir", str(conf))
    write(
        conf,
        "checks.yaml",
        """
        checks:
          - {name: offsite, schedule: "0 3 * * *", description: the file server's backup}
          - {name: heartbeat, period: 60, grace: 30}
        """,
    )
    assert cli(*sm, "ping", "offsite").returncode == 0
    assert cli(*sm, "ping", "heartbeat", "--exit-code", "0").returncode == 0
    assert cli(*sm, "run-group", "nightly", "--trigger", "schedule").returncode == 1
    from script_monitor.states import AuditAction, AuditResult, Refusal
    from script_monitor.store import Store

    store = Store(conf / ".script-monitor")
    assert cli(*sm, "run-group", "chain").returncode == 1
    store.audit.record("ci", "192.0.2.1", AuditAction.LAUNCH, "group:pair", AuditResult.ACCEPTED)
    assert cli(*sm, "run-group", "pair", "--trigger", "api").returncode == 1
    tick = store.runs.start_group("nightly", "schedule")
    store.runs.finish_group(tick, "skipped", detail="tick skipped: the run before is still going")

    store.audit.record(
        "ci", "192.0.2.1", AuditAction.LAUNCH, "script:ok", AuditResult.REFUSED, Refusal.ROLE
    )
    # a run whose duration left its band (docs/MONITORING.md), as the executor records one
    for _ in range(10):  # anomaly.min_runs: its band is known
        usual = store.runs.start_run("ok", "manual", time.time() - 20)
        store.runs.finish_run(usual, RunEnd("success", time.time() - 19, 1.0, 0))
    late = store.runs.start_run("ok", "manual", time.time() - 10)
    store.runs.finish_run(late, RunEnd("success", time.time(), 10.0, 0, anomaly="slow"))
    store.close()
    env = {**os.environ, "SCRIPT_MONITOR_TEST_MARK": marker}
    daemon = subprocess.Popen(
        [sys.executable, str(MAIN), *sm, "scheduler"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    running = subprocess.Popen(
        [sys.executable, str(MAIN), *sm, "run", "slow", "-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: (conf / ".script-monitor" / "scheduler.heartbeat").exists())
        assert wait_for(lambda: _json(sm, "history", "slow") != [])
        yield sm
    finally:
        for proc in (daemon, running):
            proc.send_signal(signal.SIGTERM)
        for proc in (daemon, running):
            proc.wait(timeout=60)


def _json(sm: tuple[str, ...], *args: str):
    r = cli(*sm, *args, "--json")
    assert r.returncode in (0, 1), r.stderr  # status exits 1 when a scheduled run failed
    return json.loads(r.stdout)


def test_every_json_output_matches_the_documentation(scenario):
    sm = scenario
    checker = Checker()
    outputs = {
        "list": [_json(sm, "list")],
        "list-groups": [_json(sm, "list-groups")],
        "history": [_json(sm, "history", n) for n in ("ok", "bad", "sig", "slow", "after")],
        "history --summary": [_json(sm, "history", "ok", "--summary")],
        "list-schedules": [_json(sm, "list-schedules")],
        "show-config": [_json(sm, "show-config")],
        "status": [_json(sm, "status")],
        "audit": [_json(sm, "audit")],
        "history prune": [_json(sm, "history", "prune", "--dry-run")],
        "history --group": [
            _json(sm, "history", "--group", g) for g in ("chain", "pair", "nightly")
        ],
    }
    assert set(outputs) == set(OUTPUTS) - NOTIFY_OUTPUTS
    for command, values in outputs.items():
        for value in values:
            checker.check(value, OUTPUTS[command], command)
    documented = {
        (t, k)
        for t, keys in OBJECTS.items()
        if t not in NOTIFY_OBJECTS | CHECK_OBJECTS
        for k in keys
    } - INHERITED
    assert documented - checker.seen == set(), "keys never seen with a value"
    # and what the values say is right
    status = outputs["status"][0]
    assert status["schema_version"] == SCHEMA_VERSION and status["ok"] is False
    assert [r["script"] for r in status["running"]] == ["slow"]
    assert 0 <= status["running"][0]["elapsed"] < 60
    assert {r["script"] for r in status["failures"]} == {"bad", "sig"}
    assert status["scheduler"]["running"] is True and status["scheduler"]["pid"] > 0
    assert [s["name"] for s in status["next_runs"]] == ["long", "nightly"]  # soonest first
    sig = outputs["history"][2][0]
    assert (sig["status"], sig["exit_code"], sig["signal"]) == ("failed", None, 9)
    assert outputs["show-config"][0]["settings"]["execution"]["default_timeout"] == 90.5
    chain, pair, tick = outputs["history --group"]
    assert chain["skipped"] == [{"script": "after", "reason": chain["runs"][1]["detail"]}]
    assert pair["edges"] == [{"from": "ok", "to": "sig"}] and pair["started_by"] == "ci"
    assert [r["script"] for r in pair["runs"]] == ["ok", "sig"]
    assert tick["status"] == "skipped" and tick["runs"] == [] and tick["detail"]


def test_times_carry_the_local_offset_of_the_zone(config_dir):
    make_config(config_dir, {"ok": "true"})
    assert cli("--config-dir", str(config_dir), "run", "ok").returncode == 0
    for zone, offset in (("Asia/Kolkata", "+05:30"), ("America/St_Johns", "-0")):
        r = cli("--config-dir", str(config_dir), "history", "ok", "--json", env={"TZ": zone})
        [run] = json.loads(r.stdout)
        assert run["started"][19:].startswith(offset), (zone, run["started"])
        stamp = datetime.fromisoformat(run["started"]).timestamp()
        assert abs(stamp - time.time()) < 60
