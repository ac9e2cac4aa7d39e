"""The planner as a pure function: properties over any DAG, cap, stop_on_error and outcomes.

No processes and no clock: a simulated group calls ``decide``, starts what it says,
ends running attempts with drawn outcomes and jumps the clock to the next retry.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from script_monitor.config import Retries
from script_monitor.planner import STOPPED_DETAIL, Phase, Plan, Slots, decide
from script_monitor.states import RunStatus

OUTCOMES = [RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMEOUT]


@st.composite
def groups(draw, with_deps: bool = True):
    n = draw(st.integers(1, 8))
    names = [f"s{i}" for i in range(n)]
    serial = draw(st.booleans())
    deps: dict[str, list[str]] = {}
    if with_deps:
        # Edges only from earlier to later members: a DAG, listed in a valid serial order.
        for j in range(1, n):
            chosen = draw(st.lists(st.integers(0, j - 1), max_size=3, unique=True))
            if chosen:
                deps[names[j]] = [names[i] for i in chosen]
        if not serial:  # a parallel group may list a dependency after its dependent
            names = draw(st.permutations(names))
    workers = 1 if serial else draw(st.integers(1, 4))
    stop = serial and draw(st.booleans())
    retries = {
        name: Retries(
            count=draw(st.integers(0, 2)),
            delay=draw(st.sampled_from([0, 0.5, 3])),
            backoff=2,
            max_delay=4,
            exit_codes=draw(st.sampled_from([None, [75]])),
        )
        for name in names
    }
    return Plan.of(names, deps, workers, stop, retries, serial)


def simulate(plan: Plan, data) -> tuple[Slots, list[tuple[float, int]], list[int]]:
    """Run the plan to its end; return the slots, every (time, start) and skips."""
    slots = Slots.new(plan)
    now = 0.0
    starts: list[tuple[float, int]] = []
    skipped: list[int] = []
    for _ in range(500):
        d = decide(plan, slots, now)
        for i, detail in d.skip:
            assert slots[i].phase is Phase.PENDING, "only a pending member is skipped"
            slots.skipped(i, detail)
            skipped.append(i)
        for i in d.start:
            for dep in plan.deps(i):
                assert slots[dep].status is RunStatus.SUCCESS, "started before its dependency"
            slots.started(i)
            starts.append((now, i))
        running = [i for i, s in enumerate(slots) if s.phase is Phase.RUNNING]
        assert len(running) <= plan.workers, "more than the cap run at once"
        if running:
            i = data.draw(st.sampled_from(running))
            status = data.draw(st.sampled_from(OUTCOMES))
            code = {RunStatus.SUCCESS: 0, RunStatus.TIMEOUT: None}.get(
                status, data.draw(st.sampled_from([1, 75]))
            )
            slots.ended(plan, i, status, code, now)
            now += data.draw(st.sampled_from([0.0, 0.25, 1.0]))
        elif d.wake_at is not None:
            assert d.wake_at > now
            now = d.wake_at
        else:
            assert d.done, "nothing runs, nothing waits, nothing starts: yet not done"
            return slots, starts, skipped
    raise AssertionError("the group never ended")


@settings(max_examples=400, deadline=None)
@given(plan=groups(), data=st.data())
def test_every_script_ends_in_exactly_one_final_state(plan, data):
    slots, starts, skipped = simulate(plan, data)
    final = {RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.SKIPPED}
    for i, s in enumerate(slots):
        assert s.phase is Phase.DONE and s.status in final
        started = any(j == i for _, j in starts)
        assert started != (i in skipped), "a member both ran and was skipped, or neither"
        assert (s.status is RunStatus.SKIPPED) == (i in skipped)
        assert s.attempts <= plan.policy(i).count + 1


@settings(max_examples=300, deadline=None)
@given(plan=groups(), data=st.data())
def test_skips_follow_failed_dependencies_and_stop_on_error(plan, data):
    slots, _, _ = simulate(plan, data)
    first_failure = next(
        (i for i, s in enumerate(slots) if s.status in (RunStatus.FAILED, RunStatus.TIMEOUT)), None
    )
    for i, s in enumerate(slots):
        deps_ok = all(slots[d].status is RunStatus.SUCCESS for d in plan.deps(i))
        if s.status is RunStatus.SKIPPED:
            if s.detail == STOPPED_DETAIL:
                assert plan.stop_on_error and first_failure is not None
            else:
                assert not deps_ok and s.detail.startswith("needs ")
                named = s.detail.removeprefix("needs ")
                assert named in [plan.scripts[d] for d in plan.deps(i)]
        elif not plan.stop_on_error:
            assert deps_ok  # ran, so every dependency had succeeded


@settings(max_examples=300, deadline=None)
@given(plan=groups(with_deps=False), data=st.data())
def test_without_depends_on_the_order_is_todays(plan, data):
    """Serial: one at a time in list order (a retry keeps its place), stopping at the first
    failure with stop_on_error; parallel: first attempts start in list order."""
    slots, starts, _ = simulate(plan, data)
    firsts = []
    for _, i in starts:
        if i not in firsts:
            firsts.append(i)
    assert firsts == sorted(firsts)
    if plan.serial:
        order = [i for _, i in starts]
        assert order == sorted(order), "a serial group never goes back to an earlier script"
        ran = set(order)
        if plan.stop_on_error:
            failed = [i for i in ran if slots[i].status is not RunStatus.SUCCESS]
            assert len(failed) <= 1 and all(
                i < min(failed, default=len(slots)) or i in failed for i in ran
            )
        else:
            assert ran == set(range(len(slots)))
    else:
        assert {i for _, i in starts} == set(range(len(slots)))


def test_a_waiting_retry_holds_no_worker_slot():
    plan = Plan.of(["a", "b"], workers=1, retries={"a": Retries(count=1, delay=5)})
    slots = Slots.new(plan)
    assert decide(plan, slots, 0).start == [0]
    slots.started(0)
    assert slots.ended(plan, 0, RunStatus.FAILED, 1, 0.0) == 5
    # serial (one slot) keeps its order: b waits behind a's retry
    d = decide(plan, slots, 1.0)
    assert d.start == [] and d.wake_at == 5
    par = Plan.of(["a", "b"], workers=2, retries={"a": Retries(count=1, delay=5)})
    slots = Slots.new(par)
    slots.started(0)
    slots.started(1)
    slots.ended(par, 0, RunStatus.FAILED, 1, 0.0)
    assert decide(par, slots, 1.0).wake_at == 5
    # a parallel group with one worker does not wait behind a's retry
    one = Plan.of(["a", "b"], workers=1, retries={"a": Retries(count=1, delay=5)}, serial=False)
    slots = Slots.new(one)
    slots.started(0)
    slots.ended(one, 0, RunStatus.FAILED, 1, 0.0)
    assert decide(one, slots, 1.0).start == [1]
    # with two slots, b's slot is free again while a waits: a third member would start
    par3 = Plan.of(["a", "b", "c"], workers=2, retries={"a": Retries(count=1, delay=5)})
    slots = Slots.new(par3)
    for i in decide(par3, slots, 0).start:
        slots.started(i)
    slots.ended(par3, 0, RunStatus.FAILED, 1, 0.0)
    d = decide(par3, slots, 0.1)
    assert d.start == [2] and d.wake_at == 5


@pytest.mark.parametrize(
    ("policy", "status", "code", "attempt", "expected"),
    [
        (Retries(count=2), RunStatus.FAILED, 1, 1, True),
        (Retries(count=2), RunStatus.FAILED, 1, 3, False),  # count retries used
        (Retries(count=2), RunStatus.INTERRUPTED, None, 1, False),
        (Retries(count=2), RunStatus.LOST, None, 1, True),
        (Retries(count=2, exit_codes=[75]), RunStatus.FAILED, 75, 1, True),
        (Retries(count=2, exit_codes=[75]), RunStatus.FAILED, 1, 1, False),
        (Retries(count=2, exit_codes=[75]), RunStatus.TIMEOUT, None, 1, False),
        (Retries(count=0), RunStatus.FAILED, 1, 1, False),
    ],
)
def test_which_attempts_are_retried(policy, status, code, attempt, expected):
    assert policy.retries(status, code, attempt) is expected


def test_backoff_delays_are_capped():
    policy = Retries(count=6, delay=0.5, backoff=3, max_delay=10)
    assert [policy.delay_before(n) for n in range(2, 7)] == [0.5, 1.5, 4.5, 10, 10]
