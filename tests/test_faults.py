"""Fault injection: the real CLI and real processes under timeouts, signals, crashes,
concurrency, huge or hostile output, read-only and full disks, and a locked or
corrupted history.  Each test proves one promise of docs/RELIABILITY.md.

Leftover processes are found by a unique marker in their command line and every
helper process writes a pid file, so a test can tell "ended" from "never started";
whatever a failing test leaves behind is killed in a finally.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from helpers import MAIN, cli, kill_marked, popen, runs, sm, sm_bytes

pytestmark = pytest.mark.fault

PY = sys.executable
GRACE = 1  # execution.kill_grace in every test configuration
SLACK = 10  # seconds of start-up and scheduling slack on a loaded 2-core machine
RULE = b"=" * 60 + b"\n"

# Every process started by a test script runs this helper: it records
# "pid sid pgid modes" in a pid file (so the test knows it really started and where),
# then sleeps.  Modes combine with commas: ignore-term, escape (double fork + setsid).
HOLD = r"""
import os, signal, sys, time
modes, marker, piddir = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
if "ignore-term" in modes:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "escape" in modes:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
pid = os.getpid()
tmp = os.path.join(piddir, f".{pid}")
with open(tmp, "w") as f:
    f.write(f"{pid} {os.getsid(0)} {os.getpgid(0)} {sys.argv[1]}")
