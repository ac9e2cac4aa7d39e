"""Monitoring (docs/MONITORING.md) end to end: duration anomalies and the learned overdue
limit told through a real webhook receiver, and what a run's process tree used, with
resource limits ending real processes.  The real CLI, real processes, the real store."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from helpers import Receiver, assert_clean_error, cli, cli_json, make_config, popen, sm, wait_for
from script_monitor.store import RunEnd, Store


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def setup(d: Path, url: str, scripts: str, on: str = "[failure, anomaly]") -> Path:
    """A config dir with one webhook channel; ``on:`` is written by hand (a bare YAML key)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(
        f'notifications:\n  channels:\n    ops: ["{url}"]\n'
        f"  default:\n    channels: [ops]\n    on: {on}\n  timeout: 5\n"
        "anomaly: {min_runs: 4, window: 6, slow: 3, fast: 0.5}\n"
    )
    (d / "scripts.yaml").write_text(scripts)
    return d


def seed(d: Path, script: str, durations: list[float]) -> None:
    """Earlier successful runs of ``script`` with these durations, as a run would record them."""
    store = Store(d / ".script-monitor")
    now = time.time() - 3600
    for i, took in enumerate(durations):
        rid = store.runs.start_run(script, "manual", now + i)
        store.runs.finish_run(rid, RunEnd("success", now + i + took, took, 0))
    store.close()


def history(d: Path, name: str) -> list[dict]:
    return cli_json("--config-dir", str(d), "history", name, "--json")


def anomalies(receiver: Receiver) -> list[dict]:
    return [p for p in receiver.posts if "UNUSUAL DURATION" in p["title"]]


SLEEPER = """
scripts:
  - name: job
    command: read p < pause; exec sleep $p
  - name: young
    command: read p < pause; exec sleep $p
  - name: quick
    command: read p < pause; exec sleep $p
"""


def test_slow_and_fast_runs_are_marked_and_notified_once_each(tmp_path, receiver):
    d = setup(tmp_path / "c", receiver.url, SLEEPER)
    seed(d, "job", [0.05] * 6)
    seed(d, "quick", [0.3] * 6)  # the fast case from a longer usual time: start-up aside
    (d / "pause").write_text("0.5")  # 10x its usual 0.05 s
    assert sm(d, "run", "job").returncode == 0
    (d / "pause").write_text("0.03")  # 10x faster than its usual 0.3 s
    assert sm(d, "run", "quick").returncode == 0
    assert [r["anomaly"] for r in history(d, "job")] == ["slow"] + [None] * 6
    assert [r["anomaly"] for r in history(d, "quick")] == ["fast"] + [None] * 6
    posts = anomalies(receiver)
    assert len(posts) == 2, receiver.posts
    assert "unusually slow" in posts[0]["message"] and "unusually fast" in posts[1]["message"]
    assert "its usual 0.05s" in posts[0]["message"] and "its usual 0.3s" in posts[1]["message"]
    notes = cli_json("--config-dir", str(d), "notifications", "--json")
    assert sorted(n["event"] for n in notes) == ["anomaly", "anomaly"]
    # each anomalous run is told once: delivering again sends nothing more
    assert sm(d, "notifications", "--deliver").returncode == 0
    assert len(anomalies(receiver)) == 2
    # the mark shows in words in the plain history
    assert "▲ slow" in sm(d, "history", "job").stdout
    assert "▼ fast" in sm(d, "history", "quick").stdout
    summary = cli_json("--config-dir", str(d), "history", "quick", "--json", "--summary")
    band = summary["summary"]["band"]
    assert band == {"median": 0.3, "low": 0.15, "high": 0.9, "runs": 6}
    assert summary["runs"][0]["anomaly"] == "fast"


def test_no_anomaly_before_min_runs_nor_when_not_listed(tmp_path, receiver):
    d = setup(tmp_path / "c", receiver.url, SLEEPER)
    seed(d, "young", [0.05] * 3)  # min_runs is 4
    (d / "pause").write_text("0.5")
    assert sm(d, "run", "young").returncode == 0
    assert history(d, "young")[0]["anomaly"] is None
    assert anomalies(receiver) == []
    # listed in `on` or not, the run is marked; only a listed event notifies
    quiet = setup(tmp_path / "q", receiver.url, SLEEPER, on="[failure]")
    seed(quiet, "job", [0.05] * 6)
    (quiet / "pause").write_text("0.5")
    assert sm(quiet, "run", "job").returncode == 0
    assert history(quiet, "job")[0]["anomaly"] == "slow"
    assert anomalies(receiver) == []


