"""Logs from anywhere (docs/DISTRIBUTED.md): a run's log read from the history's chunks when it is
not on this host — ``logs``, ``logs --follow``, the API's log (plain and SSE) — its
chunks gone with its log (rotation, clear-logs) and carried by ``store copy``.

The worker test runs a real worker whose config directory (and so ``log_dir``) is not
the caller's, so the log file is really absent where ``logs`` and ``serve`` run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest
import yaml

from conftest import empty_pg
from helpers import MAIN, direct_sql, make_config, sm, sm_bytes
from script_monitor.config import load_config
from script_monitor.store import RunEnd, Store
from script_monitor.web.logstream import text_of
from web_helpers import Server

BIG = 150_000  # bytes: a remote log of several 64 KiB chunks


def remote_run(store: Store, script: str, body: bytes, pieces: int = 3) -> int:
    """A run recorded as a worker on another machine records one: its row, a claim by
    that machine's process, its log shipped in ``pieces`` chunks, its end."""
    started = time.time() - 100  # older than the runs made here after it
    run_id = store.runs.start_run(script, "manual", started, log_path=f"{script}/remote.log")
    assert store.claims.claim_run(
        run_id, "w@far", "farhost|boot|1|1", started, f"{script}/remote.log"
    )
    step = -(-len(body) // pieces)
    for seq, i in enumerate(range(0, len(body), step)):
        store.logs.add(run_id, seq, body[i : i + step])
    store.runs.finish_run(run_id, RunEnd("success", started + 1, 1.0, exit_code=0))
    return run_id


def chunk_count(store: Store, run_id: int) -> int:
    return direct_sql(store, "SELECT COUNT(*) FROM run_logs WHERE run_id = ?", (run_id,))[0][0]


def test_logs_reads_a_remote_run_from_the_history_and_store_copy_carries_it(
    pg_url, config_dir, tmp_path
):
    empty_pg(pg_url)
    conf = make_config(
        config_dir,
        {
            "far": "true",
            "near": {"command": "echo near", "log_limit": {"type": "count", "value": 1}},
        },
    )
    body = b"header\n" + bytes(range(32, 127)) * (BIG // 95) + "é\nthe-remote-end\n".encode()
    store = Store(load_config(conf).state_dir)
    run_id = remote_run(store, "far", body)
    near_id = remote_run(store, "near", b"old remote output\n", 1)
    store.close()
    assert not (conf / "logs" / "far").exists()
    r = sm_bytes(conf, "logs", "far", "--no-pager", "--raw")
    assert r.returncode == 0, r.stderr
    assert r.stdout == body

    r = sm(conf, "store", "copy", "--to", pg_url)
    assert r.returncode == 0, r.stderr
    assert "4 run_logs" in r.stdout
    env = {"SCRIPT_MONITOR_STORE_URL": pg_url}
    r = sm(conf, "logs", "far", "--no-pager", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.encode() == body

    # the API serves it from the history too, plain and as SSE with byte offsets as ids
    server = Server(conf, env=env)
    try:
        plain = server.get(f"/api/v1/runs/{run_id}/log")
        assert plain.status_code == 200 and plain.content == body
        events = sse(server, run_id, offset=1000)
        assert "".join(d for _, d in events) == text_of(body[1000:])
        assert events[-1][0] == len(body)
        page = server.get(f"/runs/{run_id}")
        assert "the-remote-end" in page.text
    finally:
        server.stop()

    # a rotated log (log_limit: the newer local run keeps one) and cleared logs lose
    # their chunks in the history as well
    pg = Store(conf, pg_url)
    try:
        assert chunk_count(pg, near_id) == 1
        assert sm(conf, "run", "near", env=env).returncode == 0
        assert chunk_count(pg, near_id) == 0
        assert sm(conf, "logs", "near", "--run", str(near_id), env=env).returncode == 2
        assert chunk_count(pg, run_id) == 3
        assert sm(conf, "clear-all-logs", env=env).returncode == 0
        assert chunk_count(pg, run_id) == 0
        r = sm(conf, "logs", "far", env=env)
        assert r.returncode == 2 and "was cleared" in r.stderr
    finally:
        pg.close()


def sse(server: Server, run_id: int, offset: int = 0, seen=None) -> list[tuple[int, str]]:
    """(id, data) of each data event of the run's log stream, until its end event."""
    out: list[tuple[int, str]] = []
    with server.client() as c:
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(offset)}
        with c.stream("GET", f"/api/v1/runs/{run_id}/log", headers=headers) as resp:
            assert resp.status_code == 200
            event: dict = {}
            for line in resp.iter_lines():
                if line == "":
                    if event.get("event") == "end":
                        return out
                    if "data" in event and "id" in event:
                        out.append((int(event["id"]), "\n".join(event["data"])))
                        if seen is not None:
                            seen.append(time.monotonic())
                    event = {}
                    continue
                key, _, value = line.partition(": ")
                if key == "data":
                    event.setdefault("data", []).append(value)
                elif key in ("id", "event"):
                    event[key] = value
    raise AssertionError("the stream ended without an end event")


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["redis"], indirect=True)
def test_a_running_remote_run_s_log_live_where_its_file_is_not(cluster, tmp_path):
    lines = "for i in $(seq 1 8); do echo line-$i; sleep 0.4; done"
    conf = make_config(tmp_path / "caller", {"slow": lines})
    cluster.distribute(conf)
    there = tmp_path / "worker"  # the worker's own copy, its logs elsewhere
    shutil.copytree(conf, there)
    settings = yaml.safe_load((there / "config.yaml").read_text())
    settings["paths"] = {"log_dir": str(tmp_path / "worker-logs")}
    (there / "config.yaml").write_text(yaml.safe_dump(settings))
    cluster.worker(there, "far")
    server = Server(conf)
    caller = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "run", "slow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            runs = json.loads(sm(conf, "history", "slow", "--json").stdout)
            if runs and runs[0]["host"] == "far@test":
                break
            assert time.monotonic() < deadline, "the worker did not take the run"
            time.sleep(0.1)
        run_id = runs[0]["id"]
        follow = subprocess.Popen(
            [sys.executable, str(MAIN), "--config-dir", str(conf), "logs", "slow", "--follow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        seen: list[float] = []
        got: dict = {}
        reader = threading.Thread(target=lambda: got.update(e=sse(server, run_id, seen=seen)))
        reader.start()
        out, err = follow.communicate(timeout=60)
        assert follow.returncode == 0, err
        reader.join(60)
        echoed, _ = caller.communicate(timeout=60)
        assert caller.returncode == 0
        # `run` echoed the output from the same chunks, without the log's header and footer
        lines_echoed = echoed.decode().splitlines()
        assert lines_echoed[0].startswith("Running slow")
        assert lines_echoed[1:9] == [f"line-{i}" for i in range(1, 9)], lines_echoed
        assert len(lines_echoed) == 10 and "====" not in echoed.decode()
        ended = json.loads(sm(conf, "history", "slow", "--json").stdout)[0]
        assert ended["status"] == "success" and ended["host"] == "far@test"
        # the file is on the worker's side only; every reader showed its bytes
        assert not list((conf / "logs").glob("slow/*.log"))
        (remote,) = (tmp_path / "worker-logs").glob("slow/*.log")
        body = remote.read_bytes()
        assert b"line-8" in body and b"finished: success" in body
        assert out == body
        assert sm_bytes(conf, "logs", "slow", "--no-pager").stdout == body
        assert server.get(f"/api/v1/runs/{run_id}/log").content == body
        events = got["e"]
        assert "".join(d for _, d in events) == text_of(body)
        assert [i for i, _ in events] == sorted(i for i, _ in events)
        assert events[-1][0] == len(body)
        # live: the stream had sent output well before the run ended (8 lines, 3.2 s)
        assert len(events) >= 3 and seen[0] < seen[-1] - 1.0
    finally:
        server.stop()
        if caller.poll() is None:
            caller.kill()
            caller.wait()
