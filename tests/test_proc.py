"""proc.py: spawning in a session, waiting, timeouts and whole-tree kills, with real processes."""

from __future__ import annotations

import os
import signal
import time

from script_monitor.proc import (
    TOKEN_VAR,
    Interrupt,
    ProcResult,
    conclude,
    group_members,
    spawn,
    token_members,
    wait_for_exit,
)


def _out(tmp_path):
    path = tmp_path / "out"
    return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)


def test_a_child_runs_in_its_own_session_with_null_stdin(tmp_path):
    path, fd = _out(tmp_path)
    child = spawn(
        ["/bin/sh", "-c", "ps -o sid= -p $$; cat; echo done >&2"],
        cwd=str(tmp_path),
        env={"PATH": os.environ["PATH"]},
        out_fd=fd,
    )
    os.close(fd)
    assert wait_for_exit(child, 10, Interrupt()) == "exited"
    result = conclude(child, "exited", "", 1, False)
    assert (result.status, result.exit_code) == ("success", 0)
    sid, rest = path.read_text().split("\n", 1)
    assert int(sid) == child.pid, "the child leads its own session"
    assert rest == "done\n", "stdin was /dev/null (cat read nothing), stderr went to the log"


def test_a_program_that_cannot_start_is_a_failed_result(tmp_path):
    _, fd = _out(tmp_path)
    result = spawn(["/no/such/program"], cwd=str(tmp_path), env={}, out_fd=fd)
    os.close(fd)
    assert isinstance(result, ProcResult)
    assert result.status == "failed" and "cannot start" in (result.error or "")


def test_a_timeout_ends_the_whole_tree(tmp_path):
    _, fd = _out(tmp_path)
    token = f"proc-test-{os.getpid()}-{time.time_ns()}"
    child = spawn(
        ["/bin/sh", "-c", "trap '' TERM; sleep 60 & setsid sleep 61 & wait"],
        cwd=str(tmp_path),
        env={"PATH": os.environ["PATH"], TOKEN_VAR: token},
        out_fd=fd,
    )
    os.close(fd)
    deadline = time.monotonic() + 5
    while len(token_members(token)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(token_members(token)) == 3, "sh, sleep and the setsid sleep carry the token"
    started = time.monotonic()
    assert wait_for_exit(child, 0.2, Interrupt()) == "timeout"
    result = conclude(child, "timeout", token, 0.5, False)
    assert result.status == "timeout" and result.signal == signal.SIGKILL  # it ignored TERM
    assert token_members(token) == [] and group_members(child.pid) == []
    assert time.monotonic() - started < 5


def test_an_interrupt_wakes_a_waiting_run(tmp_path):
    _, fd = _out(tmp_path)
    child = spawn(["sleep", "30"], cwd=str(tmp_path), env=dict(os.environ), out_fd=fd)
    os.close(fd)
    interrupt = Interrupt()
    interrupt.fire(signal.SIGINT)
    assert interrupt.fired and interrupt.wait(10)
    assert wait_for_exit(child, 0, interrupt) == "interrupted"
    result = conclude(child, "interrupted", "", 1, False)
    assert result.status == "interrupted" and group_members(child.pid) == []


def test_leftovers_are_listed_after_an_exit(tmp_path):
    _, fd = _out(tmp_path)
    child = spawn(["/bin/sh", "-c", "sleep 30 &"], cwd=str(tmp_path), env=dict(os.environ),
                  out_fd=fd)  # fmt: skip
    os.close(fd)
    assert wait_for_exit(child, 10, Interrupt()) == "exited"
    result = conclude(child, "exited", "", 1, kill_leftovers=False)
    try:
        assert result.status == "success" and len(result.leftovers) == 1
    finally:
        for pid in result.leftovers:
            os.kill(pid, signal.SIGKILL)
