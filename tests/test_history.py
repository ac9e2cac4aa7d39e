"""History and logs: concurrency, lost runs, interrupts, rotation, huge output, safe log
access, and every monitoring command (list, history, logs, clear-logs, list-groups, --json).
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from helpers import (
    MAIN,
    assert_clean_error,
    cli_json,
    events,
    history,
    kill_marked,
    make_config,
    marked_pids,
    popen,
    probe,
    sm,
    wait_for,
)
from script_monitor.logs import RULE
from script_monitor.store import RunEnd, Store

RUN_KEYS = {
    "attempt",
    "host",
    "cpu_user",
    "cpu_system",
    "max_rss",
    "anomaly",
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
}


def log_files(conf: Path, name: str) -> list[Path]:
    d = conf / "logs" / name
    return sorted(d.iterdir()) if d.exists() else []


def run_id_of(log: Path) -> int:
    head = log.read_bytes()[:2000].decode()
    return int(head.split("run: ")[1].split()[0])


def db(conf: Path) -> sqlite3.Connection:
    return sqlite3.connect(conf / ".script-monitor" / "history.db")


# ---------------------------------------------------------------- concurrency


@pytest.mark.slow
def test_thirty_concurrent_runs_all_recorded_with_complete_logs(config_dir):
    names = [f"job{i}" for i in range(10)]
    make_config(config_dir, {n: f"echo begin {n}; sleep 0.3; echo end {n}" for n in names})
    procs = [popen("--config-dir", str(config_dir), "run", n, "-q") for n in names * 3]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 30, [e for _, e in results if e]
    with db(config_dir) as con:
        rows = con.execute("SELECT script, status FROM runs").fetchall()
    assert len(rows) == 30
    assert all(status == "success" for _, status in rows)
    for n in names:
        assert [r["status"] for r in history(config_dir, n)] == ["success"] * 3
        logs = log_files(config_dir, n)
        assert len(logs) == 3
        for log in logs:
            text = log.read_text()
            assert text.startswith(RULE + f"\nscript:  {n}\n")
            assert f"\nbegin {n}\nend {n}\n{RULE}\nfinished: success, exit code 0" in text
            assert text.endswith(RULE + "\n")
    assert len({run_id_of(log) for n in names for log in log_files(config_dir, n)}) == 30


# ---------------------------------------------------------------- dead recorders


def test_sigkill_of_script_monitor_leaves_a_lost_run_not_running(config_dir, marker):
    make_config(
        config_dir,
        {
            "victim": {
                "command": "echo started; if [ ! -e release ]; then sleep 60; fi",
                "env": {"MARKER": marker},
            }
        },
        [{"name": "g", "scripts": ["victim"]}],
    )
    proc = popen("--config-dir", str(config_dir), "run-group", "g")
    try:
        assert wait_for(lambda: bool(marked_pids(marker)), timeout=20)
        assert history(config_dir, "victim")[0]["status"] == "running"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    kill_marked(marker)  # the script itself outlives a SIGKILLed parent
    [run] = history(config_dir, "victim")
    assert run["status"] == "lost"
    assert "died" in run["detail"]
    r = sm(config_dir, "history", "victim")
    assert " lost " in r.stdout
    assert sm(config_dir, "list").stdout.splitlines()[1].split()[1] == "lost"
    group = cli_json("--config-dir", str(config_dir), "list-groups", "--json")[0]
    assert group["last_run"]["status"] == "lost"
    # the log up to the kill is kept and readable
    assert "started\n" in sm(config_dir, "logs", "victim").stdout
    # a later run of the same script works
    (config_dir / "release").touch()
    r = sm(config_dir, "run", "victim")
    assert r.returncode == 0, r.stderr
    assert [x["status"] for x in history(config_dir, "victim")] == ["success", "lost"]


def test_sigterm_during_a_parallel_group_records_interrupted_and_skipped(config_dir, marker):
    names = ["a", "b", "c", "d", "e"]
    make_config(
        config_dir,
        {n: {"command": probe(n, 60), "env": {"MARKER": marker}} for n in names},
        [{"name": "par", "execution": "parallel", "max_parallel_workers": 3, "scripts": names}],
        {"execution": {"kill_grace": 1}},
    )
    proc = popen("--config-dir", str(config_dir), "run-group", "par")
    try:
        assert wait_for(lambda: len(events(config_dir)) == 3, timeout=20)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert not marked_pids(marker)
    running = set(events(config_dir))
    for n in names:
        [run] = history(config_dir, n)
        expected = "interrupted" if n in running else "skipped"
        assert run["status"] == expected, (n, run)
        assert run["group"] == "par"
    assert "  Interrupted: " in out
    r = sm(config_dir, "list-groups")
    assert ", interrupted, " in r.stdout
    with db(config_dir) as con:
        [(status,)] = con.execute("SELECT status FROM group_runs").fetchall()
    assert status == "interrupted"


# ---------------------------------------------------------------- rotation


def test_rotation_by_count_keeps_exactly_n_logs(config_dir):
    make_config(
        config_dir,
        {
            "r": {
                "command": "echo run $SCRIPT_MONITOR_RUN_ID",
                "log_limit": {"type": "count", "value": 3},
            },
            "d": "echo default",
        },
        settings={"default_log_limit": {"type": "count", "value": 2}},
    )
    for _ in range(5):
        assert sm(config_dir, "run", "r", "-q").returncode == 0
        assert sm(config_dir, "run", "d", "-q").returncode == 0
    runs = history(config_dir, "r")
    assert len(runs) == 5
    kept = sorted(run_id_of(p) for p in log_files(config_dir, "r"))
    assert kept == sorted(r["id"] for r in runs[:3])
    assert [r["log_state"] for r in runs] == ["ok"] * 3 + ["rotated"] * 2
    assert len(log_files(config_dir, "d")) == 2  # default_log_limit
    text = sm(config_dir, "history", "r").stdout
    assert text.count("(log rotated)") == 2
    r = sm(config_dir, "logs", "r", "--run", str(runs[-1]["id"]))
    assert_clean_error(r)
    assert "was rotated away" in r.stderr
    assert f"run {runs[0]['id']}\n" in sm(config_dir, "logs", "r").stdout


@pytest.mark.parametrize("mode", ["serial", "parallel"])
def test_rotation_during_a_group_run_leaves_exactly_the_newest_logs(config_dir, mode):
    """In a group the rotated logs are deleted on a helper thread; when the command
    returns they are all gone, and the logs kept are those of the newest runs."""
    make_config(
        config_dir,
        {
            "r": {
                "command": "echo run $SCRIPT_MONITOR_RUN_ID",
                "log_limit": {"type": "count", "value": 2},
            }
        },
        [{"name": "g", "execution": mode, "max_parallel_workers": 3, "scripts": ["r"] * 7}],
    )
    for _ in range(2):
        assert sm(config_dir, "run-group", "g").returncode == 0
    runs = history(config_dir, "r")
    assert len(runs) == 14
    kept = sorted(run_id_of(p) for p in log_files(config_dir, "r"))
    assert kept == sorted(r["id"] for r in runs if r["log_state"] == "ok")
    assert len(kept) == 2
    if mode == "serial":
        assert kept == sorted(r["id"] for r in runs[:2])


def test_rotation_by_age_removes_old_logs(config_dir):
    make_config(
        config_dir, {"a": {"command": "echo fresh", "log_limit": {"type": "age", "value": 2}}}
    )
    # An old run, recorded three days ago with its log, as an earlier process left it.
    store = Store(config_dir / ".script-monitor")
    old_start = time.time() - 3 * 86400
    rel = "a/20000101-000000.000000-1.log"
    (config_dir / "logs" / "a").mkdir(parents=True)
    (config_dir / "logs" / rel).write_text("old output\n")
    old = store.runs.start_run("a", "manual", old_start, log_path=rel)
    store.runs.finish_run(old, RunEnd("success", old_start + 1, 1.0, 0))
    recent_rel = "a/recent.log"
    (config_dir / "logs" / recent_rel).write_text("recent output\n")
    recent = store.runs.start_run("a", "manual", time.time() - 86400, log_path=recent_rel)
    store.runs.finish_run(recent, RunEnd("success", time.time() - 86399, 1.0, 0))
    store.close()
    assert sm(config_dir, "run", "a").returncode == 0
    assert not (config_dir / "logs" / rel).exists()
    assert (config_dir / "logs" / recent_rel).exists()
    runs = history(config_dir, "a")
    assert [r["id"] for r in runs][1:] == [recent, old]
    assert [r["log_state"] for r in runs] == ["ok", "ok", "rotated"]


# ---------------------------------------------------------------- huge output


# Runs script-monitor in this very process and, at its exit, writes the peak resident
# memory of this process's own address space (VmHWM).  ru_maxrss from wait4 cannot be
# used: Linux carries the pre-exec high-water mark over exec, i.e. pytest's own size.
PEAK_WRAPPER = """
import atexit, runpy, sys
def report(path=sys.argv[1]):
    status = open("/proc/self/status").read()
    peak = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    open(path, "w").write(peak.split()[1])
