"""Descendants that leave the process group *and* clear their environment are still ended.

script-monitor is a child subreaper: such orphans re-parent to it and are ended with
the run they belong to (docs/CONTRACT.md: a timeout ends the script's whole process tree).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from helpers import cli, make_config, popen, wait_for

# `env -i setsid -f sleep N`: a new session, an empty environment, and its parent (setsid
# -f forks) exits at once, so the sleep is an orphan with nothing that names its run.
ESCAPE = "env -i setsid -f sleep {marker}"


def alive(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if argv[:2] == [b"sleep", marker.encode()] and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


@pytest.fixture
def marker():
    """A sleep length no other process uses; every such sleep is killed afterwards."""
    value = str(700000 + (os.getpid() * 7 + int(time.time() * 1000)) % 99999)
    yield value
    for pid in alive(value):
        os.kill(pid, signal.SIGKILL)


def test_the_documented_escape_is_ended_on_timeout(config_dir, marker):
    """RELIABILITY.md's old reproducer: `env -i setsid -f sleep N; sleep 30`, timeout 1."""
    make_config(
        config_dir,
        {"t": {"command": f"{ESCAPE.format(marker=marker)}; sleep 30", "timeout": 1}},
        settings={"execution": {"kill_grace": 1}},
    )
    r = cli("--config-dir", str(config_dir), "run", "t", timeout=60)
    assert r.returncode == 1, r.stderr
    assert wait_for(lambda: alive(marker) == [], timeout=5), "the escaped sleep survived"


def test_escapes_in_a_parallel_group_are_ended_with_their_runs(config_dir, marker):
    cmd = f"{ESCAPE.format(marker=marker)}; sleep 30"
    make_config(
        config_dir,
        {f"p{i}": {"command": cmd, "timeout": 1} for i in range(3)},
        [{"name": "g", "execution": "parallel", "scripts": ["p0", "p1", "p2"]}],
        settings={"execution": {"kill_grace": 1}},
    )
    r = cli("--config-dir", str(config_dir), "run-group", "g", timeout=60)
    assert r.returncode == 1
    assert wait_for(lambda: alive(marker) == [], timeout=5)


def test_an_escape_of_another_live_run_is_left_alone(config_dir, marker):
    """Run `quick` times out while `keeper` (started earlier, still running, exits 0 later)
    has an escaped child of its own: that one is not quick's to end."""
    other = str(int(marker) + 1)
    make_config(
        config_dir,
        {
            "keeper": {"command": f"{ESCAPE.format(marker=other)}; sleep 3", "timeout": 20},
            "quick": {"command": "sleep 0.5; sleep 30", "timeout": 1},
        },
        [{"name": "g", "execution": "parallel", "scripts": ["keeper", "quick"]}],
        settings={"execution": {"kill_grace": 1}},
    )
    try:
        r = cli("--config-dir", str(config_dir), "run-group", "g", timeout=60)
        assert r.returncode == 1
        assert len(alive(other)) == 1, "a live run's background process was ended"
    finally:
        for pid in alive(other):
            os.kill(pid, signal.SIGKILL)


def test_an_interrupt_ends_escapes(config_dir, marker):
    make_config(
        config_dir,
        {"t": f"{ESCAPE.format(marker=marker)}; sleep 30"},
        settings={"execution": {"kill_grace": 1}},
    )
    p = popen("--config-dir", str(config_dir), "run", "t")
    assert wait_for(lambda: len(alive(marker)) == 1)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
    assert p.returncode == 143
    assert wait_for(lambda: alive(marker) == [], timeout=5)


def test_leftovers_kill_ends_escapes_after_a_successful_exit(config_dir, marker):
    make_config(
        config_dir,
        {"t": {"command": f"{ESCAPE.format(marker=marker)}; sleep 0.3", "leftovers": "kill"}},
        settings={"execution": {"kill_grace": 1}},
    )
    r = cli("--config-dir", str(config_dir), "run", "t", timeout=60)
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: alive(marker) == [], timeout=5)


def test_leftovers_keep_leaves_escapes_running(config_dir, marker):
    make_config(config_dir, {"t": f"{ESCAPE.format(marker=marker)}; sleep 0.3"})
    r = cli("--config-dir", str(config_dir), "run", "t", timeout=60)
    assert r.returncode == 0
    time.sleep(0.3)
    assert len(alive(marker)) == 1, "nohup-style background work must survive (cron does)"
