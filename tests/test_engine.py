"""Running scripts: the parallel cap, whole-tree timeouts and interrupts, how commands run.

Overlap is measured from timestamps the scripts write themselves; leftover processes
are found under /proc by a unique marker in their environment.
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

from helpers import (
    MAIN,
    cli_json,
    events,
    kill_marked,
    make_config,
    marked_pids,
    max_overlap,
    popen,
    probe,
    sm,
    wait_for,
    write,
)
from script_monitor.config import load_config
from script_monitor.engine import Engine
from script_monitor.logs import RULE
from script_monitor.proc import Interrupt
from script_monitor.store import Store


def parallel(conf: Path, n: int, seconds: float, settings=None, workers=None) -> None:
    group = {"name": "p", "execution": "parallel", "scripts": [f"s{i}" for i in range(n)]}
    if workers is not None:
        group["max_parallel_workers"] = workers
    make_config(conf, {f"s{i}": probe(f"s{i}", seconds) for i in range(n)}, [group], settings)


# ---------------------------------------------------------------- the cap


def test_the_cap_bounds_overlap(config_dir):
    parallel(config_dir, 6, 0.4, {"execution": {"max_parallel_workers": 2}})
    started = time.monotonic()
    r = sm(config_dir, "run-group", "p")
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    spans = events(config_dir)
    assert len(spans) == 6
    assert max_overlap(spans) == 2
    assert took >= 1.2  # three waves of 0.4 s


def test_n_scripts_with_cap_n_finish_in_about_one_run(config_dir):
    parallel(config_dir, 4, 1, {"execution": {"max_parallel_workers": 4}})
    started = time.monotonic()
    r = sm(config_dir, "run-group", "p")
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    assert max_overlap(events(config_dir)) == 4
    assert took < 3  # about 1 s, not 4 s


def test_without_configuration_the_cap_is_five(config_dir):
    parallel(config_dir, 7, 0.8)
    assert not (config_dir / "config.yaml").exists()
    r = sm(config_dir, "run-group", "p")
    assert r.returncode == 0, r.stderr
    assert max_overlap(events(config_dir)) == 5


@pytest.mark.parametrize(("global_cap", "group_cap"), [(5, 2), (1, 3)])
def test_the_group_cap_overrides_the_global_one(config_dir, global_cap, group_cap):
    parallel(config_dir, 5, 0.6, {"execution": {"max_parallel_workers": global_cap}}, group_cap)
    assert sm(config_dir, "run-group", "p").returncode == 0
    assert max_overlap(events(config_dir)) == group_cap
    r = sm(config_dir, "list-groups", "--json")
    assert json.loads(r.stdout)[0]["max_parallel_workers"] == group_cap


def test_a_serial_group_never_overlaps_and_keeps_its_order(config_dir):
    names = ["c", "a", "b"]
    make_config(config_dir, {n: probe(n, 0.1) for n in names}, [{"name": "g", "scripts": names}])
    assert sm(config_dir, "run-group", "g").returncode == 0
    spans = events(config_dir)
    assert list(spans) == names
    assert max_overlap(spans) == 1


# ---------------------------------------------------------------- timeouts end whole trees

TREE_SHAPES = {
    "background-children": "sleep 300 & sleep 301 & echo started; wait",
    "child-ignoring-sigterm": "(trap '' TERM; sleep 302) & echo started; wait",
    "grandchild-in-new-session": "setsid sleep 303 & echo started; wait",
    "double-forked-daemon": "(setsid sh -c 'sleep 304 & sleep 305' &) ; echo started; sleep 306",
}


@pytest.mark.parametrize("shape", sorted(TREE_SHAPES))
def test_a_timeout_leaves_no_process_of_the_tree(config_dir, marker, shape):
    make_config(
        config_dir,
        {"t": {"command": TREE_SHAPES[shape], "timeout": 1, "env": {"MARKER": marker}}},
        settings={"execution": {"kill_grace": 1}},
    )
    started = time.monotonic()
    r = sm(config_dir, "run", "t", timeout=30)
    took = time.monotonic() - started
    assert r.returncode == 1, r.stderr
    assert "t ✗ FAILED (timeout" in r.stdout
    assert took < 12
    assert wait_for(lambda: not marked_pids(marker), timeout=3), marked_pids(marker)
    [last] = cli_json("--config-dir", str(config_dir), "history", "t", "--json")
    assert last["status"] == "timeout"
    assert "timed out after 1s" in last["detail"]


def test_a_timeout_is_a_failure_in_groups(config_dir, marker):
    slow = {"command": "sleep 30", "timeout": 0.5, "env": {"MARKER": marker}}
    make_config(
        config_dir,
        {"slow": slow, "a": probe("a"), "b": probe("b")},
        [
            {"name": "par", "execution": "parallel", "scripts": ["a", "slow", "b"]},
            {"name": "ser", "stop_on_error": True, "scripts": ["slow", "a", "b"]},
        ],
        {"execution": {"kill_grace": 1}},
    )
    r = sm(config_dir, "run-group", "par")
    assert r.returncode == 1
    assert "Running slow... ✗ FAILED (timeout)\n" in r.stdout
    assert r.stdout.endswith("  Completed: 3/3\n  Successful: 2/3\n  Failed: slow\n")
    (config_dir / "events.log").unlink()
    r = sm(config_dir, "run-group", "ser")
    assert r.returncode == 1
    assert "⚠️  Script slow failed. Stopping group execution\n" in r.stdout
    assert events(config_dir) == {}
    assert not marked_pids(marker)


def test_default_timeout_applies_and_zero_means_none(config_dir, marker):
    make_config(
        config_dir,
        {
            "slow": {"command": "sleep 30", "env": {"MARKER": marker}},
            "patient": {"command": "sleep 1.5", "timeout": 0},
        },
        settings={"execution": {"default_timeout": 1, "kill_grace": 1}},
    )
    r = sm(config_dir, "run", "slow")
    assert r.returncode == 1 and "timeout" in r.stdout
    assert not marked_pids(marker)
    r = sm(config_dir, "run", "patient")
    assert r.returncode == 0, r.stdout


# ---------------------------------------------------------------- interrupts


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_every_tree_and_records_the_runs(config_dir, marker, sig, code):
    names = [f"s{i}" for i in range(4)]
    make_config(
        config_dir,
        {
            n: {"command": probe(n, 60) + " & sleep 61; wait", "env": {"MARKER": marker}}
            for n in names
        },
        [{"name": "p", "execution": "parallel", "max_parallel_workers": 2, "scripts": names}],
        {"execution": {"kill_grace": 1}},
    )
    proc = popen("--config-dir", str(config_dir), "run-group", "p")
    try:
        assert wait_for(lambda: len(events(config_dir)) == 2, timeout=20)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"interrupted by {signal.Signals(sig).name}" in err
    assert wait_for(lambda: not marked_pids(marker), timeout=3), marked_pids(marker)
    statuses = {
        n: cli_json("--config-dir", str(config_dir), "history", n, "--json")[0]["status"]
        for n in names
    }
    started = set(events(config_dir))
    assert len(started) == 2
    assert all(statuses[n] == "interrupted" for n in started), statuses
    assert all(statuses[n] == "skipped" for n in set(names) - started), statuses
    group = cli_json("--config-dir", str(config_dir), "list-groups", "--json")[0]
    assert group["last_run"]["status"] == "interrupted"


def test_sigint_during_a_single_run_exits_130(config_dir, marker):
    make_config(config_dir, {"one": {"command": "echo go; sleep 60", "env": {"MARKER": marker}}})
    proc = popen("--config-dir", str(config_dir), "run", "one")
    try:
        assert wait_for(lambda: bool(marked_pids(marker)), timeout=20)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not marked_pids(marker)
    [last] = cli_json("--config-dir", str(config_dir), "history", "one", "--json")
    assert last["status"] == "interrupted"


def test_an_interrupt_before_the_start_skips_every_script(config_dir):
    """Engine directly: a fired interrupt runs nothing and records every script skipped."""
    make_config(
        config_dir,
        {"a": probe("a"), "b": probe("b")},
        [{"name": "g", "execution": "parallel", "scripts": ["a", "b"]}],
    )
    config = load_config(config_dir)
    store = Store(config.state_dir)
    interrupt = Interrupt()
    interrupt.fire(signal.SIGTERM)
    outcome = Engine(config, store, interrupt=interrupt).run_group("g")
    assert [r.status for r in outcome.results] == ["skipped", "skipped"]
    assert outcome.status == "interrupted"
    assert events(config_dir) == {}
    assert store.runs.group_run(outcome.group_run_id).status == "interrupted"
    assert [r.status for r in store.runs.runs_of_group_run(outcome.group_run_id)] == [
        "skipped",
        "skipped",
    ]
    store.close()


# ---------------------------------------------------------------- how commands run


def log_of(conf: Path, name: str) -> bytes:
    r = subprocess.run(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "history", name, "--json"],
        capture_output=True,
        check=True,
    )
    run_id = json.loads(r.stdout)[0]["id"]
    [path] = [
        p for p in (conf / "logs" / name).iterdir() if f"run: {run_id}\n".encode() in p.read_bytes()
    ]
    return path.read_bytes()


def test_a_string_runs_through_the_shell_a_list_without(config_dir):
    make_config(
        config_dir,
        {
            "shell": 'echo "home=$HOME"; echo $((6 * 7)) | tr 4 X',
            "argv": {"command": ["printf", "[%s]", "two words", "$HOME", "*", ";", "|x"]},
        },
    )
    home = str(Path.home())
    r = sm(config_dir, "run", "shell", "-q")
    assert r.returncode == 0
    assert f"home={home}\nX2\n".encode() in log_of(config_dir, "shell")
    r = sm(config_dir, "run", "argv", "-q")
    assert r.returncode == 0
    assert b"[two words][$HOME][*][;][|x]" in log_of(config_dir, "argv")


def test_env_adds_to_the_inherited_environment(config_dir, tmp_path):
    write(config_dir, "secrets/app.env", "FROM_FILE=file-value\nSHARED=from-file\n")
    make_config(
        config_dir,
        {
            "e": {
                "command": "echo $INHERITED $GREETING $NUM $FLAG $SHARED $FROM_FILE "
                '$SCRIPT_MONITOR_SCRIPT; test -n "$PATH" && test "$FROM_FILE" = file-value',
                "env": {"GREETING": "hi", "NUM": 5, "FLAG": True, "SHARED": "from-env"},
                "env_file": "secrets/app.env",
            }
        },
    )
    r = sm(config_dir, "run", "e", env={"INHERITED": "yes", "GREETING": "overridden"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # env_file values are secrets: the script gets them, the output shows them masked
    assert "yes hi 5 true from-env *** e\n" in r.stdout


def test_cwd_is_relative_to_the_config_dir(config_dir, tmp_path):
    (config_dir / "work" / "deep").mkdir(parents=True)
    make_config(
        config_dir,
        {"here": "pwd", "there": {"command": ["pwd"], "cwd": "work/deep"}},
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name, expected in (("here", config_dir), ("there", config_dir / "work" / "deep")):
        r = sm(config_dir, "run", name, cwd=elsewhere)
        assert r.returncode == 0
        assert f"{expected}\n" in r.stdout


@pytest.mark.parametrize(
    ("spec", "note"),
    [
        ({"command": ["no-such-program-xyz", "--flag"]}, "cannot start: No such file or directory"),
        ({"command": ["./data.txt"]}, "cannot start: Permission denied"),
        ({"command": "true", "cwd": "missing-dir"}, "working directory"),
    ],
)
def test_a_command_that_cannot_start_is_a_clear_failure(config_dir, spec, note):
    (config_dir / "data.txt").write_text("not a program\n")
    make_config(
        config_dir, {"bad": spec, "good": "true"}, [{"name": "g", "scripts": ["bad", "good"]}]
    )
    r = sm(config_dir, "run", "bad")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "bad ✗ FAILED" in r.stdout
    assert note in r.stderr
    [last] = cli_json("--config-dir", str(config_dir), "history", "bad", "--json")
    assert last["status"] == "failed" and note in last["detail"]
    assert note.encode() in log_of(config_dir, "bad")
    r = sm(config_dir, "run-group", "g")  # the group goes on to the next script
    assert r.stdout == "Running g...\nRunning bad... ✗ FAILED\nRunning good... ✓\n"


def test_run_all_runs_every_script_serially_in_declaration_order(config_dir):
    make_config(config_dir, {})
    (config_dir / "scripts.yaml").unlink()
    order = ["zeta", "alpha", "mid", "first_of_b", "last"]
    write(
        config_dir,
        "scripts/a.yaml",
        "scripts:\n"
        + "".join(f"  - name: {n}\n    command: sh probe.sh {n} 0.1\n" for n in order[:3]),
    )
    write(
        config_dir,
        "scripts/b.yaml",
        "scripts:\n"
        + "".join(
            f"  - name: {n}\n    command: sh probe.sh {n} 0.1 {int(n == 'first_of_b')}\n"
            for n in order[3:]
        ),
    )
    r = sm(config_dir, "run-all")
    assert r.returncode == 1  # first_of_b fails, the rest still run
    assert r.stdout.splitlines()[1:] == [
        f"Running {n}... {'✗ FAILED' if n == 'first_of_b' else '✓'}" for n in order
    ]
    spans = events(config_dir)
    assert list(spans) == order
    assert max_overlap(spans) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"line one\n\xff\xfe not utf-8 \x00 nul\r\nno trailing newline",
        b"ends with newline\n",
        b"",
    ],
)
def test_output_lands_byte_exact_in_the_log(config_dir, body):
    (config_dir / "out.bin").write_bytes(body)
    make_config(config_dir, {"bytes": {"command": ["cat", "out.bin"]}})
    r = subprocess.run(
        [sys.executable, str(MAIN), "--config-dir", str(config_dir), "run", "bytes"],
        capture_output=True,
    )
    assert r.returncode == 0, r.stderr
    log = log_of(config_dir, "bytes")
    newline = b"" if body.endswith(b"\n") or not body else b"\n"
    assert (RULE + "\n").encode() + body + newline + (RULE + "\nfinished: success").encode() in log
    assert body.split(b"\xff")[0] in r.stdout  # echoed to the terminal too


def test_the_closing_line_of_run_stays_on_its_own_line(config_dir):
    make_config(
        config_dir,
        {"partial": {"command": ["printf", "no newline"]}, "full": "echo full", "silent": "true"},
    )
    r = sm(config_dir, "run", "partial")
    assert r.stdout.startswith("Running partial...\nno newline\npartial ✓ (")
    r = sm(config_dir, "run", "full")
    assert r.stdout.startswith("Running full...\nfull\nfull ✓ (")
    r = sm(config_dir, "run", "silent")
    assert r.stdout.startswith("Running silent...\nsilent ✓ (")


def test_stdout_and_stderr_interleave_in_order(config_dir):
    make_config(
        config_dir,
        {"mix": "echo out1; echo err1 >&2; echo out2; echo err2 >&2"},
    )
    assert sm(config_dir, "run", "mix", "-q").returncode == 0
    assert b"out1\nerr1\nout2\nerr2\n" in log_of(config_dir, "mix")


def test_exit_codes_are_recorded(config_dir):
    make_config(config_dir, {"seven": "exit 7", "ok": "true", "killed": "kill -9 $$"})
    r = sm(config_dir, "run", "seven")
    assert r.returncode == 1
    assert "seven ✗ FAILED (exit 7," in r.stdout
    assert (
        cli_json("--config-dir", str(config_dir), "history", "seven", "--json")[0]["exit_code"] == 7
    )
    assert sm(config_dir, "run", "ok").returncode == 0
    assert sm(config_dir, "run", "killed").returncode == 1
    [last] = cli_json("--config-dir", str(config_dir), "history", "killed", "--json")
    assert (last["status"], last["signal"]) == ("failed", 9)


def test_leftover_background_processes_are_kept_or_killed(config_dir, marker):
    cmd = "sleep 120 & echo spawned"
    make_config(
        config_dir,
        {
            "keep": {"command": cmd, "env": {"MARKER": marker + "-keep"}},
            "kill": {"command": cmd, "env": {"MARKER": marker}, "leftovers": "kill"},
        },
        settings={"execution": {"kill_grace": 1}},
    )
    try:
        assert sm(config_dir, "run", "keep").returncode == 0
        assert len(marked_pids(marker + "-keep")) == 1  # cron users rely on `nohup app &`
        assert b"left running" in log_of(config_dir, "keep")
    finally:
        kill_marked(marker + "-keep")
    assert sm(config_dir, "run", "kill").returncode == 0
    assert wait_for(lambda: not marked_pids(marker), timeout=3)
    assert b"ended (leftovers: kill)" in log_of(config_dir, "kill")


def test_scripts_get_their_run_context_in_the_environment(config_dir):
    make_config(
        config_dir,
        {
            "ctx": "echo $SCRIPT_MONITOR_SCRIPT/$SCRIPT_MONITOR_GROUP/$SCRIPT_MONITOR_RUN_ID/"
            "$SCRIPT_MONITOR_CONFIG_DIR"
        },
        [{"name": "g", "scripts": ["ctx"]}],
    )
    assert sm(config_dir, "run-group", "g").returncode == 0
    [last] = cli_json("--config-dir", str(config_dir), "history", "ctx", "--json")
    assert f"ctx/g/{last['id']}/{config_dir}\n".encode() in log_of(config_dir, "ctx")


def test_run_echoes_output_live_and_quiet_does_not(config_dir):
    make_config(config_dir, {"talk": "echo hello; echo oops >&2"})
    r = sm(config_dir, "run", "talk")
    assert r.stdout.startswith("Running talk...\nhello\noops\ntalk ✓ (")
    r = sm(config_dir, "run", "talk", "-q")
    assert r.stdout.startswith("Running talk...\ntalk ✓ (")


def test_engine_run_script_returns_its_result_and_log(config_dir):
    make_config(config_dir, {"x": "echo engine; exit 3"})
    config = load_config(config_dir)
    store = Store(config.state_dir)
    result = Engine(config, store).run_script("x")
    assert (result.status, result.exit_code, result.ok) == ("failed", 3, False)
    assert result.log_path is not None and result.log_path.is_file()
    assert b"engine\n" in result.log_path.read_bytes()
    row = store.runs.run(result.run_id)
    assert row is not None and row.status == "failed" and row.exit_code == 3
    assert row.log_path is not None
    assert os.path.samefile(config.log_dir / row.log_path, result.log_path)
    store.close()


# ---------------------------------------------------------------- what every child gets


def _inherited_ignores() -> int:
    """The signals this test process ignores that Python did not ignore itself."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("SigIgn:"))
    return int(line.split()[1], 16) & ~(1 << signal.SIGPIPE - 1 | 1 << signal.SIGXFSZ - 1)


