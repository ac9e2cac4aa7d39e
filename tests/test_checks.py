"""Passive checks (docs/MONITORING.md): checks.yaml, pings over real HTTP and from the real
CLI, `wrap`, the watchdog's `missed`/`overdue`, and the notifications they send."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import MAIN, Receiver, assert_clean_error, cli, cli_json, wait_for, write
from test_json_schema import OBJECTS, OUTPUTS, Checker
from web_helpers import TOKEN, Server

KEY = "k3y-0123456789abcdef"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def conf_with(d: Path, checks: str, receiver: Receiver | None = None, extra: str = "") -> Path:
    """A config dir with one script, the given checks.yaml, and (with ``receiver``) a
    channel that takes every event."""
    d.mkdir(parents=True, exist_ok=True)
    text = f"web:\n  token: {TOKEN}\n{extra}"
    if receiver is not None:
        text += (
            f'notifications:\n  channels:\n    ops: ["{receiver.url}"]\n'
            "  default:\n    on: [failure, recovery, missed, overdue]\n  timeout: 5\n"
        )
    (d / "config.yaml").write_text(text)
    os.chmod(d / "config.yaml", 0o600)
    write(d, "scripts.yaml", "scripts:\n  - {name: local, command: 'true'}\n")
    write(d, "checks.yaml", checks)
    os.chmod(d / "checks.yaml", 0o600)
    return d


def events(receiver: Receiver, check: str) -> list[str]:
    """The events notified for ``check``, in order (from the messages' titles)."""
    out = []
    for post in receiver.posts:
        words = post["title"].split()  # script-monitor: NAME EVENT on HOST
        if words[1] == check:
            out.append(words[2])
    return out


# ---------------------------------------------------------------- checks.yaml


def test_checks_yaml_problems_name_their_file_and_line(config_dir):
    conf = conf_with(
        config_dir,
        f"""
        checks:
          - {{name: both, schedule: "* * * * *", period: 60}}
          - {{name: neither}}
          - {{name: local, period: 60}}
          - {{name: badcron, schedule: "61 * * * *"}}
          - {{name: badzone, period: 60, timezone: Mars/Olympus}}
          - {{name: shortkey, period: 60, key: abc}}
          - {{name: stolen, period: 60, key: {KEY}}}
          - {{name: {KEY}, period: 60}}
        """,
    )
    r = cli("--config-dir", str(conf), "validate")
    assert_clean_error(r)
    err = r.stderr
    path = str(conf / "checks.yaml")
    assert f"{path}:2: error: check 'both': give exactly one of schedule or period" in err
    assert f"{path}:3: error: check 'neither': give exactly one of schedule or period" in err
    assert f"{path}:4: error: check 'local': the name is taken by a script" in err
    assert f"{path}:5: error: check 'badcron': invalid cron expression" in err
    assert f"{path}:6: error: check 'badzone': unknown timezone 'Mars/Olympus'" in err
    assert f"{path}:7: error: check 'shortkey'" in err and "key" in err
    assert f"{path}:8: error: check 'stolen': its key is the name of check '{KEY}'" in err


def test_an_empty_checks_file_means_no_checks_and_the_schema_is_printed(config_dir):
    conf = conf_with(config_dir, "checks:\n")
    r = cli("--config-dir", str(conf), "validate")
    assert r.returncode == 0, r.stderr
    schema = json.loads(cli("schema", "checks").stdout)
    assert "checks" in schema["properties"]
    assert schema["$defs"]["Check"]["properties"]["key"]


# ---------------------------------------------------------------- over HTTP


def test_pings_over_http_notify_missed_recovery_and_failure_once(tmp_path, receiver, marker):
    conf = conf_with(
        tmp_path / "c",
        f"""
        checks:
          - {{name: job, period: 0.5, grace: 0.5}}
          - {{name: fails, period: 3600, grace: 60, description: the nightly export}}
          - {{name: keyed, period: 3600, key: {KEY}}}
        """,
        receiver,
    )
    server = Server(conf, marker=marker)
    try:
        # On time: a ping every 0.3 s, no token, no message.
        for _ in range(4):
            assert server.post("/ping/job").text == "OK\n"
            time.sleep(0.3)
        assert events(receiver, "job") == []
        # Late: the server's own watch notices within a few seconds, once.
        assert wait_for(lambda: events(receiver, "job") == ["MISSED"], timeout=15)
        time.sleep(1.2)  # two more looks of the server's watch: still one message
        assert events(receiver, "job") == ["MISSED"]
        assert server.get("/ping/job").status_code == 200  # GET works too (curl, wget)
        assert wait_for(lambda: events(receiver, "job")[:2] == ["MISSED", "RECOVERED"])

        # A failure with a body: one message quoting the body's end.
        report = "".join(f"line {i}\n" for i in range(2000)) + "disk full\n"
        assert server.post("/ping/fails/start").status_code == 200
        assert server.post("/ping/fails/fail", content=report).status_code == 200
        assert wait_for(lambda: events(receiver, "fails") == ["FAILED"])
        post = next(p for p in receiver.posts if p["title"].split()[1] == "fails")
        assert "disk full" in post["message"] and "the nightly export" in post["message"]
        assert server.post("/ping/fails/0").status_code == 200  # an exit code: success
        assert wait_for(lambda: events(receiver, "fails") == ["FAILED", "RECOVERED"])
        time.sleep(0.6)
        assert events(receiver, "fails") == ["FAILED", "RECOVERED"]

        detail = server.get("/api/v1/checks/fails", token=TOKEN).json()
        assert [r["status"] for r in detail["runs"]] == ["success", "failed"]
        failed = detail["runs"][1]
        assert failed["trigger"] == "ping" and failed["host"] == "127.0.0.1"
        assert failed["duration"] is not None and failed["log"] is True
        assert [p["kind"] for p in detail["recent_pings"]] == ["exit", "fail", "start"]
        assert detail["recent_pings"][1]["body_size"] == 10 * 1024  # the last 10 kB kept
        assert detail["pings"] == 3
        log = server.get(f"/api/v1/runs/{failed['id']}/log", token=TOKEN).text
        assert log.endswith("disk full\n") and "line 0\n" not in log
    finally:
        server.stop()


def test_a_stopping_web_server_records_the_message_it_is_sending(tmp_path, receiver, marker):
    """SIGTERM while a check's failure is on its way: the server waits for the
    receiver's answer and records it, so no later delivery sends it again."""
    conf = conf_with(tmp_path / "c", "checks:\n  - {name: fails, period: 3600}\n", receiver)
    receiver.delay = 2.0  # the answer comes 2 s after the message
    server = Server(conf, marker=marker)
    try:
        assert server.post("/ping/fails/fail").status_code == 200
        assert receiver.arrived.wait(15), "the server sent nothing"
    finally:
        code = server.stop()  # uvicorn ends by the signal it was stopped with
    assert code == -signal.SIGTERM and "Traceback" not in server.stderr(), server.stderr()
    assert events(receiver, "fails") == ["FAILED"]
    [note] = cli_json("--config-dir", str(conf), "notifications", "--json")
    assert note["state"] == "sent" and note["attempts"] == 1, note
    assert cli("--config-dir", str(conf), "notifications", "--deliver").returncode == 0
    assert events(receiver, "fails") == ["FAILED"]


def test_unknown_checks_and_wrong_keys_get_the_same_404_and_no_token_is_needed(tmp_path, marker):
    conf = conf_with(
        tmp_path / "c",
        f"""
        checks:
          - {{name: open, period: 3600}}
          - {{name: keyed, period: 3600, key: {KEY}}}
        """,
    )
    server = Server(conf, marker=marker)
    try:
        assert server.get("/api/v1/checks").status_code == 401  # the API needs the token
        refused = [
            server.post(path)
            for path in (
                "/ping/nothing",  # no such check
                "/ping/keyed",  # a keyed check by its name
                "/ping/k3y-0123456789abcdeX",  # a wrong key
                "/ping/open/256",  # no such exit code
                "/ping/open/later",  # no such report
            )
        ]
        assert {(r.status_code, r.text) for r in refused} == {(404, "404: no such check\n")}
        assert server.post(f"/ping/{KEY}").status_code == 200
        assert server.post(f"/ping/{KEY}/start").status_code == 200
        assert server.post("/ping/open/3").status_code == 200
        checks = {c["name"]: c for c in server.get("/api/v1/checks", token=TOKEN).json()}
        assert checks["keyed"]["status"] == "started" and checks["keyed"]["keyed"] is True
        assert checks["open"]["status"] == "down" and checks["open"]["pings"] == 1
        # An address that keeps guessing is refused for a while, right keys included.
        for _ in range(10):
            server.post("/ping/guess")
        assert server.post(f"/ping/{KEY}").status_code == 429
        metrics = server.get("/metrics").text
        assert 'script_monitor_check_status{check="open",status="down"} 1.0' in metrics
        assert 'script_monitor_runs_total{script="open",status="failed"} 1.0' in metrics
    finally:
        server.stop()


def test_wrap_over_http_sends_the_exit_code_and_the_output_tail(tmp_path, marker):
    conf = conf_with(tmp_path / "c", f"checks:\n  - {{name: remote, period: 60, key: {KEY}}}\n")
    server = Server(conf, marker=marker)
    try:
        # As on a host without the configuration: the URL and the key only.
        r = cli(
            "wrap",
            "--url",
            server.url,
            KEY,
            "--",
            "sh",
            "-c",
            "seq 1 3000; echo oops >&2; exit 3",
            cwd=tmp_path,
        )
        assert r.returncode == 3, r.stderr
        assert r.stdout.startswith("1\n2\n") and r.stdout.endswith("3000\n")
        assert r.stderr == "oops\n"
        [run] = server.get("/api/v1/checks/remote", token=TOKEN).json()["runs"]
        assert (run["status"], run["exit_code"]) == ("failed", 3)
        log = server.get(f"/api/v1/runs/{run['id']}/log", token=TOKEN).text
        assert log.endswith("3000\noops\n") and not log.startswith("1\n")
        bad = cli("ping", "--url", server.url, "remote")  # by name: it has a key
        assert_clean_error(bad)
        assert "unknown check or wrong key" in bad.stderr
        mistaken = cli("wrap", "--url", server.url, "remote", "--", "touch", "ran", cwd=tmp_path)
        assert_clean_error(mistaken)  # a 404 is a mistake: the command does not run
        assert not (tmp_path / "ran").exists()
    finally:
        server.stop()
    # A server out of reach: the job runs all the same, and says so.
    r = cli("wrap", "--url", server.url, KEY, "--", "sh", "-c", "echo fine", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "fine\n"
    assert r.stderr.count("ping was not recorded") == 2 and "cannot reach" in r.stderr


# ---------------------------------------------------------------- the CLI


def test_wrap_runs_the_command_in_its_own_group_and_forwards_signals(tmp_path):
    conf = conf_with(tmp_path / "c", "checks:\n  - {name: job, period: 60}\n")
    ready = tmp_path / "ready"
    script = (
        "import os, signal, sys, time\n"
        "def bye(n, f):\n"
        "    print('got', n, flush=True); sys.exit(9)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        f"open({str(ready)!r}, 'w').write(str(os.getpgid(0)))\n"
        "time.sleep(30)\n"
    )
    wrap = [sys.executable, str(MAIN), "--config-dir", str(conf), "wrap", "job", "--"]
    proc = subprocess.Popen(
        [*wrap, sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: ready.exists() and ready.read_text())
        assert int(ready.read_text()) != os.getpgid(proc.pid)  # its own process group
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 9, err
    assert out == f"got {signal.SIGTERM.value}\n"
    [run] = cli_json("--config-dir", str(conf), "history", "job", "--json")
    assert (run["status"], run["exit_code"], run["trigger"]) == ("failed", 9, "ping")
    logs = cli("--config-dir", str(conf), "logs", "job")
    assert logs.stdout == out


def test_ping_start_then_end_with_a_log_and_an_overdue_start(tmp_path, receiver):
    conf = conf_with(tmp_path / "c", "checks:\n  - {name: job, period: 3600, grace: 5}\n", receiver)
    sm = ("--config-dir", str(conf))
    assert cli(*sm, "ping", "job", "--start").returncode == 0
    start = time.time()
    assert cli_json(*sm, "list", "--json")[-1]["check"]["status"] == "started"
    # The watchdog, driven by its clock: a start with no end past its grace is overdue.
    late = {"SCRIPT_MONITOR_CLOCK": f"{start + 30}"}
    r = cli(*sm, "watchdog", "--json", env=late)
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    [item] = report["overdue"]
    assert (item["kind"], item["name"], item["max_duration"]) == ("check", "job", 5)
    assert report["late"] == []  # a job that has started is not missed
    assert cli(*sm, "watchdog", env=late).returncode == 1  # found again, notified once
    assert wait_for(lambda: events(receiver, "job") == ["OVERDUE"])
    (tmp_path / "out.txt").write_bytes(b"x" * 20_000 + b"\nall done\n")
    r = cli(*sm, "ping", "job", "--exit-code", "0", "--log", str(tmp_path / "out.txt"))
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: events(receiver, "job") == ["OVERDUE", "RECOVERED"])
    [run] = cli_json(*sm, "history", "job", "--json")
    notes = cli_json(*sm, "notifications", "--json")
    assert [(n["event"], n["unit"], n["run"]) for n in notes] == [
        ("recovery", "job", run["id"]),
        ("overdue", "job", None),
    ]
    assert (run["status"], run["exit_code"]) == ("success", 0)
    assert run["duration"] > 0 and run["host"] == os.uname().nodename
    log = cli(*sm, "logs", "job").stdout
    assert log.endswith("all done\n") and len(log) == 10 * 1024
    assert_clean_error(cli(*sm, "ping", "jbo"))  # unknown check, the closest named
    assert_clean_error(cli(*sm, "ping", "job", "--exit-code", "256"))
    assert_clean_error(cli(*sm, "ping", "job", "--start", "--fail"))
    assert_clean_error(cli(*sm, "wrap", "job"))  # no command


def test_a_late_check_in_list_status_and_watchdog_json(tmp_path):
    conf = conf_with(tmp_path / "c", "checks:\n  - {name: job, period: 0.5, grace: 0.5}\n")
    sm = ("--config-dir", str(conf))
    assert cli(*sm, "ping", "job").returncode == 0
    later = {"SCRIPT_MONITOR_CLOCK": f"{time.time() + 10}"}
    r = cli(*sm, "watchdog", "--json", env=later)
    assert r.returncode == 1
    report = json.loads(r.stdout)
    checker = Checker()
    checker.check(report, OUTPUTS["watchdog"], "watchdog")
    [late] = report["late"]
    assert late["check"] == "job" and late["grace"] == 0.5
    assert {k for t, k in checker.seen if t == "late check"} == set(OBJECTS["late check"])
    time.sleep(1.1)  # late by the real clock too
    listed = cli(*sm, "list").stdout.splitlines()
    assert listed[0].split()[:3] == ["NAME", "KIND", "STATUS"]
    assert listed[-1].split()[:3] == ["job", "check", "late"]
    status = cli(*sm, "status")
    assert status.returncode == 1
    assert "check 'job' is late" in status.stdout


def test_the_api_check_detail_is_documented(tmp_path, marker):
    conf = conf_with(tmp_path / "c", "checks:\n  - {name: job, schedule: '0 3 * * *'}\n")
    assert cli("--config-dir", str(conf), "ping", "job", "--exit-code", "4").returncode == 0
    server = Server(conf, marker=marker)
    try:
        detail = server.get("/api/v1/checks/job?limit=5", token=TOKEN).json()
        assert server.get("/api/v1/checks/nope", token=TOKEN).status_code == 404
        assert server.get("/api/v1/checks/job?limit=0", token=TOKEN).status_code == 400
        page = server.get("/", token=TOKEN).text
        run_id = detail["runs"][0]["id"]
        run_page = server.get(f"/runs/{run_id}", token=TOKEN)
        runs = server.get("/api/v1/scripts/job/runs", token=TOKEN).json()
    finally:
        server.stop()
    checker = Checker()
    checker.check(detail, "check detail", "check")
    seen = {(t, k) for t, k in checker.seen}
    assert {k for t, k in seen if t == "ping"} == set(OBJECTS["ping"])
    assert 'id="check-job"' in page and "down" in page
    assert run_page.status_code == 200 and "job" in run_page.text
    assert [r["id"] for r in runs] == [run_id]


# ---------------------------------------------------------------- the store


def test_pings_are_recorded_as_runs_on_both_backends(backend_store):
    from script_monitor.states import LogState, PingKind, RunStatus
    from script_monitor.store import NewPing

    store = backend_store
    t = time.time()
    started, _ = store.checks.record(NewPing("job", PingKind.START, t, "10.0.0.1", body=b"go\n"))
    ended, _ = store.checks.record(
        NewPing("job", PingKind.EXIT, t + 2, "10.0.0.1", exit_code=3, body=b"boom\n"), keep=1
    )
    assert started.run_id == ended.run_id and ended.status is RunStatus.FAILED
    run = store.runs.run(ended.run_id)
    assert run is not None and (run.trigger, run.exit_code, run.duration) == ("ping", 3, 2)
    assert run.log_state is LogState.OK and run.host == "10.0.0.1"
    assert store.logs.span(run.id, 0, 9) == b"go\nboom\n"
    alone, _ = store.checks.record(NewPing("job", PingKind.SUCCESS, t + 3, "cli"), keep=1)
    assert alone.run_id != ended.run_id and alone.status is RunStatus.SUCCESS
    again, _ = store.checks.record(NewPing("job", PingKind.START, t + 4, "cli"))
    newer, _ = store.checks.record(NewPing("job", PingKind.START, t + 5, "cli"))
    assert newer.superseded == again.run_id
    assert store.runs.run(again.run_id).status is RunStatus.LOST
    state = store.checks.state("job")
    assert state is not None and (state.pings, state.open_run_id) == (5, newer.run_id)
    assert [p.kind for p in store.checks.pings("job", 2)] == [PingKind.START, PingKind.START]
    store.checks.seen(["job", "other"], t + 6)
    assert store.checks.states()["job"].first_seen == t  # seen before: kept
    assert store.checks.states()["other"].last_ping is None


def test_old_pings_are_pruned_and_where_a_check_stands_is_kept(tmp_path):
    from script_monitor.states import PingKind
    from script_monitor.store import NewPing, Store

    store = Store(tmp_path / "state")
    old = time.time() - 200 * 86400
    for i in range(3):
        store.checks.record(NewPing("job", PingKind.SUCCESS, old + i, "cli", body=b"x\n"))
    store.checks.record(NewPing("job", PingKind.SUCCESS, time.time(), "cli"))
    dry = store.retention.prune(time.time() - 90 * 86400, keep=1, dry_run=True)
    assert (dry.pings, dry.runs) == (3, 3)
    report = store.retention.prune(time.time() - 90 * 86400, keep=1)
    assert (report.pings, report.runs) == (3, 3)
    assert store.checks.count("job") == 1 and len(store.runs.history("job")) == 1
    state = store.checks.state("job")
    assert state is not None and state.pings == 4 and state.last_ping > old + 2
    store.close()


def test_keys_are_masked_and_a_readable_keyed_file_is_warned_about(config_dir):
    conf = conf_with(config_dir, f"checks:\n  - {{name: job, period: 60, key: {KEY}}}\n")
    os.chmod(conf / "checks.yaml", 0o644)
    r = cli("--config-dir", str(conf), "validate")
    assert r.returncode == 0, r.stderr
    assert "checks.yaml: warning: holds check keys and is readable by others" in r.stdout
    shown = cli("--config-dir", str(conf), "show-config", "--json").stdout
    assert KEY not in shown and json.loads(shown)["checks"][0]["key"] == "***"
    assert KEY not in cli("--config-dir", str(conf), "list", "--json").stdout


def test_shell_completion_offers_check_names_to_ping_and_wrap(config_dir):
    conf = conf_with(config_dir, "checks:\n  - {name: offsite, period: 60}\n")
    assert cli("--config-dir", str(conf), "__complete", "checks").stdout == "offsite\n"
    script = cli("completion", "bash").stdout
    assert '"ping 0") _script_monitor_names checks' in script
    assert '"wrap 0") _script_monitor_names checks' in script


def test_concurrent_pings_over_http_are_all_recorded_on_postgresql(tmp_path, pg_url, marker):
    from concurrent.futures import ThreadPoolExecutor

    from conftest import empty_pg

    empty_pg(pg_url)
    conf = conf_with(
        tmp_path / "c", "checks:\n" + "".join(f"  - {{name: c{i}, period: 60}}\n" for i in range(5))
    )
    server = Server(conf, env={"SCRIPT_MONITOR_STORE_URL": pg_url}, marker=marker)
    try:
        paths = [f"/ping/c{i % 5}" + ("/start" if i % 2 else "/0") for i in range(200)]
        with server.client() as c, ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda p: c.post(p, content=b"ok\n").status_code, paths))
        assert codes == [200] * 200
        checks = server.get("/api/v1/checks", token=TOKEN).json()
        assert sum(c["pings"] for c in checks) == 200
    finally:
        server.stop()
    counted = cli_json(
        "--config-dir", str(conf), "list", "--json", env={"SCRIPT_MONITOR_STORE_URL": pg_url}
    )
    assert {c["name"]: c["check"]["pings"] for c in counted if c["kind"] == "check"} == {
        f"c{i}": 40 for i in range(5)
    }


