"""Several schedulers sharing one PostgreSQL store (docs/DISTRIBUTED.md): one leads, the
others stand by; every due tick is handled once, even while the lead changes hands.

Real scheduler processes on the machine's PostgreSQL (the session's database, emptied
per test), one config directory each, sharing an accelerated clock (a minute every real
second); executions are counted with a marker file every run appends to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import empty_pg
from helpers import MAIN, direct_sql, make_config, sm, until
from web_helpers import Server

TICK = 60.0  # simulated seconds between ticks ("* * * * *")
SPEED = 60.0  # so one tick every real second
LEASE_TTL = 2.0


class _Store:
    def __init__(self, url: str):
        self.url = url


def _conf(directory: Path, url: str, marker: Path) -> Path:
    return make_config(
        directory,
        {"beat": f"echo $SCRIPT_MONITOR_RUN_ID >> {marker}"},
        [{"name": "tick", "schedule": "* * * * *", "timezone": "UTC", "scripts": ["beat"]}],
        {"store": {"url": url}, "scheduling": {"lease_ttl": LEASE_TTL}},
    )


def _start(conf: Path, clock: str) -> subprocess.Popen:
    log = open(conf / "scheduler.log", "w")  # noqa: SIM115
    p = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "scheduler"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SCRIPT_MONITOR_CLOCK": clock},
        start_new_session=True,
    )
    log.close()
    return p


def _ticks(url: str) -> list[tuple[float, str, str, float]]:
    return direct_sql(
        _Store(url),
        "SELECT due, outcome, scheduler, handled FROM ticks WHERE group_name = 'tick' ORDER BY due",
    )


def _fired(url: str) -> list:
    return [t for t in _ticks(url) if t[1] == "fired"]


def _leader_pid(url: str) -> int | None:
    rows = direct_sql(
        _Store(url),
        "SELECT holder FROM leases WHERE name = 'scheduler'"
        " AND expires >= EXTRACT(EPOCH FROM clock_timestamp())",
    )
    return int(rows[0][0].split("|")[2]) if rows else None


def _stop(procs: list[subprocess.Popen]) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(40))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            codes.append(p.wait())
    return codes


def _check_every_tick_once(url: str, marker: Path) -> list:
    """No gap between the first and the last tick handled, and each fired tick ran once."""
    ticks = _ticks(url)
    dues = [t[0] for t in ticks]
    assert dues == [dues[0] + i * TICK for i in range(len(dues))], ticks  # none lost
    fired = [t for t in ticks if t[1] == "fired"]
    lines = marker.read_text().split() if marker.exists() else []
    assert len(lines) == len(set(lines)) == len(fired), (lines, ticks)  # none doubled
    groups = direct_sql(
        _Store(url),
        "SELECT COUNT(*) FROM group_runs WHERE group_name = 'tick' AND trigger = 'schedule'"
        " AND status NOT IN ('skipped', 'missed')",
    )[0][0]
    assert groups == len(fired)
    return ticks


@pytest.mark.parametrize("count", [2, 3])
def test_schedulers_sharing_a_store_fire_each_tick_once(pg_url, tmp_path, count):
    empty_pg(pg_url)
    marker = tmp_path / "marker"
    confs = [_conf(tmp_path / f"s{i}", pg_url, marker) for i in range(count)]
    anchor = time.time() + 1.5
    clock = f"{1893456030.0}x{SPEED}@{anchor}"  # 2030-01-01 00:00:30 UTC at anchor
    procs = [_start(c, clock) for c in confs]
    try:
        until(lambda: len(_fired(pg_url)) >= 5, timeout=30)
        members = json.loads(sm(confs[0], "list-schedules", "--json").stdout)["scheduler"]
        roles = sorted(m["role"] for m in members["schedulers"])
        assert roles == ["leader"] + ["standby"] * (count - 1), members
        status = json.loads(sm(confs[-1], "status", "--json").stdout)
        assert len(status["scheduler"]["schedulers"]) == count
        text = sm(confs[1], "status").stdout
        assert text.count("leader ") == 1 and text.count("standby ") == count - 1, text
        server = Server(confs[0])  # the web's status data and /metrics say the same
        try:
            health = server.get("/api/v1/health").json()["scheduler"]["schedulers"]
            assert sorted(m["role"] for m in health) == roles
            metrics = server.get("/metrics").text
            up = [
                line
                for line in metrics.splitlines()
                if line.startswith("script_monitor_scheduler_up{")
            ]
            assert len(up) == count and sum('role="leader"' in line for line in up) == 1, up
        finally:
            server.stop()
    finally:
        codes = _stop(procs)
    assert codes == [0] * count, [(c / "scheduler.log").read_text() for c in confs]
    ticks = _check_every_tick_once(pg_url, marker)
    assert len({t[2] for t in ticks}) == 1  # one leader handled them all
    assert all(t[1] == "fired" for t in ticks), ticks
    for c in confs:
        assert "Traceback" not in (c / "scheduler.log").read_text()


@pytest.mark.parametrize("count", [2, 3])
def test_a_standby_takes_over_from_a_killed_leader_losing_and_doubling_no_tick(
    pg_url, tmp_path, count
):
    empty_pg(pg_url)
    marker = tmp_path / "marker"
    confs = [_conf(tmp_path / f"s{i}", pg_url, marker) for i in range(count)]
    anchor = time.time() + 1.5
    clock = f"{1893456030.0}x{SPEED}@{anchor}"
    procs = [_start(c, clock) for c in confs]
    try:
        until(lambda: len(_fired(pg_url)) >= 3 and _leader_pid(pg_url), timeout=30)
        pid = _leader_pid(pg_url)
        leader = next(p for p in procs if p.pid == pid)
        # Between two ticks: just after the latest fired tick's script has run.
        seen = len(_fired(pg_url))
        until(lambda: len(marker.read_text().split()) >= seen, timeout=5)
        os.killpg(leader.pid, signal.SIGKILL)
        killed = time.time()
        leader.wait()
        until(lambda: _leader_pid(pg_url) not in (None, pid), timeout=LEASE_TTL + 5)
        new = _leader_pid(pg_url)
        until(
            lambda: len([t for t in _fired(pg_url) if f"|{new}|" in t[2]]) >= 3,
            timeout=LEASE_TTL + 10,
        )
    finally:
        codes = _stop([p for p in procs if p is not leader])
    assert codes == [0] * (count - 1)
    ticks = _check_every_tick_once(pg_url, marker)
    takeover = min(t[3] for t in ticks if f"|{new}|" in t[2])
    assert takeover - killed <= LEASE_TTL + TICK / SPEED + 1.0, (takeover - killed, ticks)
    assert {t[2].split("|")[2] for t in ticks} == {str(pid), str(new)}
