"""A worker's record of a claimed run's end (``Claims.finish_claimed``): its row, the last
chunks of its log and the rotation of its script's logs together, on SQLite and on
PostgreSQL (one statement there), as ``Runs.finish_run`` with ``expire`` records them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from script_monitor.store import RunEnd, Store


def claimed(store: Store, script: str, started: float) -> int:
    """A run written by a caller and claimed by a worker, with a log."""
    log = f"{script}/{started:.3f}.log"
    run_id = store.runs.start_run(script, "manual", started, log_path=log)
    assert store.claims.claim_run(run_id, "w@far", "farhost|boot|1|1", started, log)
    return run_id


def chunks(store: Store, run_id: int) -> bytes:
    sizes = store.logs.sizes(run_id)
    return store.logs.span(run_id, 0, sizes[-1][0]) if sizes else b""


def states(store: Store, script: str) -> dict[int, str]:
    return {r.id: r.log_state for r in store.runs.history(script)}


def test_the_end_the_last_chunks_and_the_rotation_are_recorded_together(backend_store):
    store = backend_store
    base = time.time() - 1000
    old = [claimed(store, "s", base + i) for i in range(12)]
    for i, run_id in enumerate(old):
        store.logs.add(run_id, 0, b"early ")
        store.claims.finish_claimed(
            run_id, [(1, b"late")], RunEnd("success", base + i + 1, 1.0, 0, expire=("s", 10, None))
        )
    # Count rotation: 10 kept, so the two oldest went as the 11th and 12th ended.
    assert [states(store, "s")[i] for i in old] == ["rotated"] * 2 + ["ok"] * 10
    assert chunks(store, old[0]) == b"" and chunks(store, old[2]) == b"early late"
    run_id = claimed(store, "s", base + 100)
    store.logs.add(run_id, 0, b"shipped while it ran\n")
    gone = store.claims.finish_claimed(
        run_id,
        [(1, b"the rest\n"), (2, b"footer\n")],
        RunEnd(
            "failed",
            base + 101,
            1.5,
            exit_code=3,
            pid=4242,
            detail="exit 3",
            expire=("s", 10, None),
            usage=(0.25, 0.5, 2048),
            anomaly="slow",
        ),
    )
    assert gone == [f"s/{base + 2:.3f}.log"]
    assert states(store, "s")[old[2]] == "rotated" and chunks(store, old[2]) == b""
    row = store.runs.run(run_id)
    assert row is not None
    assert (row.status, row.exit_code, row.pid, row.detail, row.log_state) == (
        "failed",
        3,
        4242,
        "exit 3",
        "ok",
    )
    assert (row.ended, row.duration, row.anomaly) == (base + 101, 1.5, "slow")
    assert (row.cpu_user, row.cpu_system, row.max_rss) == (0.25, 0.5, 2048)
    assert chunks(store, run_id) == b"shipped while it ran\nthe rest\nfooter\n"
    # Repeated (a retry after a lost connection): nothing doubled, nothing more rotated.
    again = store.claims.finish_claimed(
        run_id,
        [(1, b"the rest\n"), (2, b"footer\n")],
        RunEnd("failed", base + 101, 1.5, 3, expire=("s", 10, None)),
    )
    assert again == []
    assert chunks(store, run_id) == b"shipped while it ran\nthe rest\nfooter\n"
    assert list(states(store, "s").values()).count("ok") == 10


def test_a_run_ending_behind_newer_ended_runs_is_rotated_at_once(backend_store):
    """With runs of one script ending out of order, the one that ends last may be beyond
    the newest ``keep`` itself: its log goes at once, chunks included."""
    store = backend_store
    base = time.time() - 1000
    first = claimed(store, "s", base)
    newer = [claimed(store, "s", base + 1 + i) for i in range(3)]
    for run_id in newer:
        store.claims.finish_claimed(
            run_id, [], RunEnd("success", base + 10, 1.0, 0, expire=("s", 3, None))
        )
    gone = store.claims.finish_claimed(
        first, [(0, b"out\n")], RunEnd("success", base + 11, 11.0, 0, expire=("s", 3, None))
    )
    assert gone == [f"s/{base:.3f}.log"]
    assert states(store, "s")[first] == "rotated" and chunks(store, first) == b""
    assert [states(store, "s")[i] for i in newer] == ["ok"] * 3
    assert store.runs.run(first).status == "success"  # type: ignore[union-attr]


def test_rotation_by_age(backend_store):
    store = backend_store
    now = time.time()
    aged = claimed(store, "s", now - 10 * 86400)
    store.claims.finish_claimed(aged, [(0, b"x")], RunEnd("success", now - 10 * 86400 + 1, 1.0, 0))
    fresh = claimed(store, "s", now - 5)
    gone = store.claims.finish_claimed(
        fresh, [(0, b"y")], RunEnd("success", now, 5.0, 0, expire=("s", None, now - 7 * 86400))
    )
    assert gone == [f"s/{now - 10 * 86400:.3f}.log"]
    assert states(store, "s") == {fresh: "ok", aged: "rotated"}
    assert chunks(store, fresh) == b"y" and chunks(store, aged) == b""


def test_workers_ending_runs_of_one_script_at_once_never_deadlock(pg_url, tmp_path: Path):
    """Four stores (four workers) each end 40 runs of the same script, all rotating the
    same logs at once: every end is recorded and none fails on a deadlock."""
    from conftest import empty_pg

    empty_pg(pg_url)
    setup = Store(tmp_path, pg_url)
    base = time.time() - 1000
    ids = [claimed(setup, "s", base + i * 0.001) for i in range(160)]
    errors: list[BaseException] = []

    def worker(mine: list[int]) -> None:
        store = Store(tmp_path, pg_url, retry_for=0)
        try:
            for run_id in mine:
                store.claims.finish_claimed(
                    run_id,
                    [(0, b"log\n")],
                    RunEnd("success", time.time(), 0.01, 0, expire=("s", 5, None)),
                )
        except BaseException as e:
            errors.append(e)
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(ids[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    runs = setup.runs.history("s")
    assert {r.status for r in runs} == {"success"} and len(runs) == 160
    # Ends committed at the same moment do not see each other: up to 3 extra logs stay
    # until the next end of the script, which rotates them.
    assert 5 <= sum(r.log_state == "ok" for r in runs) <= 8
    last = claimed(setup, "s", time.time())
    setup.claims.finish_claimed(
        last, [], RunEnd("success", time.time(), 0.01, 0, expire=("s", 5, None))
    )
    assert sum(r.log_state == "ok" for r in setup.runs.history("s")) == 5
    setup.close()


@pytest.mark.parametrize("size", [0, 1])
def test_an_empty_or_tiny_log_is_recorded(backend_store, size):
    store = backend_store
    run_id = claimed(store, "s", time.time() - 5)
    store.claims.finish_claimed(
        run_id, [(0, b"z")] if size else [], RunEnd("success", time.time(), 5.0)
    )
    assert chunks(store, run_id) == (b"z" if size else b"")
    assert store.runs.run(run_id).status == "success"  # type: ignore[union-attr]


def test_a_log_past_the_cap_is_shipped_up_to_it_and_the_detail_says_so(tmp_path: Path):
    """The worker's side: the output shipped while the run goes and the rest at its end,
    up to 8 MiB and a note; the run's detail says the history's copy was capped."""
    from script_monitor.distributed.worker import LOG_CAP, Runs, _ClaimedRun

    store = Store(tmp_path / "state")
    tracker = Runs(store, lost_after=60)
    try:
        log = tmp_path / "logs" / "s" / "big.log"
        log.parent.mkdir(parents=True)
        run_id = store.runs.start_run("s", "manual", time.time(), log_path="s/big.log")
        claim = _ClaimedRun(store, tracker, run_id, "w@here", str(tmp_path / "logs"))
        claim.start_run("s", "manual", time.time(), log_path="s/big.log")
        log.write_bytes(b"a" * (LOG_CAP // 2))
        assert claim.shipper is not None
        claim.shipper.ship()  # as the shipping thread does every half second
        with log.open("ab") as f:
            f.write(b"b" * LOG_CAP)
        claim.finish_run(run_id, RunEnd("success", time.time(), 1.0, 0, None, 77, "it said so"))
        shipped = chunks(store, run_id)
        assert shipped[:LOG_CAP] == b"a" * (LOG_CAP // 2) + b"b" * (LOG_CAP // 2)
        assert shipped[LOG_CAP:].startswith(b"\n[script-monitor: the output went on past")
        row = store.runs.run(run_id)
        assert row is not None and row.pid == 77
        assert row.detail == "it said so; log in the history capped at 8192 KiB"
        assert run_id not in tracker.shippers
    finally:
        tracker.stop.set()
        store.close()


def test_the_poll_returns_ended_runs_and_marks_stale_and_unclaimed_ones(backend_store):
    """``ended_or_stale``: one query for the runs that ended; a claimed run silent for
    ``lost_after`` and a run nobody claimed within ``claim_timeout`` are marked lost;
    an infinite ``lost_after`` judges no heartbeat."""
    import math

    store = backend_store
    now = time.time()
    done = claimed(store, "s", now - 50)
    store.claims.finish_claimed(done, [], RunEnd("success", now - 40, 10.0, 0))
    silent = claimed(store, "s", now - 50)
    store.claims.beat([silent], now - 45)
    beating = claimed(store, "s", now - 50)
    store.claims.beat([beating], now - 1)
    waiting = store.runs.start_run("s", "manual", now - 50, log_path="s/w.log")
    fresh = store.runs.start_run("s", "manual", now - 1, log_path="s/f.log")
    ids = [done, silent, beating, waiting, fresh]
    assert [r.id for r in store.claims.ended_or_stale(ids, math.inf, now)] == [done]
    got = {r.id: (r.status, r.detail) for r in store.claims.ended_or_stale(ids, 30, now, 20)}
    assert got == {
        done: ("success", None),
        silent: ("lost", "its worker was lost"),
        waiting: ("lost", "no worker took it"),
    }
    assert store.runs.run(beating).status == "running"  # type: ignore[union-attr]
    assert store.runs.run(fresh).status == "running"  # type: ignore[union-attr]


def test_a_claim_brings_the_durations_of_the_band_and_refuses_a_second_claim(backend_store):
    """The worker's claim reads the anomaly band's durations with it (one statement on
    PostgreSQL): the last ``window`` successful runs of the script before this one,
    newest first, as ``Runs.duration_band`` reads them."""
    store = backend_store
    base = time.time() - 1000
    for i in range(6):  # durations 1..6; the 4th failed
        run_id = claimed(store, "s", base + i)
        status = "failed" if i == 3 else "success"
        store.claims.finish_claimed(run_id, [], RunEnd(status, base + i + 1, float(i + 1), 0))
    other = claimed(store, "other", base + 7)
    store.claims.finish_claimed(other, [], RunEnd("success", base + 8, 99.0, 0))
    run_id = store.runs.start_run("s", "manual", base + 10)
    got = store.claims.claim_with_durations(run_id, "w@far", "farhost|boot|1|1", base + 10, None, 4)
    assert got == [6.0, 5.0, 3.0, 2.0]
    band = store.runs.duration_band("s", 4, 1, before=run_id)
    assert band is not None and band.median == 4.0 and band.runs == len(got)
    # A second delivery of the same message is refused, and changes nothing.
    assert (
        store.claims.claim_with_durations(run_id, "w@2", "x|boot|2|2", base + 11, None, 4) is None
    )
    assert store.runs.run(run_id).host == "w@far"
    # A script without successful runs gets an empty list, not a refusal.
    new = store.runs.start_run("fresh", "manual", base + 12)
    assert (
        store.claims.claim_with_durations(new, "w@far", "farhost|boot|1|1", base + 12, None, 4)
        == []
    )
