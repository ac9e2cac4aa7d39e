"""The web server's copy of the newest run of every script (web/lastruns.py) agrees with
reading it afresh (``store.reads.last_runs``) after every kind of change, on a real
SQLite history written by a second connection, as another process would."""

from __future__ import annotations

import time

from script_monitor.states import RunStatus
from script_monitor.store import RunEnd, Store
from script_monitor.web import lastruns
from script_monitor.web.lastruns import LastRuns


def test_the_copy_follows_new_ended_and_skipped_runs(tmp_path):
    state = tmp_path / ".script-monitor"
    writer, reader = Store(state), Store(state)
    now = time.time()
    first = writer.runs.start_run("a", "manual", now)
    writer.runs.finish_run(first, RunEnd(RunStatus.SUCCESS, now + 1, 1.0, exit_code=0))
    copy = LastRuns(reader)
    assert copy.get() == reader.reads.last_runs()
    running = writer.runs.start_run("a", "manual", now + 2)  # a new run, still going
    writer.runs.finish_run(
        writer.runs.start_run("b", "manual", now + 2), RunEnd(RunStatus.FAILED, now + 3, 1.0)
    )
    got = copy.get()
    assert got["a"].id == running and got["a"].status is RunStatus.RUNNING
    assert got == reader.reads.last_runs()
    writer.runs.finish_run(running, RunEnd(RunStatus.TIMEOUT, now + 5, 3.0))  # it ends
    writer.runs.add_skipped(["a", "c"], "manual")  # skipped runs never count
    got = copy.get()
    assert got["a"].status is RunStatus.TIMEOUT and "c" not in got
    assert got == reader.reads.last_runs()
    for i in range(lastruns.BACK + 10):  # many runs between two reads
        rid = writer.runs.start_run(f"s{i % 7}", "manual", now + 10 + i)
        writer.runs.finish_run(rid, RunEnd(RunStatus.SUCCESS, now + 11 + i, 1.0, exit_code=0))
    assert copy.get() == reader.reads.last_runs()
    assert copy.get() is not copy.runs  # the caller's own dict


def test_a_full_read_comes_again_after_a_while(tmp_path):
    state = tmp_path / ".script-monitor"
    store = Store(state)
    rid = store.runs.start_run("a", "manual", time.time())
    copy = LastRuns(store)
    assert copy.get()["a"].id == rid
    copy.runs["ghost"] = copy.runs["a"]  # something the increments cannot see go away
    assert "ghost" in copy.get()
    copy.loaded -= lastruns.FULL_EVERY
    assert "ghost" not in copy.get()
