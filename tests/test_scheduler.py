"""The scheduler: pure decisions, and the real daemon in a child process.

Most daemon tests use the accelerated clock (``SCRIPT_MONITOR_CLOCK=EPOCHxSPEED``,
a documented test hook): at 60x one scheduled minute passes every real second,
while the scripts themselves run in real time.  One test runs on the real clock
across a real minute boundary (marked slow).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from helpers import MAIN, cli, group_runs, until, write
from script_monitor import cron
from script_monitor.schedule_time import ON_TIME, decide, overlap_action

T0 = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp()  # a Tuesday, 30 s before a minute


# ---------------------------------------------------------------- helpers


class Daemon:
    """A `script-monitor scheduler` child process with its stderr in a file."""

    def __init__(self, conf: Path, tmp: Path, clock: str | None, *extra: str):
        env = dict(os.environ)
        env.pop("SCRIPT_MONITOR_CLOCK", None)
        if clock:
            env["SCRIPT_MONITOR_CLOCK"] = clock
        self.log_path = tmp / f"scheduler-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(MAIN), "--config-dir", str(conf), "scheduler", *extra],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def start(daemons: list, conf: Path, tmp: Path, clock: str | None = None, *extra: str) -> Daemon:
    d = Daemon(conf, tmp, clock, *extra)
    daemons.append(d)
    return d


def statuses(conf: Path, group: str) -> list[str]:
    return [r["status"] for r in group_runs(conf, group)]


def scheduler_config(conf: Path, groups: str, settings: str = "", scripts: str = "") -> None:
    write(
        conf,
        "scripts.yaml",
        """
        scripts:
          - name: quick
            command: "true"
          - name: slow
            command: sleep 2.5
          - name: bad
            command: exit 3
        """
        + scripts,
    )
    write(conf, "groups.yaml", groups)
    if settings:
        write(conf, "config.yaml", settings)


# ---------------------------------------------------------------- pure decisions


def test_decide_runs_an_on_time_tick():
    d = decide([100.0], 100.5, "skip", 3600)
    assert d.run == 100.0 and d.missed == []


def test_decide_catchup_latest_runs_only_the_latest_within_grace():
    d = decide([0.0, 60.0, 120.0], 120 + 600, "latest", 3600)
    assert d.run == 120.0 and d.missed == [0.0, 60.0]
    d = decide([0.0, 60.0], 60 + 7200, "latest", 3600)
    assert d.run is None and d.missed == [0.0, 60.0] and "catchup_grace" in d.reason


def test_decide_catchup_skip_records_late_ticks_as_missed():
    d = decide([0.0, 60.0], 60 + ON_TIME + 1, "skip", 3600)
    assert d.run is None and d.missed == [0.0, 60.0]
    d = decide([0.0, 60.0], 60 + 5, "skip", 3600)  # the latest is on time: it runs
    assert d.run == 60.0 and d.missed == [0.0]


def test_overlap_actions():
    assert overlap_action("skip", 0, False) == "start"
    assert overlap_action("skip", 1, False) == "skip"
    assert overlap_action("queue", 1, False) == "queue"
    assert overlap_action("queue", 1, True) == "skip"  # at most one waiting
    assert overlap_action("allow", 3, False) == "start"


# ---------------------------------------------------------------- the daemon


@pytest.mark.slow
def test_daemon_fires_skips_reloads_and_stops(config_dir, tmp_path, daemons):
    conf = config_dir
    groups = """
        groups:
          - name: tick
            schedule: "* * * * *"
            timezone: UTC
            scripts: [quick]
          - name: slowpoke
            schedule: "* * * * *"
            timezone: UTC
            scripts: [slow]
          - name: failing
            schedule: "* * * * *"
            timezone: UTC
            scripts: [bad]
        """
    scheduler_config(conf, groups)
    d = start(daemons, conf, tmp_path, f"{T0}x60")

    # fires every (accelerated) minute, trigger schedule; a failing group does not stop it
    until(lambda: statuses(conf, "tick").count("success") >= 3)
    assert {r["trigger"] for r in group_runs(conf, "tick")} == {"schedule"}
    assert "failed" in statuses(conf, "failing")

    # the 2.5 s group overlaps the next ticks: they are recorded as skipped, with the reason
    skipped = until(lambda: [r for r in group_runs(conf, "slowpoke") if r["status"] == "skipped"])
    assert "still going (overlap: skip)" in skipped[0]["detail"]

    # other commands see it alive; a second scheduler is refused
    r = cli("--config-dir", str(conf), "list-schedules")
    assert f"scheduler: running (pid {d.proc.pid})" in r.stdout, r.stdout
    second = cli("--config-dir", str(conf), "scheduler", timeout=30)
    assert second.returncode == 1
    assert f"already running for this config directory (pid {d.proc.pid})" in second.stderr

    # a group added while it runs is picked up
    write(
        conf,
        "groups.yaml",
        groups
        + """
          - name: added
            schedule: "* * * * *"
            timezone: UTC
            scripts: [quick]
        """,
    )
    until(lambda: "success" in statuses(conf, "added"))
    assert "added: added" in d.log()

    # an invalid edit is logged and ignored: the previous configuration keeps firing
    rejected = d.log().count("rejected; the previous one stays in use")
    (conf / "groups.yaml").write_text("groups:\n  - name: [broken\n")
    until(lambda: d.log().count("rejected; the previous one stays in use") > rejected)
    assert "groups.yaml:" in d.log()
    before = len(group_runs(conf, "added"))
    until(lambda: len(group_runs(conf, "added")) >= before + 2)

    # SIGTERM while a group runs: no new runs, the running one finishes, clean exit
    until(lambda: statuses(conf, "slowpoke")[-1:] == ["running"], interval=0.05)
    assert d.stop() == 0
    final = group_runs(conf, "slowpoke")[-1]
    assert final["status"] == "success"
    assert "interrupted" not in statuses(conf, "slowpoke")  # reloads did not disturb runs
    assert "scheduler stopped (SIGTERM)" in d.log()
    assert "Traceback" not in d.log()
    counts = {g: len(group_runs(conf, g)) for g in ("tick", "added", "slowpoke")}
    time.sleep(1.5)
    assert {g: len(group_runs(conf, g)) for g in counts} == counts
    write(conf, "groups.yaml", groups)
    r = cli("--config-dir", str(conf), "list-schedules")
    assert "scheduler: not running" in r.stdout


def test_sighup_reloads_a_change_no_stat_shows(config_dir, tmp_path, daemons):
    conf = config_dir
    text = """
        groups:
          - name: hup
            schedule: "0 0 1 1 *"
            timezone: UTC
            scripts: [quick]
        """
    scheduler_config(conf, text)
    path = conf / "groups.yaml"
    d = start(daemons, conf, tmp_path, f"{T0}x60")
    until(lambda: "started for" in d.log())
    # same size, same inode, same mtime: only SIGHUP can tell the scheduler
    st = path.stat()
    with path.open("r+") as f:
        f.write(path.read_text().replace("0 0 1 1 *", "* * * * *"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    time.sleep(2.5)
    assert group_runs(conf, "hup") == []
    d.proc.send_signal(signal.SIGHUP)
    until(lambda: "success" in statuses(conf, "hup"))
    assert "configuration reloaded (SIGHUP); changed: hup" in d.log()
    assert d.stop() == 0


@pytest.mark.slow
def test_queue_and_allow_policies(config_dir, tmp_path, daemons):
    conf = config_dir
    scheduler_config(
        conf,
        """
        groups:
          - name: queued
            schedule: "* * * * *"
            timezone: UTC
            overlap: queue
            scripts: [slow]
          - name: allowed
            schedule: "* * * * *"
            timezone: UTC
            overlap: allow
            scripts: [slow]
        """,
    )
    d = start(daemons, conf, tmp_path, f"{T0}x60")
    until(lambda: statuses(conf, "queued").count("success") >= 2, timeout=30)
    assert d.stop() == 0
    queued = [r for r in group_runs(conf, "queued") if r["status"] != "skipped"]
    for earlier, later in itertools.pairwise(queued):
        assert later["started"] >= earlier["ended"] - 0.05  # one at a time
    skipped = [r for r in group_runs(conf, "queued") if r["status"] == "skipped"]
    assert skipped and "already queued" in skipped[0]["detail"]
    assert "queued behind the running one" in d.log()
    allowed = [r for r in group_runs(conf, "allowed") if r["ended"]]
    overlapping = [(a, b) for a, b in itertools.pairwise(allowed) if b["started"] < a["ended"]]
    assert overlapping, "overlap: allow should let runs overlap"


def test_shutdown_grace_ends_hanging_trees(config_dir, tmp_path, daemons):
    conf = config_dir
    pidfile = tmp_path / "hang.pid"
    scheduler_config(
        conf,
        """
        groups:
          - name: hang
            schedule: "* * * * *"
            timezone: UTC
            scripts: [hanger]
          - name: tick
            schedule: "* * * * *"
            timezone: UTC
            scripts: [quick]
        """,
        settings="""
        scheduling:
          shutdown_grace: 1
        execution:
          kill_grace: 1
        """,
        scripts=f"""
          - name: hanger
            command: echo $$ > {pidfile}; exec sleep 300
        """,
    )
    d = start(daemons, conf, tmp_path, f"{T0}x60")
    until(pidfile.exists)
    # a hanging group does not stop the others from firing
    until(lambda: statuses(conf, "tick").count("success") >= 3)
    assert statuses(conf, "hang")[0] == "running"
    began = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - began < 15
    assert statuses(conf, "hang")[0] == "interrupted"
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "shutdown grace is over" in d.log()


def test_catchup_after_downtime(config_dir, tmp_path, daemons):
    conf = config_dir
    scheduler_config(
        conf,
        """
        groups:
          - name: latest
            schedule: "0 * * * *"
            timezone: UTC
            scripts: [quick]
          - name: skipper
            schedule: "0 * * * *"
            timezone: UTC
            catchup: skip
            scripts: [quick]
          - name: daily
            schedule: "@daily"
            timezone: UTC
            scripts: [quick]
        """,
    )
    t = datetime(2030, 1, 1, 0, 30, tzinfo=UTC).timestamp()
    d = start(daemons, conf, tmp_path, f"{t}x60")
    until(lambda: "started for" in d.log())
    assert d.stop() == 0  # stopped at 00:30; due at 01:00, 02:00 and 03:00 while down
    t = datetime(2030, 1, 1, 3, 10, tzinfo=UTC).timestamp()
    d = start(daemons, conf, tmp_path, f"{t}x60")

    # catchup: latest (default) runs the latest missed tick once; the others are recorded
    until(lambda: "success" in statuses(conf, "latest"))
    missed = [r for r in group_runs(conf, "latest") if r["status"] == "missed"]
    assert len(missed) == 1
    assert "2 ticks missed (2030-01-01 01:00 UTC to 2030-01-01 02:00 UTC)" in missed[0]["detail"]
    assert "the scheduler was not running" in missed[0]["detail"]
    # catchup: skip records all three as missed and runs nothing
    until(lambda: statuses(conf, "skipper") == ["missed"])
    assert "3 ticks missed" in group_runs(conf, "skipper")[0]["detail"]
    assert d.stop() == 0
    assert statuses(conf, "latest").count("success") == 1
    assert statuses(conf, "daily") == []

    # beyond scheduling.catchup_grace (3600 s), even catchup: latest only records it
    t = datetime(2030, 1, 2, 2, 0, 30, tzinfo=UTC).timestamp()
    d = start(daemons, conf, tmp_path, f"{t}x60", "--once")
    assert d.proc.wait(60) == 0
    daily = group_runs(conf, "daily")
    assert [r["status"] for r in daily] == ["missed"]
    assert "older than scheduling.catchup_grace (3600s)" in daily[0]["detail"]


@pytest.mark.slow
def test_dst_transitions_in_the_daemon(config_dir, tmp_path, daemons):
    conf = config_dir
    scheduler_config(
        conf,
        """
        groups:
          - name: half_past_two
            schedule: "30 2 * * *"
            timezone: Europe/Berlin
            scripts: [quick]
          - name: three
            schedule: "0 3 * * *"
            timezone: Europe/Berlin
            scripts: [quick]
        """,
    )
    # spring forward: 02:30 does not exist on 2030-03-31; it runs once, at 03:00 CEST
    t = datetime(2030, 3, 31, 0, 58, tzinfo=UTC).timestamp()  # 01:58 CET
    d = start(daemons, conf, tmp_path, f"{t}x120")
    until(lambda: "success" in statuses(conf, "half_past_two"))
    until(lambda: "success" in statuses(conf, "three"))
    time.sleep(2)  # 4 more scheduled minutes
    assert d.stop() == 0
    assert statuses(conf, "half_past_two") == ["success"]
    assert statuses(conf, "three") == ["success"]
    assert "tick 2030-03-31 03:00 CEST" in d.log()
    # fall back: 02:30 occurs twice on 2030-10-27; it runs once, the first time
    (conf / ".script-monitor" / "scheduler-state.json").unlink()  # no catch-up from March
    t = datetime(2030, 10, 27, 0, 28, tzinfo=UTC).timestamp()  # 02:28 CEST
    d = start(daemons, conf, tmp_path, f"{t}x1200")
    until(lambda: "2030-10-27 02:30 CEST" in d.log())
    until(lambda: "03:00 CET" in d.log(), timeout=30)  # past the second 02:30 (CET)
    assert d.stop() == 0
    assert statuses(conf, "half_past_two") == ["success", "success"]
    assert "02:30 CET" not in d.log()


def test_paused_then_resumed(config_dir, tmp_path, daemons):
    conf = config_dir
    scheduler_config(
        conf,
        """
        groups:
          - name: tick
            schedule: "* * * * *"
            timezone: UTC
            scripts: [quick]
        """,
        settings="""
        scheduling:
          enabled: false
        """,
    )
    d = start(daemons, conf, tmp_path, f"{T0}x60")
    until(lambda: "scheduling is paused" in d.log())
    r = cli("--config-dir", str(conf), "list-schedules")
    assert "scheduling: paused (scheduling.enabled: false)" in r.stdout
    time.sleep(3)  # three scheduled minutes pass
    assert group_runs(conf, "tick") == []
    write(conf, "config.yaml", "scheduling:\n  enabled: true\n")
    until(lambda: "success" in statuses(conf, "tick"))
    assert "scheduling resumed" in d.log()
    assert "missed" not in statuses(conf, "tick")  # a pause is deliberate, not a miss
    assert d.stop() == 0


def test_invalid_configuration_at_start_exits_2(config_dir):
    write(config_dir, "scripts.yaml", "scripts:\n  - name: a\n    command: 'true'\n")
    write(
        config_dir,
        "groups.yaml",
        'groups:\n  - name: g\n    schedule: "5/15 * * * *"\n    scripts: [a]\n',
    )
    r = cli("--config-dir", str(config_dir), "scheduler", timeout=30)
    assert r.returncode == 2
    assert "groups.yaml:3: error: group 'g': invalid cron expression" in r.stderr
    assert "a step needs a range or '*'" in r.stderr
    assert "Traceback" not in r.stderr


def test_list_schedules_shows_next_and_last_run(config_dir):
    scheduler_config(
        config_dir,
        """
        groups:
          - name: nightly
            schedule: "30 2 * * *"
            timezone: Europe/Berlin
            scripts: [quick]
          - name: plain
            scripts: [quick]
        """,
        settings="""
        display:
          date_format: "%Y-%m-%d %H:%M"
        """,
    )
    r = cli("--config-dir", str(config_dir), "list-schedules")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("scheduler: not running\n")
    tz = cron.resolve_timezone("Europe/Berlin")
    nxt = cron.next_fire("30 2 * * *", tz, datetime.now(UTC)).strftime("%Y-%m-%d %H:%M")
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("nightly"))
    assert row.split() == [
        "nightly",
        "30",
        "2",
        "*",
        "*",
        "*",
        "Europe/Berlin",
        *nxt.split(),
        "never",
    ]
    assert "plain" not in r.stdout
    assert cli("--config-dir", str(config_dir), "run-group", "nightly").returncode == 0
    r = cli("--config-dir", str(config_dir), "list-schedules", "--json")
    data = json.loads(r.stdout)
    assert data["scheduler"]["running"] is False
    (g,) = data["groups"]
    assert g["name"] == "nightly" and g["timezone"] == "Europe/Berlin"
    berlin = datetime.fromisoformat(g["next_run"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert berlin.strftime("%Y-%m-%d %H:%M") == nxt
    assert g["next_run"] == datetime.fromisoformat(g["next_run"]).astimezone().isoformat()  # local
    assert datetime.fromisoformat(g["last_run"]["started"]).tzinfo is not None
    assert g["last_run"]["status"] == "success" and g["last_run"]["trigger"] == "manual"


@pytest.mark.slow
def test_real_clock_fires_within_a_second_of_the_minute(config_dir, tmp_path, daemons):
    conf = config_dir
    marks = tmp_path / "marks"
    scheduler_config(
        conf,
        """
        groups:
          - name: minutely
            schedule: "* * * * *"
            scripts: [stamp]
        """,
        scripts=f"""
          - name: stamp
            command: date +%s.%N >> {marks}
        """,
    )
    d = start(daemons, conf, tmp_path)
    until(lambda: "started for" in d.log())
    until(lambda: "success" in statuses(conf, "minutely"), timeout=75, interval=0.2)
    assert d.stop() == 0
    late = re.search(r"group minutely: starting \(tick .*, (\d+\.\d+)s after due\)", d.log())
    assert float(late.group(1)) < 1.0  # the scheduler started it within a second
    run = group_runs(conf, "minutely")[0]
    minute = run["started"] // 60 * 60
    assert run["started"] - minute < 2.0  # and recorded it (generous: 2 busy cores)
    stamped = float(marks.read_text().split()[0])
    assert stamped - minute < 3.0  # the script itself was running


def test_lateness_benchmark_runs_quick():
    bench = MAIN.parent / "bench" / "scheduler_lateness.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["ticks"] >= 5
    assert 0 <= figures["median_ms"] <= figures["max_ms"] < 1000  # within a second


@pytest.mark.slow
def test_stall_is_noticed_and_caught_up(config_dir, tmp_path, daemons):
    conf = config_dir
    scheduler_config(
        conf,
        """
        groups:
          - name: tick
            schedule: "* * * * *"
            timezone: UTC
            scripts: [quick]
        """,
    )
    d = start(daemons, conf, tmp_path, f"{T0}x60")
    until(lambda: "success" in statuses(conf, "tick"))
    beat_path = conf / ".script-monitor" / "scheduler.heartbeat"
    d.proc.send_signal(signal.SIGSTOP)  # a hung scheduler: the heartbeat goes stale
    try:
        beat = json.loads(beat_path.read_text())
        beat["updated"] -= 120
        beat_path.write_text(json.dumps(beat))
        r = cli("--config-dir", str(conf), "list-schedules")
        assert f"scheduler: running (pid {d.proc.pid}), but no heartbeat for 12" in r.stdout
        assert "it may be hung" in r.stdout
        time.sleep(3.5)  # three or four scheduled minutes pass while it is stopped
    finally:
        d.proc.send_signal(signal.SIGCONT)
    missed = until(lambda: [r for r in group_runs(conf, "tick") if r["status"] == "missed"])
    assert "the scheduler was stalled" in missed[0]["detail"]
    until(lambda: statuses(conf, "tick")[-1:] == ["success"])
    assert d.stop() == 0