atexit.register(report)
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _peak_rss_kb(tmp: Path, args: list[str]) -> tuple[int, int]:
    """Run script-monitor; return (exit code, its peak RSS in kB)."""
    report = tmp / f"peak-{uuid.uuid4().hex}"
    r = subprocess.run(
        [sys.executable, "-c", PEAK_WRAPPER, str(report), str(MAIN), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=600,
    )
    return r.returncode, int(report.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["echoed", "quiet", "masked"])
def test_a_gigabyte_of_output_keeps_memory_flat_and_every_byte(config_dir, variant):
    size = 1_000_000_000
    if shutil.disk_usage(config_dir).free < 3 * size:
        pytest.skip("needs 3 GB of free disk space for a 1 GB log")
    (config_dir / "s.env").write_text("TOKEN=not-in-the-output\n")
    spec = {"command": f"head -c {size} /dev/zero", "timeout": 0}
    if variant == "masked":  # a secret routes the output through a masking pipe
        spec["env_file"] = "s.env"
    make_config(config_dir, {"big": spec, "small": "echo hi"})
    quiet = ["-q"] if variant == "quiet" else []
    code, baseline = _peak_rss_kb(
        config_dir.parent, ["--config-dir", str(config_dir), "run", "small", *quiet]
    )
    assert code == 0
    try:
        code, peak = _peak_rss_kb(
            config_dir.parent, ["--config-dir", str(config_dir), "run", "big", *quiet]
        )
        assert code == 0
        [log] = log_files(config_dir, "big")
        total = log.stat().st_size
        with open(log, "rb") as f:
            head = f.read(4096)
            f.seek(total - 4096)
            tail = f.read()
        header = head[: head.index((RULE + "\n").encode(), len(RULE) + 1) + len(RULE) + 1]
        footer = tail[tail.rindex(("\n" + RULE + "\nfinished:").encode()) :]
        assert footer.startswith(f"\n{RULE}\nfinished: success, exit code 0".encode())
        assert total - len(header) - len(footer) == size
        assert tail[: -len(footer)].count(b"\0") == len(tail) - len(footer)
    finally:
        for log in log_files(config_dir, "big"):
            log.unlink()
    print(f"\n1 GB output ({variant}): peak RSS {peak} kB, baseline {baseline} kB")
    assert peak < baseline + 30_000, (peak, baseline)


# ---------------------------------------------------------------- safe log access


@pytest.fixture
def two_scripts(config_dir):
    make_config(config_dir, {"a": "echo output of a", "b": "echo output of b"})
    assert sm(config_dir, "run", "a", "-q").returncode == 0
    assert sm(config_dir, "run", "b", "-q").returncode == 0
    return config_dir


def test_logs_run_of_a_missing_or_foreign_run_is_refused(two_scripts):
    b_id = history(two_scripts, "b")[0]["id"]
    for args, text in (
        (["logs", "a", "--run", "999999"], "no run 999999 of script 'a'"),
        (["logs", "a", "--run", str(b_id)], f"no run {b_id} of script 'a'"),
        (["logs", "../../etc/passwd"], "unknown script '../../etc/passwd'"),
        (["logs", "a/../b"], "unknown script"),
    ):
        r = sm(two_scripts, *args)
        assert_clean_error(r)
        assert text in r.stderr
        assert r.stdout == ""
    for bad in ("0", "-1", "../1", "1.5", "abc"):
        r = sm(two_scripts, "logs", "a", "--run", bad)
        assert_clean_error(r)


@pytest.mark.parametrize(
    "crafted", ["../../../../../../etc/hostname", "/etc/hostname", "a/../../outside.txt"]
)
def test_a_tampered_log_path_never_reads_or_deletes_outside_the_log_dir(two_scripts, crafted):
    outside = two_scripts / "outside.txt"
    outside.write_text("SECRET OUTSIDE\n")
    a_id = history(two_scripts, "a")[0]["id"]
    with db(two_scripts) as con:
        con.execute("UPDATE runs SET log_path = ? WHERE id = ?", (crafted, a_id))
    for args in (["logs", "a"], ["logs", "a", "--run", str(a_id)]):
        r = sm(two_scripts, *args)
        assert_clean_error(r)
        assert "outside the log directory" in r.stderr
        assert r.stdout == ""
    assert sm(two_scripts, "clear-logs", "a").returncode == 0
    assert outside.read_text() == "SECRET OUTSIDE\n"
    assert Path("/etc/hostname").exists() or crafted == "a/../../outside.txt"


def test_a_log_replaced_by_a_symlink_to_outside_is_refused(two_scripts):
    outside = two_scripts / "outside.txt"
    outside.write_text("SECRET OUTSIDE\n")
    [log] = log_files(two_scripts, "a")
    log.unlink()
    log.symlink_to(outside)
    r = sm(two_scripts, "logs", "a")
    assert_clean_error(r)
    assert "SECRET" not in r.stdout
    assert sm(two_scripts, "clear-all-logs").returncode == 0
    assert outside.read_text() == "SECRET OUTSIDE\n"


def test_a_deleted_log_file_is_a_clean_error(two_scripts):
    [log] = log_files(two_scripts, "a")
    log.unlink()
    r = sm(two_scripts, "logs", "a")
    assert_clean_error(r)
    assert "missing" in r.stderr


# ---------------------------------------------------------------- the monitoring commands


@pytest.fixture
def monitored(config_dir):
    make_config(
        config_dir,
        {
            "ok": {"command": "echo ok run $SCRIPT_MONITOR_RUN_ID", "description": "Always fine"},
            "bad": {"command": "echo bad; exit 4", "description": "Always fails"},
            "idle": {"command": "true", "description": "Never run"},
        },
        [
            {"name": "both", "execution": "parallel", "scripts": ["ok", "bad"]},
            {"name": "quiet", "scripts": ["idle"]},
        ],
    )
    return config_dir


def test_list_says_never_run_then_shows_the_last_run(monitored):
    r = sm(monitored, "list")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["SCRIPT", "STATUS", "LAST", "RUN", "DURATION", "DESCRIPTION"]
    assert lines[1].split()[:3] == ["ok", "never", "run"]
    assert all("never run" in line for line in lines[1:])
    assert lines[3].endswith("Never run")
    assert sm(monitored, "run", "ok", "-q").returncode == 0
    assert sm(monitored, "run", "bad", "-q").returncode == 1
    lines = sm(monitored, "list").stdout.splitlines()
    assert lines[1].split()[:2] == ["ok", "success"]
    assert lines[2].split()[:2] == ["bad", "failed"]
    assert lines[2].endswith("Always fails")
    assert "never run" in lines[3]
    data = cli_json("--config-dir", str(monitored), "list", "--json")
    assert [set(x) for x in data] == [{"name", "kind", "description", "last_run", "check"}] * 3
    assert {(x["kind"], x["check"]) for x in data} == {("script", None)}
    assert set(data[0]["last_run"]) == RUN_KEYS
    assert (data[1]["last_run"]["status"], data[1]["last_run"]["exit_code"]) == ("failed", 4)
    assert data[2]["last_run"] is None


def test_history_is_newest_first_with_limit_and_columns(monitored):
    for _ in range(3):
        sm(monitored, "run", "ok", "-q")
    assert sm(monitored, "run-group", "both").returncode == 1
    runs = history(monitored, "ok")
    assert [r["id"] for r in runs] == sorted((r["id"] for r in runs), reverse=True)
    assert [r["group"] for r in runs] == ["both", None, None, None]
    assert {r["trigger"] for r in runs} == {"manual"}
    assert all(set(r) == RUN_KEYS for r in runs)
    assert [r["id"] for r in history(monitored, "ok", 2)] == [r["id"] for r in runs[:2]]
    r = sm(monitored, "history", "ok", "-n", "2")
    lines = r.stdout.splitlines()
    assert lines[0].split() == [
        *("RUN", "STARTED", "DURATION", "STATUS", "EXIT", "TRIGGER", "GROUP", "CPU", "MAX", "RSS")
    ]
    assert len(lines) == 3
    first = lines[1].split()
    assert first[0] == str(runs[0]["id"])
    assert first[-6:-2] == ["success", "0", "manual", "both"]
    assert first[-2].endswith("s") and first[-1][-1] in "KMG"  # CPU seconds, peak memory
    assert lines[2].split()[-6:-2] == ["success", "0", "manual", "-"]
    bad = sm(monitored, "history", "bad").stdout.splitlines()[1].split()
    assert bad[-6:-2] == ["failed", "4", "manual", "both"]
    r = sm(monitored, "history", "idle")
    assert (r.returncode, r.stdout) == (0, "idle has never run\n")
    assert history(monitored, "idle") == []


def test_logs_shows_the_newest_or_the_chosen_run(monitored):
    for _ in range(2):
        sm(monitored, "run", "ok", "-q")
    newest, older = history(monitored, "ok")
    r = sm(monitored, "logs", "ok")
    assert r.returncode == 0
    assert f"ok run {newest['id']}\n" in r.stdout
    assert r.stdout.startswith(
        f"{RULE}\nscript:  ok\ncommand: echo ok run $SCRIPT_MONITOR_RUN_ID\n"
    )
    assert f"trigger: manual    run: {newest['id']}\n" in r.stdout
    assert f"{RULE}\nfinished: success, exit code 0, duration " in r.stdout
    r = sm(monitored, "logs", "ok", "--run", str(older["id"]))
    assert f"ok run {older['id']}\n" in r.stdout and f"run {newest['id']}\n" not in r.stdout
    r = sm(monitored, "logs", "idle")
    assert_clean_error(r)
    assert "idle has no runs yet" in r.stderr


def test_logs_follow_prints_a_running_script_live_and_returns_at_its_end(config_dir):
    make_config(
        config_dir,
        {"slow": "echo first; while [ ! -e go ]; do sleep 0.05; done; echo second"},
    )
    runner = popen("--config-dir", str(config_dir), "run", "slow", "-q")
    follower = None
    try:
        assert wait_for(lambda: bool(history(config_dir, "slow")), timeout=20)
        follower = popen("--config-dir", str(config_dir), "logs", "slow", "--follow")
        # "first" arrives while the script is still running (it waits for "go")
        line = ""
        while "first" not in line:
            line = follower.stdout.readline()
            assert line, follower.stderr.read()
        assert history(config_dir, "slow")[0]["status"] == "running"
        assert follower.poll() is None  # still following
        (config_dir / "go").touch()
        rest, err = follower.communicate(timeout=20)
        assert follower.returncode == 0, err
        assert "second\n" in rest
        assert f"{RULE}\nfinished: success" in rest
        assert runner.wait(timeout=20) == 0
    finally:
        runner.kill()
        if follower:
            follower.kill()


def test_clear_logs_removes_files_and_keeps_rows(monitored):
    for name in ("ok", "ok", "bad"):
        sm(monitored, "run", name, "-q")
    r = sm(monitored, "clear-logs", "ok")
    assert (r.returncode, r.stdout) == (0, "Cleared 2 logs of ok\n")
    assert log_files(monitored, "ok") == []
    assert len(log_files(monitored, "bad")) == 1
    runs = history(monitored, "ok")
    assert [(r["status"], r["log"], r["log_state"]) for r in runs] == [
        ("success", False, "cleared")
    ] * 2
    assert sm(monitored, "history", "ok").stdout.count("success (log cleared)") == 2
    r = sm(monitored, "logs", "ok")
    assert_clean_error(r)
    assert "was cleared" in r.stderr
    r = sm(monitored, "clear-all-logs")
    assert (r.returncode, r.stdout) == (0, "Cleared 1 log\n")
    assert log_files(monitored, "bad") == []
    assert history(monitored, "bad")[0]["log_state"] == "cleared"
    assert len(history(monitored, "ok")) == 2
    assert sm(monitored, "clear-all-logs").stdout == "Cleared 0 logs\n"


def test_list_groups_shows_mode_scripts_and_last_run(monitored):
    r = sm(monitored, "list-groups")
    assert r.stdout.split("\n\n")[0].splitlines()[:3] == [
        "Group: both [execution: parallel]",
        "  Scripts: ok, bad",
        "  Last run: never",
    ]
    assert sm(monitored, "run-group", "both").returncode == 1
    assert sm(monitored, "run-group", "quiet").returncode == 0
    lines = sm(monitored, "list-groups").stdout.splitlines()
    last = [line for line in lines if line.startswith("  Last run: ")]
    assert len(last) == 2
    assert ", failed, " in last[0] and ", success, " in last[1]
    data = cli_json("--config-dir", str(monitored), "list-groups", "--json")
    assert [set(g) for g in data] == [
        {
            "name",
            "description",
            "execution",
            "stop_on_error",
            "max_parallel_workers",
            "schedule",
            "scripts",
            "depends_on",
            "last_run",
        }
    ] * 2
    assert set(data[0]["last_run"]) == {"id", "status", "trigger", "started", "ended", "detail"}
    assert (data[0]["execution"], data[0]["scripts"], data[0]["max_parallel_workers"]) == (
        "parallel",
        ["ok", "bad"],
        5,
    )
    assert data[0]["last_run"]["status"] == "failed"


def test_json_timestamps_and_durations_are_consistent(monitored):
    from datetime import datetime

    sm(monitored, "run", "ok", "-q")
    [run] = history(monitored, "ok")
    started = datetime.fromisoformat(run["started"])
    ended = datetime.fromisoformat(run["ended"])
    assert started.tzinfo is not None
    assert 0 <= (ended - started).total_seconds() <= run["duration"] + 1
    assert abs(started.timestamp() - time.time()) < 60
    assert json.loads(json.dumps(run)) == run


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kolkata", "Africa/Monrovia"]
)
def test_log_times_match_datetime_in_every_zone(zone, monkeypatch):
    """The header's start time and the log's name use the time module (cheaper per run);
    they must say exactly what datetime says, odd historical offsets included."""
    import random
    from datetime import datetime

    from script_monitor.logs import local_iso, new_log_name

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        rng = random.Random(zone)
        for ts in [0.0, 1e9, 1790000000.5, -2e9, *(rng.uniform(-3e9, 4e9) for _ in range(300))]:
            local = datetime.fromtimestamp(ts)
            assert local_iso(ts) == local.astimezone().isoformat(timespec="seconds")
            assert new_log_name("s", ts).startswith(f"s/{local.strftime('%Y%m%d-%H%M%S')}.")
    finally:
        monkeypatch.undo()
        time.tzset()
