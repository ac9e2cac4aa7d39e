"""The watchdog (docs/NOTIFICATIONS.md): missed ticks, overdue runs and a dead scheduler,
through the real CLI, the real scheduler and a real webhook receiver.  ``SCRIPT_MONITOR_CLOCK``
(the scheduler's test clock) moves the checker's "now" instead of waiting minutes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import MAIN, cli, popen, wait_for
from script_monitor.watchdog import unmatched
from test_notify import Receiver, setup


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def watchdog(d: Path, at: float | None = None) -> tuple[int, dict]:
    env = {"SCRIPT_MONITOR_CLOCK": f"{at:.3f}"} if at is not None else None
    r = cli("--config-dir", str(d), "watchdog", "--json", env=env)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def test_unmatched_gives_each_start_to_one_tick():
    ticks = [0.0, 60.0, 120.0, 180.0]
    assert unmatched(ticks, [1.0, 61.0, 121.0, 181.0], 300) == []
    assert unmatched(ticks, [1.0, 130.0], 300) == [120.0, 180.0]  # 130 counts for 60 only
    assert unmatched(ticks, [], 300) == ticks
    assert unmatched(ticks, [450.0], 300) == [0.0, 60.0, 120.0]  # too late for 0 .. 120
    assert unmatched([100.0], [97.0], 300) == []  # a few seconds early: clock skew


ON = "[failure, missed, overdue]"
SCHEDULED = """
scripts:
  - name: tick
    command: "true"
"""


def scheduled_group(expr: str) -> str:
    return f"""
    groups:
      - name: every
        schedule: "{expr}"
        scripts: [tick]
    """


def test_missed_ticks_are_reported_and_notified_once(tmp_path, receiver):
    d = setup(
        tmp_path / "c",
        [receiver.url],
        SCHEDULED,
        scheduled_group("* * * * *"),
        extra="scheduling:\n  missed_grace: 60\n",
        on=ON,
    )
    # A run by cron (trigger schedule) now: its tick counts as seen.
    assert (
        cli("--config-dir", str(d), "run-group", "every", "--trigger", "schedule").returncode == 0
    )
    ran = time.time()
    seen_tick = ran // 60 * 60
    base = seen_tick + 30 - 300  # half past a minute: no tick lies near any "now" below
    code, first = watchdog(d, base)
    assert code == 0 and first["missed"] == [] and first["ok"]  # the first check only sets
    code, second = watchdog(d, base + 420)  # ticks in (base - 60, base + 360]
    assert code == 1 and not second["ok"]
    [missed] = second["missed"]
    assert missed["group"] == "every"
    assert missed["count"] == 6  # seven ticks, one of which ran
    assert "6 scheduled ticks" in missed["detail"]
    assert len(receiver.posts) == 1
    post = receiver.posts[0]
    assert post["title"] == f"script-monitor: every MISSED on {os.uname().nodename}"
    assert "did not start within scheduling.missed_grace (60s)" in post["message"]
    code, third = watchdog(d, base + 421)  # no new tick: nothing missed, nothing sent
    assert code == 0 and third["missed"] == []
    assert len(receiver.posts) == 1
    r = cli("--config-dir", str(d), "watchdog", env={"SCRIPT_MONITOR_CLOCK": f"{base + 422}"})
    assert r.returncode == 0 and "all is well" in r.stdout


def test_nothing_is_missed_while_scheduling_is_paused(tmp_path, receiver):
    d = setup(
        tmp_path / "c",
        [receiver.url],
        SCHEDULED,
        scheduled_group("* * * * *"),
        extra="scheduling:\n  enabled: false\n  missed_grace: 60\n",
        on=ON,
    )
    base = time.time() // 60 * 60 + 30
    assert watchdog(d, base)[0] == 0
    assert watchdog(d, base + 600)[0] == 0
    text = (d / "config.yaml").read_text().replace("enabled: false", "enabled: true")
    (d / "config.yaml").write_text(text)
    assert watchdog(d, base + 601)[0] == 0  # the paused stretch is not reported later
    code, report = watchdog(d, base + 780)
    assert code == 1 and report["missed"][0]["count"] == 3
    assert len(receiver.posts) == 1


@pytest.mark.slow
def test_overdue_runs_are_notified_once(tmp_path, receiver, marker):
    d = setup(
        tmp_path / "c",
        [receiver.url],
        f"""
        scripts:
          - name: slow
            command: sleep 30 # {marker}
            max_duration: 1
        """,
        """
        groups:
          - name: nightly
            max_duration: 1
            scripts: [slow]
        """,
        on=ON,
    )
    proc = popen("--config-dir", str(d), "run-group", "nightly")
    try:
        assert wait_for(lambda: (d / "logs" / "slow").exists())
        time.sleep(1.5)
        code, report = watchdog(d)
        assert code == 1
        kinds = sorted((o["kind"], o["name"]) for o in report["overdue"])
        assert kinds == [("group", "nightly"), ("script", "slow")]
        assert all("past its max_duration of 1s" in o["detail"] for o in report["overdue"])
        assert len(receiver.posts) == 2
        assert all(" nightly OVERDUE on " in p["title"] for p in receiver.posts)
        code, again = watchdog(d)
        assert code == 1 and len(again["overdue"]) == 2
        assert len(receiver.posts) == 2  # once per run
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert watchdog(d)[0] == 0  # ended (interrupted): no longer overdue


@pytest.mark.slow
def test_a_killed_scheduler_is_reported(tmp_path, receiver):
    d = setup(
        tmp_path / "c",
        [receiver.url],
        SCHEDULED,
        scheduled_group("0 0 1 1 *"),
        on=ON,
    )
    code, report = watchdog(d)
    assert code == 0 and report["scheduler"]["state"] == "never"  # cron-only: no alarm
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(d), "scheduler"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = d / ".script-monitor" / "history.db"

    def seen() -> bool:
        try:
            con = sqlite3.connect(db)
            try:
                rows = con.execute("SELECT 1 FROM watch_positions WHERE group_name LIKE ':%'")
                return bool(rows.fetchall())
            finally:
                con.close()
        except sqlite3.Error:
            return False

    try:
        assert wait_for(seen, 30), "the scheduler ran no watchdog check"
        code, report = watchdog(d)
        assert code == 0 and report["scheduler"]["state"] == "ok"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    later = time.time() + 200
    code, report = watchdog(d, later)
    assert code == 1 and report["scheduler"]["state"] == "down"
    assert len(receiver.posts) == 1
    assert " scheduler MISSED on " in receiver.posts[0]["title"]
    assert "is down" in receiver.posts[0]["message"]
    code, report = watchdog(d, later + 60)
    assert code == 1 and len(receiver.posts) == 1  # reported again, notified once
    r = cli("--config-dir", str(d), "watchdog", env={"SCRIPT_MONITOR_CLOCK": f"{later + 61}"})
    assert r.returncode == 1 and "DOWN    scheduler" in r.stdout