def test_when_a_scheduled_check_is_due_and_late():
    from datetime import UTC, datetime

    from script_monitor.check_time import deadline, due_after, status
    from script_monitor.config import Check, Config, Settings
    from script_monitor.states import CheckStatus, PingKind
    from script_monitor.store import CheckState

    config = Config(Path("/nonexistent"), Settings(), {}, {})
    check = Check(name="nightly", schedule="0 3 * * *", timezone="UTC", grace=600)

    def at(day: int, hour: int, minute: int, second: int = 0) -> float:
        return datetime(2026, 12, day, hour, minute, second, tzinfo=UTC).timestamp()

    # a ping a little early (clock skew) or late counts for its tick: the next is tomorrow's
    for ping in (at(7, 2, 59, 57), at(7, 3, 0), at(7, 3, 9)):
        assert due_after(config, check, ping) == at(8, 3, 0)
    state = CheckState("nightly", at(1, 0, 0), at(7, 3, 1), PingKind.SUCCESS, 1, None, 1)
    assert deadline(config, check, state, at(7, 4, 0)) == at(8, 3, 10)
    assert status(config, check, state, at(8, 3, 9)) is CheckStatus.UP
    assert status(config, check, state, at(8, 3, 11)) is CheckStatus.LATE
    assert status(config, check, state, at(7, 4, 0), last_failed=True) is CheckStatus.DOWN
    never = CheckState("nightly", at(7, 12, 0), None, None, None, None, 0)
    assert status(config, check, never, at(8, 3, 5)) is CheckStatus.NEW
    assert status(config, check, never, at(8, 3, 11)) is CheckStatus.LATE
    started = CheckState("nightly", at(1, 0, 0), at(8, 3, 0), PingKind.START, 2, 2, 2)
    assert status(config, check, started, at(8, 3, 9)) is CheckStatus.STARTED
    assert status(config, check, started, at(8, 3, 11)) is CheckStatus.LATE