def test_a_run_past_its_learned_limit_is_overdue_once(tmp_path, receiver, marker):
    d = setup(
        tmp_path / "c",
        receiver.url,
        f"""
scripts:
  - name: job
    command: sleep 30 # {marker}
""",
        on="[overdue]",
    )
    seed(d, "job", [0.2] * 6)  # learned limit: 3 x 0.2 s
    proc = popen("--config-dir", str(d), "run", "job")
    try:
        assert wait_for(lambda: (d / "logs" / "job").exists())
        time.sleep(0.8)
        for _ in range(2):
            r = cli("--config-dir", str(d), "watchdog", "--json")
            assert r.returncode == 1, r.stderr
            (item,) = json.loads(r.stdout)["overdue"]
            assert item["name"] == "job" and item["max_duration"] == pytest.approx(0.6)
            assert "past its learned limit of 0.6s" in item["detail"]
        overdue = [p for p in receiver.posts if " OVERDUE on " in p["title"]]
        assert len(overdue) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_a_script_without_history_or_with_anomaly_off_has_no_learned_limit(tmp_path, marker):
    d = make_config(
        tmp_path / "c",
        {"job": f"sleep 30 # {marker}", "off": {"command": "true", "anomaly": {"enabled": False}}},
    )
    seed(d, "off", [0.01] * 20)
    proc = popen("--config-dir", str(d), "run", "job")
    try:
        assert wait_for(lambda: (d / "logs" / "job").exists())
        r = cli("--config-dir", str(d), "watchdog", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["overdue"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert sm(d, "run", "off").returncode == 0
    assert history(d, "off")[0]["anomaly"] is None  # 10x slower, but not judged
    summary = cli_json("--config-dir", str(d), "history", "off", "--json", "--summary")
    assert summary["summary"]["band"] is None and summary["summary"]["anomaly"]["enabled"] is False


# ---------------------------------------------------------------- resource use

ALLOC = "python3 -c 'x = b\"\\1\" * (300 << 20); import time; time.sleep(0.1)'"
BUSY = (
    "python3 -c 'import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass'"
)


def test_peak_memory_and_cpu_of_the_whole_tree_are_recorded(tmp_path):
    d = make_config(
        tmp_path / "c",
        {
            "alloc": ALLOC,
            # the busy loop runs in a grandchild: sh -> sh -> python
            "parent": {"command": ["sh", "-c", f'sh -c "{BUSY}"; echo done']},
            # an orphan: its parent exits at once, so it is re-parented to us; the run
            # waits for its file, then for it to end
            "orphan": {
                "command": [
                    "sh",
                    "-c",
                    f"( ({BUSY}; touch finished) & ); until [ -e finished ]; do sleep 0.02;"
                    " done; sleep 0.2",
                ]
            },
        },
    )
    for name in ("alloc", "parent", "orphan"):
        assert sm(d, "run", name).returncode == 0
    (alloc,) = history(d, "alloc")
    assert abs(alloc["max_rss"] - (300 << 20)) <= 0.1 * (300 << 20), alloc
    for name in ("parent", "orphan"):
        (run,) = history(d, name)
        assert run["cpu_user"] + run["cpu_system"] >= 0.35, (name, run)
    (orphan,) = history(d, "orphan")
    assert orphan["max_rss"] > 0
    text = sm(d, "history", "alloc").stdout
    assert "MAX RSS" in text and "313M" in text.splitlines()[1]


def test_limits_end_the_tree_and_fail_the_run(tmp_path, marker):
    d = make_config(
        tmp_path / "c",
        {
            "big": {
                "command": 'python3 -c \'x = b"\\1" * (300 << 20); import time;'
                f" time.sleep(30) # {marker}'",
                "limits": {"max_rss": "100M"},
            },
            "spin": {
                "command": ["sh", "-c", f"python3 -c 'while 1: pass # {marker}'"],
                "limits": {"max_cpu": 0.3},
            },
        },
    )
    started = time.monotonic()
    r = sm(d, "run", "big")
    assert r.returncode == 1
    assert "exceeded limits.max_rss (100M)" in r.stderr
    r = sm(d, "run", "spin")
    assert r.returncode == 1
    assert time.monotonic() - started < 10
    (big,) = history(d, "big")
    (spin,) = history(d, "spin")
    assert big["status"] == spin["status"] == "failed"
    assert big["detail"].startswith("exceeded limits.max_rss (100M)")
    assert spin["detail"].startswith("exceeded limits.max_cpu (0.3s)")
    assert spin["cpu_user"] + spin["cpu_system"] >= 0.3
    from helpers import marked_pids

    assert wait_for(lambda: not marked_pids(marker), timeout=5)  # the whole tree is gone


def test_limits_in_a_group_run(tmp_path, marker):
    d = make_config(
        tmp_path / "c",
        {
            "spin": {
                "command": ["sh", "-c", f"python3 -c 'while 1: pass # {marker}'"],
                "limits": {"max_cpu": 0.3},
            },
            "ok": "true",
        },
        groups=[{"name": "g", "execution": "parallel", "scripts": ["spin", "ok"]}],
    )
    r = sm(d, "run-group", "g", timeout=30)
    assert r.returncode == 1
    (spin,) = history(d, "spin")
    assert spin["status"] == "failed" and "limits.max_cpu" in spin["detail"]
    assert history(d, "ok")[0]["status"] == "success"


@pytest.mark.parametrize(
    "limits, message",
    [
        ({"max_rss": "lots"}, "key 'limits.max_rss': not a size: 'lots'"),
        ({"max_rss": "100X"}, "not a size: '100X'"),
        ({"max_cpu": 0}, "limits.max_cpu"),
        ({"max_cpu": "ten"}, "limits.max_cpu"),
        ({"swap": 1}, "unknown key 'swap'"),
    ],
)
def test_bad_limits_are_clear_errors(tmp_path, limits, message):
    d = make_config(tmp_path / "c", {"a": {"command": "true", "limits": limits}})
    r = sm(d, "validate")
    assert_clean_error(r)
    assert "scripts.yaml:" in r.stderr and message in r.stderr, r.stderr


@pytest.mark.parametrize(
    "anomaly, message",
    [
        ({"slow": 0.5}, "anomaly.slow"),
        ({"fast": 1.5}, "anomaly.fast"),
        ({"fast": 0.5, "slow": 0.5}, "anomaly"),
        ({"window": 5, "min_runs": 10}, "must be at least anomaly.min_runs (10)"),
        ({"mean": 3}, "unknown key 'mean'"),
    ],
)
def test_bad_anomaly_settings_are_clear_errors(tmp_path, anomaly, message):
    d = make_config(tmp_path / "c", {"a": {"command": "true", "anomaly": anomaly}})
    r = sm(d, "validate")
    assert_clean_error(r)
    assert "scripts.yaml:" in r.stderr and message in r.stderr, r.stderr


def test_the_run_page_shows_the_mark_and_what_the_run_used(tmp_path):
    from web_helpers import Server

    d = make_config(tmp_path / "c", {"job": "true"})
    seed(d, "job", [1.0] * 3)
    store = Store(d / ".script-monitor")
    rid = store.runs.start_run("job", "manual", time.time() - 9)
    store.runs.finish_run(
        rid, RunEnd("success", time.time(), 9.0, 0, usage=(1.5, 0.25, 300 << 20), anomaly="slow")
    )
    plain = store.runs.start_run("job", "manual", time.time() - 1)
    store.runs.finish_run(plain, RunEnd("success", time.time(), 1.0, 0))
    store.close()
    server = Server(d)
    try:
        page = server.get(f"/runs/{rid}").text
        assert "▲ slow" in page and "unusually slow" in page
        assert "1.75 s" in page and "1.50 s user, 0.25 s system" in page
        assert "Peak memory</dt><dd>300.0 MiB" in page
        other = server.get(f"/runs/{plain}").text  # nothing measured: nothing shown
        assert "▲" not in other and "Peak memory" not in other and "<dt>CPU" not in other
        assert server.get(f"/api/v1/runs/{rid}").json()["anomaly"] == "slow"
    finally:
        server.stop()


def test_a_script_anomaly_is_checked_over_the_global_one(tmp_path):
    d = make_config(
        tmp_path / "c",
        {"a": {"command": "true", "anomaly": {"min_runs": 80}}},
        settings={"anomaly": {"window": 50}},
    )
    r = sm(d, "validate")
    assert_clean_error(r)
    assert "scripts.yaml:2: error: script 'a': anomaly.window (50) must be at least" in r.stderr
    ok = make_config(
        tmp_path / "ok",
        {"a": {"command": "true", "anomaly": {"min_runs": 80, "window": 100}}},
        settings={"anomaly": {"slow": 4}},
    )
    assert sm(ok, "validate").returncode == 0