def test_children_get_no_inherited_descriptor_and_default_signals(config_dir, tmp_path):
    """Both ways of starting a child (posix_spawn in the config dir, Popen elsewhere)
    give it the same: stdin, stdout and stderr only, SIGPIPE and SIGXFSZ at their
    defaults (Python ignores them), and a session of its own."""
    (config_dir / "elsewhere").mkdir()
    # No pipeline before the listing: the shell would hold the pipe's descriptors.
    check = (
        "ls /proc/$$/fd; grep SigIgn /proc/$$/status;"
        " sid=$(cut -d' ' -f6 /proc/$$/stat); test \"$sid\" = $$ && echo own-session"
    )
    make_config(
        config_dir,
        {"here": check, "there": {"command": check, "cwd": "elsewhere"}},
        [{"name": "g", "execution": "parallel", "scripts": ["here", "there"]}],
    )
    leak_r, leak_w = os.pipe()
    os.set_inheritable(leak_w, True)
    try:
        for args in (("run", "here"), ("run", "there"), ("run-group", "g")):
            r = sm(config_dir, *args, cwd=tmp_path, pass_fds=(leak_w,))
            assert r.returncode == 0, r.stderr
        for name in ("here", "there"):
            text = log_of(config_dir, name).decode()
            assert "=\n0\n1\n2\nSigIgn:" in text, text  # the inherited pipe is not passed on
            ignored = int(text.split("SigIgn:\t")[1].split()[0], 16)
            # glibc's posix_spawn leaves its two internal signals (32, 33) ignored; no
            # program can use them (SIGRTMIN is 34).  What the suite's own caller ignored
            # (nohup: SIGHUP; a background job of a shell: SIGQUIT) is passed on, as it is
            # to any child: script-monitor only undoes what Python itself ignores.
            assert ignored & ~(1 << 31 | 1 << 32 | _inherited_ignores()) == 0, text
            assert ignored & (1 << signal.SIGPIPE - 1 | 1 << signal.SIGXFSZ - 1) == 0, text
            assert "own-session" in text
    finally:
        os.close(leak_r)
        os.close(leak_w)