os.rename(tmp, os.path.join(piddir, str(pid)))
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 300)
"""


# ---------------------------------------------------------------- processes


def live_pids(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``marker``."""
    needle = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        state = stat[stat.rfind(b")") + 2 :][:1]
        if needle in cmdline and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def settle_gone(marker: str, timeout: float = 2.0) -> list[int]:
    """The marker processes still alive after ``timeout`` (a SIGKILLed process needs a moment)."""
    deadline = time.monotonic() + timeout
    while (left := live_pids(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


class Helper:
    """One test's marker, pid directory and helper program; kills what it left behind."""

    def __init__(self, tmp_path: Path):
        self.marker = f"smfault-{uuid.uuid4().hex[:16]}"
        self.piddir = tmp_path / "pids"
        self.piddir.mkdir()
        self.program = tmp_path / "hold.py"
        self.program.write_text(HOLD)

    def argv(self, modes: str = "sleep", seconds: float | None = None) -> list[str]:
        extra = [str(seconds)] if seconds is not None else []
        return [PY, str(self.program), modes, self.marker, str(self.piddir), *extra]

    def sh(self, modes: str = "sleep", seconds: float | None = None) -> str:
        return " ".join(self.argv(modes, seconds))

    def started(self) -> dict[int, tuple[int, int, str]]:
        """pid -> (session id, process group id, modes) of every helper that started."""
        out = {}
        for f in self.piddir.iterdir():
            if f.name.isdigit():
                pid, sid, pgid, modes = f.read_text().split()
                out[int(pid)] = (int(sid), int(pgid), modes)
        return out

    def wait_started(self, n: int, timeout: float = 30) -> dict[int, tuple[int, int, str]]:
        wait_until(lambda: len(self.started()) >= n, timeout, f"{n} helper processes to start")
        return self.started()

    def alive(self) -> list[int]:
        return settle_gone(self.marker)


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[Helper]:
    h = Helper(tmp_path)
    try:
        yield h
    finally:
        kill_marked(h.marker)


# ---------------------------------------------------------------- configuration and CLI


def configure(
    conf: Path,
    scripts: list[dict],
    groups: list[dict] | None = None,
    settings: dict | None = None,
) -> None:
    """Write config.yaml (kill_grace 1 s), scripts.yaml and groups.yaml from plain data."""
    cfg = {"execution": {"kill_grace": GRACE}}
    for key, value in (settings or {}).items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    (conf / "config.yaml").write_text(yaml.safe_dump(cfg))
    (conf / "scripts.yaml").write_text(yaml.safe_dump({"scripts": scripts}))
    if groups is not None:
        (conf / "groups.yaml").write_text(yaml.safe_dump({"groups": groups}))


def timed(
    conf: Path, *args: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    r = sm(conf, *args, timeout=timeout)
    return r, time.monotonic() - t0


def no_traceback(r: subprocess.CompletedProcess) -> None:
    err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    assert r.returncode != 70, err


def statuses(conf: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in runs(conf):
        out.setdefault(r["script"], []).append(r["status"])
    return out


def group_statuses(conf: Path) -> list[str]:
    db = sqlite3.connect(conf / ".script-monitor" / "history.db")
    try:
        return [r[0] for r in db.execute("SELECT status FROM group_runs ORDER BY id")]
    finally:
        db.close()


def history_json(conf: Path, script: str) -> list[dict]:
    r = sm(conf, "history", script, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def log_files(conf: Path, script: str) -> list[Path]:
    d = conf / "logs" / script
    return sorted(d.iterdir()) if d.is_dir() else []


# wait4 reports the peak RSS of a child and its reaped descendants, but a child forked
# from pytest starts out charged with pytest's own pages: a small wrapper process is the
# parent instead, so the figure is script-monitor's own (or a script's, if larger).
RUSAGE = r"""
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_with_rusage(argv: list[str], stdout=subprocess.DEVNULL, consume=None, timeout=300):
    """Run a process, optionally consuming its stdout in a thread; return (code, peak MB, err).

    The peak RSS comes from os.wait4's rusage: the largest of the process and its
    waited-for children, so it bounds script-monitor's own peak from above.
    """
    rss_file = Path(f"/tmp/smfault-rss-{uuid.uuid4().hex}")
    proc = subprocess.Popen(
        [PY, "-c", RUSAGE, str(rss_file), *argv], stdout=stdout, stderr=subprocess.PIPE
    )
    reader = None
    if consume is not None:
        reader = threading.Thread(target=consume, args=(proc.stdout,), daemon=True)
        reader.start()
    try:
        _, err = proc.communicate(timeout=timeout) if reader is None else (None, None)
        if reader is not None:
            err = proc.stderr.read()
            proc.wait(timeout)
            reader.join(60)
        rss_mb = int(rss_file.read_text()) / 1024
    finally:
        proc.kill()
        rss_file.unlink(missing_ok=True)
    return proc.returncode, rss_mb, err


@contextmanager
def mounted(target: Path, options: str, bind: bool = False) -> Iterator[None]:
    """Mount a tmpfs (or a read-only bind of ``target`` itself) for the test; skip if not root."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs / read-only bind (tests run as root in CI)")
    target.mkdir(parents=True, exist_ok=True)
    if bind:
        cmds = [
            ["mount", "--bind", str(target), str(target)],
            ["mount", "-o", f"remount,bind,{options}", str(target)],
        ]
    else:
        cmds = [["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)]]
    done = 0
    try:
        for cmd in cmds:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"cannot mount here ({' '.join(cmd)}): {r.stderr.strip()}")
            done += 1
        yield
    finally:
        if done:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


# ================================================================ timeouts


def test_timeout_ends_background_children(config_dir, helper):
    """Pass: a 1 s timeout ends the script and both its background children within the grace."""
    configure(
        config_dir,
        [{"name": "t", "timeout": 1, "command": f"{helper.sh()} & {helper.sh()} & wait"}],
    )
    r, took = timed(config_dir, "run", "t")
    no_traceback(r)
    assert r.returncode == 1, r.stderr
    assert len(helper.started()) == 2, "both background children must have started"
    assert helper.alive() == []
    assert 1 <= took < 1 + GRACE + SLACK
    assert statuses(config_dir) == {"t": ["timeout"]}


def test_timeout_kills_child_that_ignores_sigterm(config_dir, helper):
    """Pass: a child ignoring SIGTERM is SIGKILLed after the grace; nothing survives."""
    configure(config_dir, [{"name": "t", "timeout": 1, "command": helper.argv("ignore-term")}])
    r, took = timed(config_dir, "run", "t")
    no_traceback(r)
    assert r.returncode == 1
    assert len(helper.started()) == 1
    assert helper.alive() == []
    assert 1 + GRACE * 0.8 <= took < 1 + GRACE + SLACK  # it did wait the grace, and no longer
    [run] = runs(config_dir, "t")
    assert run["status"] == "timeout" and run["signal"] == signal.SIGKILL


def test_timeout_ends_setsid_escaped_grandchild(config_dir, helper):
    """Pass: a double-forked, setsid-escaped grandchild ignoring SIGTERM dies on a 1 s timeout."""
    command = f"{helper.sh('escape,ignore-term')}; {helper.sh('sleep')}"
    configure(config_dir, [{"name": "t", "timeout": 1, "command": command}])
    r, took = timed(config_dir, "run", "t")
    no_traceback(r)
    assert r.returncode == 1
    started = helper.started()
    assert len(started) == 2
    [script_sid] = {sid for sid, _, modes in started.values() if modes == "sleep"}
    [escaped_sid] = {sid for sid, _, modes in started.values() if modes != "sleep"}
    assert escaped_sid != script_sid, f"the grandchild did not leave the session: {started}"
    assert helper.alive() == []
    assert took < 1 + GRACE + SLACK
    assert statuses(config_dir) == {"t": ["timeout"]}


def test_timeout_in_parallel_group_ends_escaped_descendants_of_every_script(config_dir, helper):
    """Pass: three timed-out scripts of a parallel group, each with an escaped child: all end."""
    command = f"{helper.sh('escape')}; {helper.sh('sleep')}"
    scripts = [{"name": f"p{i}", "timeout": 1, "command": command} for i in range(3)]
    groups = [{"name": "par", "execution": "parallel", "scripts": ["p0", "p1", "p2"]}]
    configure(config_dir, scripts, groups)
    r, took = timed(config_dir, "run-group", "par")
    no_traceback(r)
    assert r.returncode == 1
    assert len(helper.started()) == 6
    assert helper.alive() == []
    assert took < 1 + GRACE + SLACK
    assert statuses(config_dir) == {f"p{i}": ["timeout"] for i in range(3)}


def test_leftovers_keep_leaves_background_process_running_and_lists_it(config_dir, helper):
    """Pass: with leftovers: keep a background process outlives a run and is named in its log."""
    configure(config_dir, [{"name": "bg", "command": f"{helper.sh()} & echo started"}])
    r = sm(config_dir, "run", "bg")
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    [pid] = helper.wait_started(1)
    assert live_pids(helper.marker) == [pid]
    [log] = log_files(config_dir, "bg")
    assert "left running" in log.read_text()
    assert str(pid) in log.read_text()


def test_leftovers_kill_ends_escaped_background_process_after_exit(config_dir, helper):
    """Pass: with leftovers: kill an escaped (setsid) background process is ended after exit 0."""
    command = f"{helper.sh('escape')}; sleep 0.5; echo done"
    configure(config_dir, [{"name": "bg", "leftovers": "kill", "command": command}])
    r = sm(config_dir, "run", "bg")
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert len(helper.started()) == 1
    assert helper.alive() == []
    assert statuses(config_dir) == {"bg": ["success"]}


# ================================================================ signals

SIGNALS = {
    "sigint": (signal.SIGINT, 130),
    "sigterm": (signal.SIGTERM, 143),
    "ctrl-c": (signal.SIGINT, 130),  # SIGINT to the whole foreground process group
}
TARGETS = {
    # target: (command line, how many scripts are running when the signal comes)
    "serial": (["run-group", "ser"], 1),
    "parallel": (["run-group", "par"], 2),
    "run": (["run", "s1"], 1),
}


def signal_config(conf: Path, helper: Helper, modes: str = "sleep") -> None:
    scripts = [{"name": f"s{i}", "command": helper.argv(modes)} for i in (1, 2, 3)]
    groups = [
        {"name": "ser", "scripts": ["s1", "s2", "s3"]},
        {
            "name": "par",
            "execution": "parallel",
            "max_parallel_workers": 2,
            "scripts": ["s1", "s2", "s3"],
        },
    ]
    configure(conf, scripts, groups)


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("how", list(SIGNALS))
def test_signal_exits_promptly_ends_every_script_and_records_interrupted(
    config_dir, helper, how, target
):
    """Pass: exit 130/143 within grace + slack, no script process left, runs recorded
    interrupted (running) and skipped (not started), the group run interrupted."""
    signal_config(config_dir, helper)
    args, running = TARGETS[target]
    sig, code = SIGNALS[how]
    proc = popen("--config-dir", str(config_dir), *args, start_new_session=True)
    try:
        helper.wait_started(running)
        t0 = time.monotonic()
        if how == "ctrl-c":
            os.killpg(proc.pid, sig)  # what the terminal does on Ctrl-C
        else:
            os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=GRACE + 60)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    assert "Traceback" not in err, err
    assert proc.returncode == code, err
    assert took < GRACE + SLACK
    assert f"interrupted by {signal.Signals(sig).name}" in err
    assert helper.alive() == []
    got = statuses(config_dir)
    if target == "run":
        assert got == {"s1": ["interrupted"]}
        return
    assert sorted(got) == ["s1", "s2", "s3"]
    flat = [s for v in got.values() for s in v]
    assert flat.count("interrupted") == running and flat.count("skipped") == 3 - running
    assert group_statuses(config_dir) == ["interrupted"]


def test_repeated_ctrl_c_during_shutdown_still_records_every_run(config_dir, helper):
    """Pass: Ctrl-C hammered during the kill grace changes nothing: 130, all recorded, none left."""
    signal_config(config_dir, helper, modes="ignore-term")  # shutdown takes the full grace
    proc = popen("--config-dir", str(config_dir), "run-group", "par", start_new_session=True)
    try:
        helper.wait_started(2)
        deadline = time.monotonic() + GRACE + SLACK
        while proc.poll() is None and time.monotonic() < deadline:  # until it has exited
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.02)
        _, err = proc.communicate(timeout=GRACE + 60)
    finally:
        proc.kill()
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    assert helper.alive() == []
    flat = sorted(s for v in statuses(config_dir).values() for s in v)
    assert flat == ["interrupted", "interrupted", "skipped"]


def test_sigterm_ends_setsid_escaped_grandchild_of_run(config_dir, helper):
    """Pass: SIGTERM to `run` ends a double-forked, setsid-escaped grandchild ignoring SIGTERM:
    exit 143, nothing left, the run recorded interrupted."""
    command = f"{helper.sh('escape,ignore-term')}; {helper.sh('sleep')}"
    configure(config_dir, [{"name": "t", "command": command}])
    proc = popen("--config-dir", str(config_dir), "run", "t")
    try:
        helper.wait_started(2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=GRACE + 60)
    finally:
        proc.kill()
    assert "Traceback" not in err, err
    assert proc.returncode == 143, err
    assert helper.alive() == []
    assert statuses(config_dir) == {"t": ["interrupted"]}


# ================================================================ crash of script-monitor


def test_sigkill_of_monitor_marks_runs_lost_on_next_read(config_dir, helper):
    """Pass: after SIGKILL of script-monitor mid-group, the next read shows its runs (and the
    group run) as lost, and the next run works normally."""
    scripts = [{"name": f"k{i}", "command": helper.argv()} for i in (1, 2)]
    scripts.append({"name": "quick", "command": "echo fine"})
    groups = [{"name": "par", "execution": "parallel", "scripts": ["k1", "k2"]}]
    configure(config_dir, scripts, groups, {"validation": {"warn_unused_scripts": False}})
    proc = popen("--config-dir", str(config_dir), "run-group", "par")
    try:
        helper.wait_started(2)
        wait_until(
            lambda: [r["status"] for r in runs(config_dir)] == ["running", "running"],
            10,
            "both runs recorded as running",
        )
        proc.kill()
        proc.wait(10)
    finally:
        proc.kill()
    for name in ("k1", "k2"):
        [run] = history_json(config_dir, name)
        assert run["status"] == "lost"
        assert "died" in run["detail"]
    r = sm(config_dir, "list-groups", "--json")
    assert json.loads(r.stdout)[0]["last_run"]["status"] == "lost"
    r = sm(config_dir, "run", "quick")
    assert r.returncode == 0, r.stderr
    assert statuses(config_dir)["quick"] == ["success"]


# ================================================================ concurrency


@pytest.mark.slow
def test_concurrent_rotation_keeps_the_newest_logs_and_never_a_running_one(config_dir):
    """Pass: 12 concurrent runs of one script with log_limit 3 leave exactly 3 logs, the newest."""
    configure(
        config_dir,
        [
            {
                "name": "r",
                "command": "echo hi; sleep 0.3",
                "log_limit": {"type": "count", "value": 3},
            }
        ],
    )
    procs = [popen("--config-dir", str(config_dir), "run", "-q", "r") for _ in range(12)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    rows = runs(config_dir, "r")
    kept = [r for r in rows if r["log_state"] == "ok"]
    assert len(rows) == 12 and len(kept) == 3
    files = {str(p.relative_to(config_dir / "logs")) for p in log_files(config_dir, "r")}
    assert files == {r["log_path"] for r in kept}
    newest = sorted(rows, key=lambda r: r["id"])[-1]
    assert newest["log_state"] == "ok"


# ================================================================ output


def pattern_block(i: int) -> bytes:
    """1 MiB of all byte values; its first 8 bytes number it, so a lost or repeated block shows."""
    return i.to_bytes(8, "big") + (bytes(range(256)) * 4096)[8:]


GEN = r"""
import sys
base = (bytes(range(256)) * 4096)
out = sys.stdout.buffer
for i in range(int(sys.argv[1])):
    out.write(i.to_bytes(8, "big") + base[8:])
out.flush()
"""


class StreamCheck:
    """Consumes a stream: a known prefix, then ``size`` hashed bytes, then a small tail."""

    def __init__(self, prefix: bytes, size: int):
        self.prefix, self.size = prefix, size
        self.head = b""
        self.hash = hashlib.sha256()
        self.hashed = 0
        self.tail = b""

    def __call__(self, stream) -> None:
        while chunk := stream.read(1 << 16):
            self.feed(chunk)

    def feed(self, chunk: bytes) -> None:
        if len(self.head) < len(self.prefix):
            need = len(self.prefix) - len(self.head)
            self.head += chunk[:need]
            chunk = chunk[need:]
        take = min(len(chunk), self.size - self.hashed)
        self.hash.update(chunk[:take])
        self.hashed += take
        self.tail = (self.tail + chunk[take:])[-4096:]


class Hasher:
    """Consumes a stream, hashing and counting every byte."""

    def __init__(self):
        self.hash = hashlib.sha256()
        self.size = 0

    def __call__(self, stream) -> None:
        while chunk := stream.read(1 << 16):
            self.hash.update(chunk)
            self.size += len(chunk)


def file_hash(path: Path) -> tuple[str, int]:
    h = Hasher()
    with open(path, "rb") as f:
        h(f)
    return h.hash.hexdigest(), h.size


def expected_hash(mib: int) -> str:
    h = hashlib.sha256()
    for i in range(mib):
        h.update(pattern_block(i))
    return h.hexdigest()


def check_log(path: Path, size: int, digest: str) -> bytes:
    """Header, exactly ``size`` output bytes with ``digest``, footer; return the footer."""
    with open(path, "rb") as f:
        start = f.read(4096)
        header_end = start.index(RULE, start.index(RULE) + 1) + len(RULE)
        f.seek(header_end)
        check = StreamCheck(b"", size)
        check(f)
    assert check.hashed == size
    assert check.hash.hexdigest() == digest
    assert path.stat().st_size == header_end + size + len(check.tail)
    return check.tail


@pytest.mark.slow
def test_300mb_output_reaches_log_and_terminal_intact_with_flat_memory(config_dir, tmp_path):
    """Pass: 300 MiB written by a script are all in the log and on stdout (same SHA-256), and
    the peak RSS of `run` and of `logs` stays within 32 MB of a 1-line run."""
    mib = 300
    gen = tmp_path / "gen.py"
    gen.write_text(GEN)
    configure(
        config_dir,
        [
            {"name": "big", "command": [PY, str(gen), str(mib)], "timeout": 0},
            {"name": "small", "command": [PY, str(gen), "0"]},
        ],
    )
    base = [PY, str(MAIN), "--config-dir", str(config_dir)]
    try:
        code, small_rss, err = run_with_rusage([*base, "run", "small"])
        assert code == 0, err
        check = StreamCheck(b"Running big...\n", mib << 20)
        code, big_rss, err = run_with_rusage(
            [*base, "run", "big"], stdout=subprocess.PIPE, consume=check
        )
        assert code == 0, err
        digest = expected_hash(mib)
        assert check.head == b"Running big...\n"
        assert check.hashed == mib << 20 and check.hash.hexdigest() == digest
        # the closing line follows (on a line of its own if the output did not end one)
        assert check.tail.lstrip(b"\n").startswith(b"big \xe2\x9c\x93")
        [log] = log_files(config_dir, "big")
        assert b"finished: success" in check_log(log, mib << 20, digest)
        printed = Hasher()
        code, logs_rss, err = run_with_rusage(
            [*base, "logs", "--raw", "big"], stdout=subprocess.PIPE, consume=printed
        )
        assert code == 0, err
        assert (printed.hash.hexdigest(), printed.size) == file_hash(log)
        print(
            f"peak RSS: small run {small_rss:.1f} MB, 300 MiB run {big_rss:.1f} MB, "
            f"logs --raw {logs_rss:.1f} MB"
        )
        assert big_rss < small_rss + 32
        assert logs_rss < small_rss + 32
    finally:
        for f in log_files(config_dir, "big"):
            f.unlink()


@pytest.mark.slow
def test_50mb_line_without_newline_is_logged_whole_and_printed(config_dir):
    """Pass: a 50 MiB line with no newline is in the log byte for byte, the footer starts on
    its own line, `logs` prints it all, with flat memory."""
    size = 50 << 20
    code = "import sys\nfor _ in range(50): sys.stdout.write('x' * (1 << 20))"
    configure(
        config_dir,
        [{"name": "line", "command": [PY, "-c", code]}, {"name": "one", "command": "echo 1"}],
    )
    base = [PY, str(MAIN), "--config-dir", str(config_dir)]
    try:
        rc, small_rss, err = run_with_rusage([*base, "run", "-q", "one"])
        assert rc == 0, err
        rc, run_rss, err = run_with_rusage([*base, "run", "-q", "line"])
        assert rc == 0, err
        [log] = log_files(config_dir, "line")
        digest = hashlib.sha256(b"x" * size).hexdigest()
        footer = check_log(log, size, digest)
        assert footer.startswith(b"\n" + RULE) and b"finished: success" in footer
        printed = Hasher()
        rc, logs_rss, err = run_with_rusage(
            [*base, "logs", "line"], stdout=subprocess.PIPE, consume=printed
        )
        assert rc == 0, err
        assert (printed.hash.hexdigest(), printed.size) == file_hash(log)
        print(
            f"peak RSS: 1-line run {small_rss:.1f} MB, 50 MiB line {run_rss:.1f} MB, "
            f"logs {logs_rss:.1f} MB"
        )
        assert run_rss < small_rss + 32 and logs_rss < small_rss + 32
    finally:
        for f in log_files(config_dir, "line"):
            f.unlink()


def test_invalid_utf8_and_nul_bytes_are_kept_and_logs_prints_them_replaced(config_dir):
    """Pass: the log holds the exact bytes (invalid UTF-8, NULs, a cut multi-byte sequence);
    `logs` exits 0 with valid UTF-8 (U+FFFD for bad bytes); `logs --raw` gives the bytes."""
    payload = b"ok \xc3\xa9\xe2\x82\xac | bad \xff\xfe | nul \x00\x00 | cut \xe2\x82"
    configure(
        config_dir,
        [
            {
                "name": "bin",
                "command": [PY, "-c", f"import sys; sys.stdout.buffer.write({payload!r})"],
            }
        ],
    )
    r = sm_bytes(config_dir, "run", "bin")
    no_traceback(r)
    assert r.returncode == 0
    assert payload in r.stdout
    [log] = log_files(config_dir, "bin")
    assert payload in log.read_bytes()
    r = sm_bytes(config_dir, "logs", "bin")
    no_traceback(r)
    assert r.returncode == 0
    text = r.stdout.decode("utf-8")  # strict: must be valid UTF-8
    assert "ok é€ | bad \ufffd\ufffd | nul \x00\x00 | cut \ufffd" in text
    r = sm_bytes(config_dir, "logs", "--raw", "bin")
    assert r.returncode == 0 and payload in r.stdout
    assert sm(config_dir, "history", "bin").returncode == 0


def test_output_after_exit_by_leftover_child_lands_in_the_log(config_dir, helper):
    """Pass: the run ends at the script's exit (not the child's); what the leftover child writes
    afterwards is appended to the same log and `logs` prints it."""
    late = f"late={helper.marker}"  # the command line says it differently: late', 'MARKER
    code = f"import time; time.sleep(4); print('late', '{helper.marker}', sep='=', flush=True)"
    command = f'{PY} -c "{code}" {helper.marker} & echo early'
    configure(config_dir, [{"name": "bg", "command": command}])
    r = sm(config_dir, "run", "-q", "bg")
    no_traceback(r)
    assert r.returncode == 0
    [log] = log_files(config_dir, "bg")
    assert late not in log.read_text(), "the run waited for its leftover child"
    wait_until(lambda: late in log.read_text(), 30, "the leftover child's late output")
    text = log.read_text()
    assert text.index("finished: success") < text.index(late)
    r = sm(config_dir, "logs", "bg")
    assert r.returncode == 0 and late in r.stdout


# ================================================================ disks and directories


def test_read_only_log_dir_runs_with_clear_message_and_honest_status(config_dir):
    """Pass: with a read-only log directory the script still runs, its run is recorded with
    the log error, `run` still shows the output, `run` and `run-group` say so on stderr,
    `logs` explains; no traceback."""
    configure(
        config_dir,
        [{"name": "a", "command": "echo hello"}],
        [{"name": "g", "scripts": ["a"]}],
    )
    with mounted(config_dir / "logs", "ro,size=1m"):
        r = sm(config_dir, "run", "a")
        no_traceback(r)
        assert r.returncode == 0
        assert "log not written" in r.stderr and "Read-only file system" in r.stderr
        assert "hello\n" in r.stdout  # without a log, the terminal still gets the output
        r = sm(config_dir, "run-group", "g")
        no_traceback(r)
        assert r.returncode == 0
        assert "log not written" in r.stderr, r.stderr
        r = sm(config_dir, "logs", "a")
        no_traceback(r)
        assert r.returncode == 2 and "could not be written" in r.stderr
    assert [run["log_state"] for run in runs(config_dir, "a")] == ["error", "error"]


def test_full_log_disk_fails_the_run_honestly_and_keeps_what_fit(config_dir):
    """Pass: on a 1 MB full disk a 5 MB writer fails (exit 1) with "No space left on device"
    on stderr, its run is recorded failed, `logs` prints the part that fit; no traceback."""
    configure(
        config_dir,
        [{"name": "big", "command": "head -c 5000000 /dev/zero | tr '\\0' x"}],
        [{"name": "g", "scripts": ["big"]}],
    )
    with mounted(config_dir / "logs", "size=1m"):
        r = sm(config_dir, "run", "-q", "big")
        no_traceback(r)
        assert r.returncode == 1
        assert "No space left on device" in r.stderr
        r = sm(config_dir, "run-group", "g")
        no_traceback(r)
        assert r.returncode == 1
        assert "No space left on device" in r.stderr, r.stderr
        assert [run["status"] for run in runs(config_dir, "big")] == ["failed", "failed"]
        r = sm_bytes(config_dir, "logs", "--run", "1", "big")
        no_traceback(r)
        assert r.returncode == 0 and r.stdout.startswith(RULE) and b"xxxx" in r.stdout


def test_full_disk_under_history_refuses_to_run_and_keeps_earlier_runs(config_dir, tmp_path):
    """Pass: when the history's disk fills up, `run` exits 2 naming the history and the cause,
    the script does not run unrecorded, and earlier runs are intact once space is back."""
    flag = tmp_path / "ran"
    configure(config_dir, [{"name": "a", "command": f"echo x >> {flag}"}])
    state = config_dir / ".script-monitor"
    with mounted(state, "size=512k"):  # room for a fresh history and a few more migrations
        assert sm(config_dir, "run", "a").returncode == 0
        filler = state / "filler"
        try:
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass  # the disk is full now
        r = sm(config_dir, "run", "a")
        no_traceback(r)
        assert r.returncode == 2, r.stderr
        assert "history" in r.stderr and "full" in r.stderr, r.stderr
        assert flag.read_text() == "x\n", "the script ran although it could not be recorded"
        filler.unlink()
        assert [run["status"] for run in runs(config_dir, "a")] == ["success"]
        assert sm(config_dir, "run", "a").returncode == 0


def test_history_on_a_disk_too_small_to_create_it_is_a_clear_message(config_dir, tmp_path):
    """Pass: when not even a new history fits on its disk, `run` and `history` exit 2 saying
    the disk may be full (not a secondary SQLite error), and the script does not run."""
    flag = tmp_path / "ran"
    configure(config_dir, [{"name": "a", "command": f"touch {flag}"}])
    with mounted(config_dir / ".script-monitor", "size=64k"):
        for args in (["run", "a"], ["history", "a"]):
            r = sm(config_dir, *args)
            no_traceback(r)
            assert r.returncode == 2, r.stderr
            assert "is its disk full?" in r.stderr and "rollback" not in r.stderr, r.stderr
    assert not flag.exists()


def test_read_only_config_dir_validates_and_refuses_to_run_with_clear_message(config_dir, tmp_path):
    """Pass: in a read-only config directory `validate` works, `run` exits 2 naming the history
    and "Read-only file system", and the script does not run; no traceback."""
    flag = tmp_path / "ran"
    configure(config_dir, [{"name": "a", "command": f"touch {flag}"}])
    with mounted(config_dir, "ro", bind=True):
        r = sm(config_dir, "validate")
        assert r.returncode == 0, r.stderr
        for args in (["run", "a"], ["list"], ["history", "a"]):
            r = sm(config_dir, *args)
            no_traceback(r)
            assert r.returncode == 2, (args, r.stderr)
            assert "Read-only file system" in r.stderr and "history" in r.stderr
        assert not flag.exists()


# ================================================================ the history store

LOCKER = r"""
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


@contextmanager
def store_locked(conf: Path, seconds: float) -> Iterator[subprocess.Popen]:
    """Another process holds the history's write lock for ``seconds``."""
    db = conf / ".script-monitor" / "history.db"
    proc = subprocess.Popen(
        [PY, "-c", LOCKER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline() == "locked\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_briefly_locked_store_makes_run_wait_and_record(config_dir):
    """Pass: a run started while another process holds the history lock for 3 s waits, then
    records its run; nothing is lost."""
    configure(config_dir, [{"name": "a", "command": "echo hi"}])
    assert sm(config_dir, "run", "a").returncode == 0
    with store_locked(config_dir, 3):
        r, took = timed(config_dir, "run", "a")
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert took > 1, "the lock was not in effect"
    assert [run["status"] for run in runs(config_dir, "a")] == ["success", "success"]


def test_a_group_blocked_on_its_output_does_not_hold_the_history_lock(config_dir):
    """Pass: a parallel group whose stdout is a full pipe nobody reads (a paused pager)
    blocks on printing, never while holding the history's write lock: meanwhile another
    `run` (busy timeout 2 s) records its run at once.  When the pipe is read again,
    the group finishes and every run is recorded."""
    import fcntl

    names = [f"s{i:03d}" for i in range(400)]
    configure(
        config_dir,
        [{"name": n, "command": "true"} for n in names] + [{"name": "other", "command": "true"}],
        [{"name": "g", "execution": "parallel", "max_parallel_workers": 4, "scripts": names}],
    )
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ: full after ~200 progress lines
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(config_dir), "run-group", "g"],
        stdout=write_end,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        wchan = Path(f"/proc/{proc.pid}/wchan")
        deadline = time.monotonic() + 60
        while "pipe_write" not in wchan.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, "the group ended before its output filled the pipe"
            time.sleep(0.05)
        assert "pipe_write" in wchan.read_text(), "the group never blocked on its output"
        r = cli(
            "--config-dir",
            str(config_dir),
            "run",
            "other",
            env={"SCRIPT_MONITOR_BUSY_TIMEOUT": "2"},
        )
        no_traceback(r)
        assert r.returncode == 0, r.stderr
        assert "pipe_write" in wchan.read_text()  # still blocked: the run did not wait for it
        with os.fdopen(read_end, "rb") as out:
            read_end = -1
            text = out.read().decode()
        assert proc.wait(timeout=60) == 0
    finally:
        if read_end != -1:
            os.close(read_end)
        proc.kill()
        proc.wait()
    assert text.count(" ✓\n") == 400
    assert [r["status"] for r in runs(config_dir, "other")] == ["success"]
    assert sum(r["status"] == "success" for r in runs(config_dir) if r["script"] != "other") == 400


@pytest.mark.slow
def test_long_locked_store_refuses_to_run_with_clear_message(config_dir, tmp_path):
    """Pass: with the history locked for longer than the busy timeout (60 s by default; 3 s
    here through SCRIPT_MONITOR_BUSY_TIMEOUT), `run` exits 2 saying the history stayed locked
    and nothing was recorded, the script does not run, and reads (`history`) keep working
    during the lock."""
    flag = tmp_path / "ran"
    configure(config_dir, [{"name": "a", "command": f"echo x >> {flag}"}])
    assert sm(config_dir, "run", "a").returncode == 0
    with store_locked(config_dir, 120):
        env = {**os.environ, "SCRIPT_MONITOR_BUSY_TIMEOUT": "3"}
        proc = popen("--config-dir", str(config_dir), "run", "a", env=env)
        try:
            r = sm(config_dir, "history", "a")
            assert r.returncode == 0 and "success" in r.stdout
            _, err = proc.communicate(timeout=110)
        finally:
            proc.kill()
    assert "Traceback" not in err, err
    assert proc.returncode == 2, err
    assert "locked" in err and "for 3s" in err and "nothing was recorded" in err
    assert flag.read_text() == "x\n"
    assert [run["status"] for run in runs(config_dir, "a")] == ["success"]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupted_store_is_reported_and_never_replaced(config_dir, tmp_path, damage):
    """Pass: a corrupted history makes every command that needs it exit 2 with "corrupted" and
    the fix; the file is left byte for byte as it was (never silently replaced)."""
    flag = tmp_path / "ran"
    configure(config_dir, [{"name": "a", "command": f"echo x >> {flag}"}])
    for _ in range(3):
        assert sm(config_dir, "run", "a").returncode == 0
    db = config_dir / ".script-monitor" / "history.db"
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    data = db.read_bytes()
    if damage == "garbage":
        data = os.urandom(len(data))
    else:
        data = data[: len(data) // 2]
    db.write_bytes(data)
    for args in (["run", "a"], ["history", "a"], ["list"]):
        r = sm(config_dir, *args)
        no_traceback(r)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "corrupted" in r.stderr and "move it aside" in r.stderr, r.stderr
    assert db.read_bytes() == data
    assert flag.read_text() == "x\n" * 3


def test_tampered_log_path_cannot_escape_the_log_directory(config_dir, tmp_path):
    """Pass: a history row pointing its log outside the log directory is refused by `logs`
    (exit 2, nothing printed) and `clear-logs` does not delete the outside file."""
    outside = tmp_path / "outside.txt"
    outside.write_text("not a log\n")
    configure(config_dir, [{"name": "a", "command": "echo hi"}])
    assert sm(config_dir, "run", "a").returncode == 0
    db = sqlite3.connect(config_dir / ".script-monitor" / "history.db")
    db.execute("UPDATE runs SET log_path = ?", (os.path.relpath(outside, config_dir / "logs"),))
    db.commit()
    db.close()
    r = sm(config_dir, "logs", "a")
    no_traceback(r)
    assert r.returncode == 2 and "not a log" not in r.stdout
    r = sm(config_dir, "clear-logs", "a")
    no_traceback(r)
    assert outside.read_text() == "not a log\n"


# ================================================================ the scheduler

T0 = 1893456030.0  # 2030-01-01 00:00:30 UTC: the accelerated clock starts 30 s before a minute


@contextmanager
def scheduler(conf: Path, tmp: Path, speed: int = 60, start: float = T0) -> Iterator[dict]:
    """`script-monitor scheduler` on an accelerated clock; SIGKILLed in a finally."""
    log_path = tmp / f"scheduler-{time.monotonic_ns()}.log"
    env = dict(os.environ, SCRIPT_MONITOR_CLOCK=f"{start}x{speed}")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [PY, str(MAIN), "--config-dir", str(conf), "scheduler"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield {"proc": proc, "log": log_path}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def group_rows(conf: Path) -> list[dict]:
    db = sqlite3.connect(conf / ".script-monitor" / "history.db")
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM group_runs ORDER BY id")]
    finally:
        db.close()


def test_sigkill_of_scheduler_marks_runs_lost_and_a_restarted_scheduler_works(
    config_dir, tmp_path, helper
):
    """Pass: SIGKILL of the scheduler mid-run leaves its runs `lost` on the next read (not
    `running` forever); a scheduler started again takes the lock and fires groups again."""
    scripts = [
        {"name": "long", "command": helper.argv(), "timeout": 0},
        {"name": "quick", "command": "true"},
    ]
    groups = [
        {"name": "hangs", "schedule": "* * * * *", "timezone": "UTC", "scripts": ["long"]},
        {"name": "ticks", "schedule": "* * * * *", "timezone": "UTC", "scripts": ["quick"]},
    ]
    configure(config_dir, scripts, groups, {"scheduling": {"shutdown_grace": 2}})
    with scheduler(config_dir, tmp_path) as first:
        helper.wait_started(1)
        wait_until(
            lambda: "running" in statuses(config_dir).get("long", []), 30, "the run recorded"
        )
        first["proc"].kill()
        first["proc"].wait(10)
    [run] = history_json(config_dir, "long")
    assert run["status"] == "lost" and "died" in run["detail"]
    kill_marked(helper.marker)  # the orphaned script itself is not ours to keep
    before = sum(r["status"] == "success" for r in runs(config_dir, "quick"))
    with scheduler(config_dir, tmp_path, start=T0 + 3600) as second:
        wait_until(
            lambda: sum(r["status"] == "success" for r in runs(config_dir, "quick")) >= before + 2,
            60,
            "the restarted scheduler to fire `ticks` twice",
        )
        second["proc"].terminate()
        assert second["proc"].wait(60) == 0
    text = second["log"].read_text()
    assert "Traceback" not in text and "already running" not in text, text
    assert "running" not in [r["status"] for r in runs(config_dir, "quick")]


@pytest.mark.slow
def test_forty_concurrent_invocations_while_the_scheduler_runs_lose_nothing(config_dir, tmp_path):
    """Pass: 40 CLI runs at once (20 scripts once, one script 20 times) while the scheduler
    fires a group every 0.1 s: every invocation exits 0, every run row is finished with
    its log present and naming its run, the database and scheduler files are intact."""
    limit = {"type": "count", "value": 1000}
    command = 'echo "out-$SCRIPT_MONITOR_SCRIPT-$SCRIPT_MONITOR_RUN_ID"; sleep 0.2'
    names = [f"c{i:02d}" for i in range(20)]
    scripts = [{"name": n, "command": command, "log_limit": limit} for n in [*names, "same"]]
    scripts.append({"name": "beat", "command": command, "log_limit": limit})
    groups = [{"name": "pulse", "schedule": "* * * * *", "timezone": "UTC", "scripts": ["beat"]}]
    configure(config_dir, scripts, groups, {"validation": {"warn_unused_scripts": False}})
    with scheduler(config_dir, tmp_path, speed=600) as daemon:
        wait_until(lambda: "success" in statuses(config_dir).get("beat", []), 60, "a first tick")
        procs = [
            popen("--config-dir", str(config_dir), "run", "-q", n) for n in names + ["same"] * 20
        ]
        results = [(p, *p.communicate(timeout=300)) for p in procs]
        daemon["proc"].terminate()
        assert daemon["proc"].wait(60) == 0
    text = daemon["log"].read_text()
    assert "Traceback" not in text and "ERROR" not in text, text
    for p, _, err in results:
        assert "Traceback" not in err, err
        assert p.returncode == 0, err
    rows = runs(config_dir)
    manual = [r for r in rows if r["trigger"] == "manual"]
    assert len(manual) == 40 and {r["status"] for r in manual} == {"success"}
    assert sum(r["script"] == "same" for r in manual) == 20
    scheduled = [r for r in rows if r["trigger"] == "schedule"]
    assert len(scheduled) >= 2 and {r["status"] for r in scheduled} == {"success"}
    for row in rows:
        log = (config_dir / "logs" / row["log_path"]).read_text()
        assert f"out-{row['script']}-{row['id']}\n" in log and "finished: success" in log
    assert {g["status"] for g in group_rows(config_dir)} <= {"success", "skipped", "missed"}
    db = sqlite3.connect(config_dir / ".script-monitor" / "history.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    state = config_dir / ".script-monitor" / "scheduler-state.json"
    assert isinstance(json.loads(state.read_text()), dict)
