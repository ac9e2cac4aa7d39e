"""The JSON API, live logs and /metrics of a real ``script-monitor serve`` process
(docs/WEB.md), against runs made by other ``script-monitor`` processes."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import MAIN, ROOT, Receiver, cli, cli_json, free_port, history, sm_json, wait_for
from web_helpers import Server, populated_config, wait_for_run, web_config


@pytest.fixture(scope="module")
def conf(tmp_path_factory):
    return populated_config(tmp_path_factory.mktemp("webapi") / "conf")


@pytest.fixture(scope="module")
def server(conf):
    s = Server(conf)
    yield s
    s.stop()


def parse_sse(lines) -> list[dict]:
    """Events as the SSE specification reads them (data lines joined with \\n)."""
    events, data, fields = [], [], {}
    for line in lines:
        if line == "":
            if data:
                events.append({"data": "\n".join(data), **fields})
            data, fields = [], {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name in ("id", "event", "retry"):
                fields[name] = value
    return events


def stream(server: Server, path: str, headers: dict | None = None, timeout: float = 30):
    """Read an event stream to its end; return [(arrival time, event)]."""
    out = []
    hdrs = {"Accept": "text/event-stream", **(headers or {})}
    with (
        httpx.Client(base_url=server.url, timeout=timeout) as c,
        c.stream("GET", path, headers=hdrs) as r,
    ):
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        pending: list[str] = []
        for line in r.iter_lines():
            pending.append(line)
            if line == "":
                for e in parse_sse(pending):
                    out.append((time.monotonic(), e))
                pending = []
    return out


# ---------------------------------------------------------------- the CLI's JSON


def test_scripts_groups_history_and_runs_equal_the_clis_json(server, conf):
    assert server.get("/api/v1/scripts").json() == cli_json(
        "--config-dir", str(conf), "list", "--json"
    )
    assert server.get("/api/v1/groups").json() == cli_json(
        "--config-dir", str(conf), "list-groups", "--json"
    )
    for name in ("quick_ok", "always_fails", "never_ran"):
        runs = sm_json(conf, "history", name, "--json")
        assert server.get(f"/api/v1/scripts/{name}/runs").json() == runs
        assert server.get(f"/api/v1/scripts/{name}/runs?limit=1").json() == runs[:1]
        for run in runs:
            assert server.get(f"/api/v1/runs/{run['id']}").json() == run
    assert len(sm_json(conf, "history", "quick_ok", "--json")) == 3  # 2 alone, 1 in the group


def test_schedules_equal_the_clis_json(server, conf):
    for _ in range(3):  # a minute may turn between the two calls: next_run moves on
        api = server.get("/api/v1/schedules").json()
        if api == sm_json(conf, "list-schedules", "--json"):
            break
    else:
        raise AssertionError(api)
    assert [g["name"] for g in api["groups"]] == ["pair"]
    assert api["scheduler"]["running"] is False


def test_health_is_ok_and_reports_the_scheduler(server):
    body = server.get("/api/v1/health").json()
    assert body["status"] == "ok"
    assert body["scheduler"] == {
        "running": False,
        "pid": None,
        "heartbeat_age": None,
        "stale": False,
        "schedulers": [],
    }
    assert body["heartbeat"] is None


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/api/v1/scripts/nope/runs", 404),
        ("GET", "/api/v1/scripts/quick_ok/runs?limit=0", 400),
        ("GET", "/api/v1/scripts/quick_ok/runs?limit=abc", 400),
        ("GET", "/api/v1/scripts/quick_ok/runs?limit=10001", 400),
        ("GET", "/api/v1/scripts/quick_ok/runs?limit=-1", 400),
        ("GET", "/api/v1/runs/999999", 404),
        ("GET", "/api/v1/runs/abc", 400),
        ("GET", "/api/v1/runs/0", 400),
        ("GET", "/api/v1/runs/99999999999999999999999", 400),
        ("GET", "/api/v1/runs/999999/log", 404),
        ("GET", "/api/v1/runs/1/log?offset=x", 400),
        ("GET", "/api/v1/runs/1/log?download=maybe", 400),
        ("POST", "/api/v1/scripts/nope/run", 404),
        ("POST", "/api/v1/groups/nope/run", 404),
        ("GET", "/api/v1/no-such-thing", 404),
        ("DELETE", "/api/v1/scripts", 405),
    ],
)
def test_errors_are_json_with_their_code(server, method, path, code):
    with server.client() as c:
        r = c.request(method, path)
    assert r.status_code == code, r.text
    assert r.headers["content-type"] == "application/json"
    assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_a_bad_last_event_id_is_400(server):
    r = server.get(
        "/api/v1/runs/1/log", headers={"Accept": "text/event-stream", "Last-Event-ID": "later"}
    )
    assert r.status_code == 400


def test_a_group_run_is_the_same_object_as_history_group_json(server, conf):
    cli_out = sm_json(conf, "history", "--group", "pair", "--json")
    api = server.get(f"/api/v1/group-runs/{cli_out['id']}").json()
    assert api == cli_out
    assert api["group"] == "pair" and {r["script"] for r in api["runs"]} == {
        "quick_ok",
        "always_fails",
    }
    page = server.get(f"/group-runs/{cli_out['id']}")
    assert page.status_code == 200 and 'class="timeline"' in page.text
    assert server.get("/api/v1/group-runs/999999").status_code == 404
    assert server.get("/api/v1/group-runs/0").status_code == 400
    assert server.get("/group-runs/x%3Cb%3E").status_code == 400
    sm_dir = ("--config-dir", str(conf))
    text = cli(*sm_dir, "history", "--group", "pair").stdout
    assert f"Group run {cli_out['id']} of pair: failed" in text and "ATTEMPT" in text
    assert cli(*sm_dir, "history", "--group", "nope").returncode == 2
    assert cli(*sm_dir, "history", "quick_ok", "--group", "pair").returncode == 2
    assert cli(*sm_dir, "history").returncode == 2


def test_the_openapi_document_lists_every_endpoint(server):
    doc = server.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/api/v1/scripts",
        "/api/v1/scripts/{name}/runs",
        "/api/v1/scripts/{name}/run",
        "/api/v1/groups",
        "/api/v1/groups/{name}/run",
        "/api/v1/schedules",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/log",
        "/api/v1/group-runs/{id}",
        "/api/v1/health",
        "/api/v1/audit",
        "/api/v1/checks",
        "/api/v1/checks/{name}",
        "/api/v1/openapi.json",
    }
    for kind in ("scripts", "groups"):
        refusals = doc["paths"][f"/api/v1/{kind}/{{name}}/run"]["post"]["responses"]
        assert {"202", "403", "404", "409", "429"} <= set(refusals)
        assert "Retry-After" in refusals["429"]["headers"]


# ---------------------------------------------------------------- runs started from the web


def test_a_run_started_by_the_api_is_its_own_process_and_outlives_the_server(tmp_path, marker):
    conf = web_config(tmp_path / "conf")
    server = Server(conf, marker=marker)
    try:
        r = server.post("/api/v1/scripts/slow_lines/run")
        assert (r.status_code, r.json()) == (202, {"accepted": True})
        run = wait_for_run(conf, "slow_lines", "running")
        assert run["trigger"] == "api"
        assert server.get(f"/api/v1/runs/{run['id']}").json()["status"] == "running"
    finally:
        server.stop()  # the server goes away while the run goes on
    assert history(conf, "slow_lines")[0]["status"] == "running"
    done = wait_for_run(conf, "slow_lines", "success", timeout=30)
    assert done["id"] == run["id"] and done["trigger"] == "api"
    again = Server(conf, marker=marker)  # and a new server shows what happened meanwhile
    try:
        assert again.get(f"/api/v1/runs/{run['id']}").json() == done
    finally:
        again.stop()


def test_a_group_started_by_the_api_is_recorded_with_trigger_api(server, conf):
    before = sm_json(conf, "list-groups", "--json")[0]["last_run"]["id"]
    assert server.post("/api/v1/groups/pair/run").status_code == 202
    assert wait_for(lambda: sm_json(conf, "list-groups", "--json")[0]["last_run"]["id"] > before)
    assert wait_for(lambda: sm_json(conf, "list-groups", "--json")[0]["last_run"]["ended"])
    last = sm_json(conf, "list-groups", "--json")[0]["last_run"]
    assert last["trigger"] == "api" and last["status"] == "failed"  # always_fails is in it
    assert history(conf, "quick_ok")[0]["trigger"] == "api"


# ---------------------------------------------------------------- logs


def _raw_log(conf, name: str, run_id: int) -> bytes:
    r = subprocess.run(
        [
            sys.executable,
            str(MAIN),
            "--config-dir",
            str(conf),
            "logs",
            name,
            "--run",
            str(run_id),
            "--raw",
        ],
        capture_output=True,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_log_as_text_is_the_whole_file(server, conf):
    run = history(conf, "xss_probe")[0]
    r = server.get(f"/api/v1/runs/{run['id']}/log")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.content == _raw_log(conf, "xss_probe", run["id"])
    assert "content-disposition" not in r.headers
    r = server.get(f"/api/v1/runs/{run['id']}/log?download=true")
    assert r.headers["content-disposition"] == f'attachment; filename="xss_probe-{run["id"]}.log"'


def test_log_events_rebuild_the_log_their_ids_are_byte_offsets_and_resume(server, conf):
    run = history(conf, "always_fails")[0]
    raw = _raw_log(conf, "always_fails", run["id"])
    events = [e for _, e in stream(server, f"/api/v1/runs/{run['id']}/log")]
    assert events[-1] == {"data": "failed", "event": "end"}
    data = events[:-1]
    assert "".join(e["data"] for e in data) == raw.decode()
    for e in data:  # each id is the byte offset just after the event's data
        assert raw[: int(e["id"])].decode().endswith(e["data"])
    assert int(data[-1]["id"]) == len(raw)
    middle = raw.index(b"about to fail")
    for headers, query in (({"Last-Event-ID": str(middle)}, ""), ({}, f"?offset={middle}")):
        rest = stream(server, f"/api/v1/runs/{run['id']}/log{query}", headers)
        assert "".join(e["data"] for _, e in rest[:-1]) == raw[middle:].decode()
        assert rest[-1][1]["event"] == "end"


def test_log_events_follow_a_running_run_as_it_writes(server, conf, marker):
    before = history(conf, "slow_lines", 1)
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "run", "--quiet", "slow_lines"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SM_TEST_MARKER": marker},
    )
    try:
        assert wait_for(lambda: history(conf, "slow_lines", 1) != before)
        run = history(conf, "slow_lines", 1)[0]
        started = time.monotonic()
        events = stream(server, f"/api/v1/runs/{run['id']}/log")
    finally:
        proc.wait(30)
    text = "".join(e["data"] for _, e in events if "event" not in e)
    assert [f"line {i}" for i in range(1, 31)] == [
        line for line in text.splitlines() if line.startswith("line ")
    ]
    assert events[-1][1] == {"data": "success", "event": "end"}
    with_lines = [t - started for t, e in events if "line " in e["data"]]
    assert len(with_lines) >= 5  # many events, not one at the end
    assert with_lines[-1] - with_lines[0] > 3  # spread over the run's 6 seconds
    assert text.encode() == _raw_log(conf, "slow_lines", run["id"])


def test_a_cleared_log_is_404_and_a_path_outside_the_log_dir_is_refused(tmp_path):
    conf = web_config(tmp_path / "conf")
    cli("--config-dir", str(conf), "run", "quick_ok")
    cli("--config-dir", str(conf), "run", "xss_probe")
    db = sqlite3.connect(conf / ".script-monitor" / "history.db")
    db.execute("UPDATE runs SET log_path = '../scripts.yaml' WHERE script = 'xss_probe'")
    db.commit()
    db.close()
    cli("--config-dir", str(conf), "clear-logs", "quick_ok")
    server = Server(conf)
    try:
        cleared, outside = history(conf, "quick_ok")[0], history(conf, "xss_probe")[0]
        for run in (cleared, outside):
            r = server.get(f"/api/v1/runs/{run['id']}/log")
            assert r.status_code == 404, r.text
            assert "scripts:" not in r.text
            page = server.get(f"/runs/{run['id']}")
            assert page.status_code == 200 and run["script"] in page.text
            assert "command:" not in page.text  # nothing of scripts.yaml, nor of the log
        assert "was cleared" in server.get(f"/api/v1/runs/{cleared['id']}/log").json()["error"]
    finally:
        server.stop()


@pytest.mark.slow
def test_a_big_log_is_shown_by_its_tail_and_never_read_whole(tmp_path):
    size = 50_000_000
    line = "a line of a big log, fifty bytes long, or so...."
    command = f"yes '{line}' | head -c {size}; echo the last line"
    conf = web_config(tmp_path / "conf", more={"big": command})
    cli("--config-dir", str(conf), "run", "--quiet", "big")
    run = history(conf, "big")[0]
    assert run["status"] == "success"
    server = Server(conf)
    try:
        rss0 = server.rss_kib()
        page = server.get(f"/runs/{run['id']}")
        assert page.status_code == 200
        assert len(page.content) < 100_000
        assert "the last line" in page.text
        assert re.search(r"showing the last 6\d\.\d KiB of 4\d\.\d MiB", page.text)
        with server.client() as c, c.stream("GET", f"/api/v1/runs/{run['id']}/log") as r:
            assert int(r.headers["content-length"]) > size
            got = sum(len(chunk) for chunk in r.iter_bytes())
        assert got == int(r.headers["content-length"])
        near_end = got - 1000
        tail = stream(server, f"/api/v1/runs/{run['id']}/log?offset={near_end}")
        text = "".join(e["data"] for _, e in tail[:-1])
        assert len(text) == 1000 and "the last line\n" in text and text.endswith("=" * 60 + "\n")
        assert server.rss_kib() - rss0 < 40 * 1024  # far less than the log
    finally:
        server.stop()


# ---------------------------------------------------------------- metrics


def metrics(server: Server) -> dict[tuple[str, tuple], float]:
    r = server.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m, name: str, **labels) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


def test_metrics_count_the_history_made_by_other_processes(server, conf):
    m = metrics(server)
    names = ["quick_ok", "always_fails", "slow_lines", "xss_probe", "never_ran"]
    for name in names:
        runs = [r for r in history(conf, name) if r["status"] != "running"]
        for status in ("success", "failed", "timeout", "skipped", "interrupted", "lost"):
            expected = sum(1 for r in runs if r["status"] == status)
            assert value(m, "script_monitor_runs_total", script=name, status=status) == expected
        timed = [r for r in runs if r["status"] in ("success", "failed")]
        count = value(m, "script_monitor_run_duration_seconds_count", script=name)
        assert count == len(timed)
        total = value(m, "script_monitor_run_duration_seconds_sum", script=name)
        # the JSON rounds each duration to the millisecond
        assert total == pytest.approx(sum(r["duration"] for r in timed), abs=0.001 * len(timed))
        ok = [r for r in runs if r["status"] == "success"]
        last_ok = value(m, "script_monitor_last_success_timestamp_seconds", script=name)
        if ok:
            from datetime import datetime

            assert last_ok == pytest.approx(
                datetime.fromisoformat(ok[0]["ended"]).timestamp(), abs=1
            )
        else:
            assert last_ok == 0
        success = value(m, "script_monitor_last_run_success", script=name)
        assert success == (1 if runs and runs[0]["status"] == "success" else 0)
        assert value(m, "script_monitor_running", script=name) == 0
        # what each run's tree used (docs/MONITORING.md); a script never measured has no series
        measured = [r for r in runs if r["max_rss"] is not None]
        cpu_count = value(m, "script_monitor_run_cpu_seconds_count", script=name)
        rss_count = value(m, "script_monitor_run_max_rss_bytes_count", script=name)
        if measured:
            assert cpu_count == rss_count == len(measured)
            cpu = value(m, "script_monitor_run_cpu_seconds_sum", script=name)
            assert cpu == pytest.approx(
                sum(r["cpu_user"] + r["cpu_system"] for r in measured), abs=0.002 * len(measured)
            )
            peak = value(m, "script_monitor_run_max_rss_bytes_sum", script=name)
            assert peak == sum(r["max_rss"] for r in measured)
        else:
            assert cpu_count is None and rss_count is None
        for kind in ("slow", "fast"):
            marked = sum(1 for r in runs if r["anomaly"] == kind)
            assert value(m, "script_monitor_run_anomalies_total", script=name, kind=kind) == marked
    assert value(m, "script_monitor_run_max_rss_bytes_count", script="quick_ok") >= 1
    assert value(m, "script_monitor_last_run_timestamp_seconds", script="never_ran") == 0
    assert value(m, "script_monitor_group_next_run_timestamp_seconds", group="pair") > time.time()
    assert value(m, "script_monitor_group_next_run_timestamp_seconds", group="rest") is None
    pair = sm_json(conf, "list-groups", "--json")[0]["last_run"]
    assert pair["status"] == "failed"
    assert value(m, "script_monitor_group_last_run_success", group="pair") == 0
    assert value(m, "script_monitor_group_last_run_timestamp_seconds", group="pair") > 0
    assert value(m, "script_monitor_group_last_run_timestamp_seconds", group="rest") == 0
    assert not any(k[0].startswith("script_monitor_scheduler_heartbeat") for k in m)
    assert not any(k[0].startswith("script_monitor_notifications") for k in m)
    assert "# TYPE script_monitor_notifications_total gauge" in server.get("/metrics").text


def test_notification_messages_are_counted_by_channel_and_state(tmp_path):
    """Messages made by `run` processes show in /metrics: sent to a live receiver, pending
    (or failed) for a channel whose port refuses."""
    receiver = Receiver()
    try:
        conf = web_config(
            tmp_path / "conf",
            {
                "notifications": {
                    "channels": {
                        "live": [receiver.url],
                        "dead": [f"json://127.0.0.1:{free_port()}/x"],
                    },
                    "default": {"channels": ["live", "dead"], "on": ["failure"]},
                    "timeout": 2,
                }
            },
        )
        assert cli("--config-dir", str(conf), "run", "always_fails").returncode == 1
        assert wait_for(lambda: receiver.posts)
        server = Server(conf)
        try:
            m = metrics(server)
            assert value(m, "script_monitor_notifications_total", channel="live", state="sent") == 1
            stuck = [
                value(m, "script_monitor_notifications_total", channel="dead", state=state)
                for state in ("pending", "failed")
            ]
            assert sum(v or 0 for v in stuck) == 1
        finally:
            server.stop()
    finally:
        receiver.close()


def test_metrics_follow_new_runs_running_and_lost_and_never_go_down(server, conf, marker):
    before = metrics(server)
    cli("--config-dir", str(conf), "run", "always_fails")
    after = metrics(server)
    key = ("script_monitor_runs_total", (("script", "always_fails"), ("status", "failed")))
    assert after[key] == before[key] + 1
    assert value(after, "script_monitor_last_run_success", script="always_fails") == 0
    # A run whose script-monitor process dies is running, then lost for everyone.
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "run", "--quiet", "slow_lines"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SM_TEST_MARKER": marker},
        start_new_session=True,
    )
    try:
        assert wait_for(
            lambda: value(metrics(server), "script_monitor_running", script="slow_lines") == 1
        )
        lost_before = value(
            metrics(server), "script_monitor_runs_total", script="slow_lines", status="lost"
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_for(
        lambda: value(metrics(server), "script_monitor_running", script="slow_lines") == 0
    )
    final = metrics(server)
    assert value(final, "script_monitor_runs_total", script="slow_lines", status="lost") == (
        lost_before + 1
    )
    assert history(conf, "slow_lines", 1)[0]["status"] == "lost"
    for k, v in before.items():
        if k[0] == "script_monitor_runs_total":
            assert final[k] >= v


def test_a_changed_configuration_is_picked_up(tmp_path):
    conf = web_config(tmp_path / "conf")
    server = Server(conf)
    try:
        assert "added_later" not in server.get("/api/v1/scripts").text
        web_config(conf, more={"added_later": "true"})
        assert wait_for(lambda: "added_later" in server.get("/api/v1/scripts").text, 10)
        (conf / "scripts.yaml").write_text("scripts: [oops\n")  # invalid: the last good one stays
        assert wait_for(lambda: server.get("/api/v1/health").json()["config_error"], 10)
        assert "added_later" in server.get("/api/v1/scripts").text
        assert "configuration has an error" in server.get("/").text
    finally:
        server.stop()


def test_the_scripts_answer_is_cached_until_someone_writes(server, conf):
    first = server.get("/api/v1/scripts")
    again = server.get("/api/v1/scripts", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    cli("--config-dir", str(conf), "run", "quick_ok")
    changed = server.get("/api/v1/scripts", headers={"If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200
    assert changed.json() == sm_json(conf, "list", "--json")
    gz = server.get("/api/v1/scripts", headers={"Accept-Encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip" and gz.json() == changed.json()


def test_serve_refuses_a_busy_port_cleanly(server, conf):
    r = cli("--config-dir", str(conf), "serve", "--port", str(server.port), timeout=30)
    assert r.returncode == 2
    assert "cannot listen on 127.0.0.1" in r.stderr and "Traceback" not in r.stderr


def test_a_page_is_the_same_compressed_or_not(server):
    with server.client() as c:
        c.get("/")  # the session cookie, so both answers carry the same CSRF token
        plain = c.get("/", headers={"Accept-Encoding": "identity"})
        packed = c.get("/", headers={"Accept-Encoding": "gzip"})
        again = c.get("/", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert plain.text == packed.text == again.text
    assert int(packed.headers["content-length"]) < len(plain.content) / 3
    assert plain.text.rstrip().endswith("</html>") and 'id="run-form"' in plain.text


def test_every_metric_named_in_the_docs_is_served(server):
    text = (ROOT / "docs" / "WEB.md").read_text()
    named = set(re.findall(r"script_monitor_[a-z_]+", text))
    served = server.get("/metrics").text
    families = set(re.findall(r"^# TYPE (script_monitor_[a-z_]+)", served, re.M))
    samples = set(re.findall(r"^(script_monitor_[a-z_]+)", served, re.M))
    for name in named:
        assert name in families or name in samples, name
    assert families <= {n.removesuffix("_total") for n in named} | named