def test_a_program_is_looked_up_in_the_scripts_own_path(config_dir):
    bin_dir = config_dir / "bin"
    write(bin_dir, "hello-sm", "#!/bin/sh\necho hello from $0\n").chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    make_config(
        config_dir,
        {
            "found": {"command": ["hello-sm"], "env": {"PATH": path}},
            "missing": {"command": ["hello-sm"]},
        },
    )
    r = sm(config_dir, "run", "found", "-q")
    assert r.returncode == 0, r.stderr
    assert f"hello from {bin_dir}/hello-sm\n".encode() in log_of(config_dir, "found")
    r = sm(config_dir, "run", "missing", "-q")
    assert r.returncode == 1
    assert "cannot start: No such file or directory" in r.stderr


@pytest.mark.parametrize("mode", ["serial", "parallel"])
def test_no_script_starts_before_its_row_is_committed(config_dir, mode, monkeypatch):
    """A group records the runs that ended and the runs about to start in one commit,
    then starts them.  The real spawn is wrapped (not replaced) to look, at the moment
    of each start, from another connection: an uncommitted row would be invisible."""
    import sqlite3

    import script_monitor.executor as engine_module

    names = [f"s{i}" for i in range(6)]
    make_config(
        config_dir,
        {name: "true" for name in names},
        [{"name": "g", "execution": mode, "max_parallel_workers": 3, "scripts": names}],
    )
    config = load_config(config_dir)
    store = Store(config.state_dir)
    seen = []
    real_spawn = engine_module.spawn

    def spawn_and_look(argv, *, cwd, env, out_fd):
        with sqlite3.connect(store.path) as other:
            row = other.execute(
                "SELECT script, status FROM runs WHERE id = ?", (int(env["SCRIPT_MONITOR_RUN_ID"]),)
            ).fetchone()
        seen.append(row)
        return real_spawn(argv, cwd=cwd, env=env, out_fd=out_fd)

    monkeypatch.setattr(engine_module, "spawn", spawn_and_look)
    try:
        outcome = Engine(config, store).run_group("g")
    finally:
        store.close()
    assert [r.status for r in outcome.results] == ["success"] * 6
    assert sorted(seen) == [(name, "running") for name in names]
