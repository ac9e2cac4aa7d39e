"""A group run's progress rebuilt from its rows (``engine.GroupRun._replay``), as a
scheduler does when it adopts a group run whose orchestrator died (docs/DISTRIBUTED.md).

The rows are the store's own records (``store.Run``); no process is started.
"""

from __future__ import annotations

import time

from helpers import make_config
from script_monitor.config import load_config
from script_monitor.engine import Engine, GroupRun
from script_monitor.planner import Phase, Plan, decide
from script_monitor.states import LogState, RunStatus
from script_monitor.store import Run, Store


def _row(i: int, script: str, status: RunStatus, attempt: int = 1, code: int | None = None):
    now = time.time()
    ended = None if status is RunStatus.RUNNING else now - 1
    return Run(
        i, script, 7, "g", "manual", status, now - 5, ended, 1.0 if ended else None, code,
        None, None, "owner", None, LogState.NONE, None, attempt, "w1@test",
    )  # fmt: skip


def _group_run(tmp_path, scripts: dict, retries: dict) -> GroupRun:
    conf = make_config(tmp_path / "c", scripts)
    config = load_config(conf)
    engine = Engine(config, Store(config.state_dir))
    names = ["a", "b", "a", "c", "d"]
    plan = Plan.of(
        names,
        {"d": ["c"]},
        workers=2,
        retries={n: config.retries_for(config.script(n)) for n in set(names)} | retries,
        serial=False,
    )
    return GroupRun(engine, plan, "g", "parallel", "g")


def test_rows_rebuild_the_slots_and_nothing_started_starts_again(tmp_path):
    gr = _group_run(
        tmp_path,
        {
            "a": "true",
            "b": {"command": "false", "retries": {"count": 1, "delay": 0}},
            "c": "false",
            "d": "true",
        },
        {},
    )
    rows = [
        _row(1, "a", RunStatus.SUCCESS, code=0),  # the first "a"
        _row(2, "b", RunStatus.FAILED, code=1),  # attempt 1 failed, a retry was due
        _row(3, "a", RunStatus.RUNNING),  # the second "a", in flight
        _row(4, "b", RunStatus.RUNNING, attempt=2),  # b's retry, in flight
    ]
    running = gr._replay(rows)
    assert [(i, r.id) for i, r in running] == [(2, 3), (1, 4)]
    slots = gr.slots
    assert [s.phase for s in slots] == [
        Phase.DONE,
        Phase.RUNNING,
        Phase.RUNNING,
        Phase.PENDING,
        Phase.PENDING,
    ]
    assert slots[1].attempts == 2 and slots[0].status is RunStatus.SUCCESS
    assert gr.results[0].run_id == 1
    # Both worker places are taken by the runs in flight: nothing starts yet.
    assert decide(gr.plan, slots, time.monotonic()).start == []
    # When they end, "c" starts, never anything already run.
    slots.ended(gr.plan, 2, RunStatus.SUCCESS, 0, time.monotonic())
    assert decide(gr.plan, slots, time.monotonic()).start == [3]


def test_a_failed_attempt_waits_for_its_retry_from_when_it_ended(tmp_path):
    gr = _group_run(
        tmp_path,
        {"a": "true", "b": {"command": "false", "retries": {"count": 1, "delay": 60}}, "c": "true",
         "d": "true"},
        {},
    )  # fmt: skip
    gr._replay([_row(1, "a", RunStatus.SUCCESS, code=0), _row(2, "b", RunStatus.FAILED, code=1)])
    b = gr.slots[1]
    assert b.phase is Phase.WAITING
    # Ended a second ago with a 60 s delay: due in about 59 s, not 60 from now.
    assert 57 < b.retry_at - time.monotonic() < 60
    # A skipped member stays skipped; its dependents are skipped by the plan.
    gr2 = _group_run(tmp_path / "2", {"a": "true", "b": "true", "c": "false", "d": "true"}, {})
    gr2._replay([_row(1, "c", RunStatus.FAILED, code=1)])
    out = decide(gr2.plan, gr2.slots, time.monotonic())
    assert (4, "needs c") in out.skip
