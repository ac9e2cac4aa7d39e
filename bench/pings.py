"""Benchmark of passive checks' pings: ``POST /ping/{key}`` on one ``serve``, at a fixed rate.

    python bench/pings.py            # 1 000 pings/s for 10 s (~20 s in all)
    python bench/pings.py --quick    # 200 pings/s for 1 s: a smoke run (tests/test_bench_smoke.py)

A sender on loopback sends requests at a fixed rate (open loop: each one leaves at its
time, whatever the answers before it; 64 keep-alive HTTP/1.1 connections, so a slow
answer does not hold the next request back) to 100 keyed checks in turn, each a start
and then an exit code 0 with a 200-byte body (so every other ping opens a run and the
next one ends it and keeps its log; two pings of one check are 100 requests apart, and
may still pass each other on different connections: a start then ends the run before
it as ``lost``, which is counted, not judged).  Then the same rate against a static file
(``/static/app.css``), the floor the web stack itself sets.  Reported per workload:
requests sent and answered 200, the rate reached, p50/p90/p99/max latency (from each
request's send to its answer's end).  Afterwards every ping must be in the history:
``check_pings`` holds exactly as many rows as answers 200.  The server's CPU time per
request (from /proc) is reported too: unlike latency, it does not depend on what else
the machine is doing.  Targets: every ping recorded, the rate reached within 2%,
p99 <= 50 ms.

Results are printed as Markdown and written to bench/results-pings.json (--json PATH).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import select
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MAIN = ROOT / "main.py"

FULL = {"rate": 1000, "seconds": 10.0, "checks": 100, "connections": 64}
QUICK = {"rate": 200, "seconds": 1.0, "checks": 3, "connections": 16}
BODY = b"x" * 199 + b"\n"
P99_LIMIT_MS = 50.0


def setup(directory: Path, checks: int) -> list[str]:
    """A config directory with ``checks`` keyed checks; return their keys."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "scripts.yaml").write_text("scripts:\n  - {name: local, command: 'true'}\n")
    keys = [f"bench-key-{i:04d}-0123456789" for i in range(checks)]
    lines = ["checks:"]
    lines += [f"  - {{name: c{i}, period: 3600, key: {k}}}" for i, k in enumerate(keys)]
    (directory / "checks.yaml").write_text("\n".join(lines) + "\n")
    for name in ("scripts.yaml", "checks.yaml"):
        os.chmod(directory / name, 0o600)
    return keys


def serve(directory: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(directory), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    data = b""
    end = time.monotonic() + 30
    while b"\n" not in data and time.monotonic() < end:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            data += os.read(proc.stdout.fileno(), 4096)
    found = re.search(rb"serving http://[^:]+:(\d+)", data)
    if not found:
        proc.kill()
        raise SystemExit(f"serve did not start: {data!r}")
    return proc, int(found.group(1))


def requests_for(keys: list[str], n: int, port: int) -> list[bytes]:
    """``n`` ping requests: per check, a start, then an exit code 0 with a body."""
    out = []
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    for i in range(n):
        key = keys[i % len(keys)]
        if (i // len(keys)) % 2 == 0:
            out.append(
                f"POST /ping/{key}/start HTTP/1.1\r\n".encode()
                + host
                + b"Content-Length: 0\r\n\r\n"
            )
        else:
            out.append(
                f"POST /ping/{key}/0 HTTP/1.1\r\n".encode()
                + host
                + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
                + BODY
            )
    return out


def static_requests(n: int, port: int) -> list[bytes]:
    request = f"GET /static/app.css HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    return [request] * n


async def _answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    if length:
        await reader.readexactly(int(length.group(1)))
    return status


async def load(port: int, requests: list[bytes], rate: float, connections: int) -> dict:
    """Send ``requests`` at ``rate`` a second over a pool of keep-alive connections."""
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    late: list[float] = []

    async def one(request: bytes) -> None:
        reader, writer = await pool.get()
        sent = time.perf_counter()
        writer.write(request)
        status = await _answer(reader)
        latencies.append(time.perf_counter() - sent)
        statuses[status] = statuses.get(status, 0) + 1
        pool.put_nowait((reader, writer))

    start = time.perf_counter() + 0.05
    tasks = []
    for i, request in enumerate(requests):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            late.append(-wait)
        tasks.append(asyncio.create_task(one(request)))
    await asyncio.gather(*tasks)
    took = time.perf_counter() - start
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "sent": len(requests),
        "statuses": statuses,
        "seconds": took,
        "rate": len(latencies) / took,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "sender_behind_max_ms": max(late, default=0.0) * 1000,
    }


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(pid: int, port: int, requests: list[bytes], rate: float, connections: int) -> dict:
    before, mine = cpu_seconds(pid), time.process_time()
    result = asyncio.run(load(port, requests, rate, connections))
    result["server_cpu_ms_per_request"] = (cpu_seconds(pid) - before) * 1000 / len(requests)
    result["sender_cpu_share"] = (time.process_time() - mine) / result["seconds"]
    return result


def recorded(directory: Path) -> dict:
    db = sqlite3.connect(directory / ".script-monitor" / "history.db")
    try:
        pings = db.execute("SELECT COUNT(*) FROM check_pings").fetchone()[0]
        runs = dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
        open_runs = db.execute(
            "SELECT COUNT(*) FROM check_state WHERE open_run_id IS NOT NULL"
        ).fetchone()[0]
    finally:
        db.close()
    return {"pings": pings, "runs": runs, "open": open_runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 pings/s for 1 s")
    parser.add_argument("--rate", type=float, help="pings a second")
    parser.add_argument("--seconds", type=float, help="for how long")
    parser.add_argument("--json", type=Path, default=BENCH / "results-pings.json")
    parser.add_argument("--work", type=Path, help="where the config directory goes")
    args = parser.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    sizes["rate"] = args.rate or sizes["rate"]
    sizes["seconds"] = args.seconds or sizes["seconds"]
    n = int(sizes["rate"] * sizes["seconds"])
    work = args.work or Path(tempfile.mkdtemp(prefix="sm-bench-pings-"))
    directory = work / "conf"
    keys = setup(directory, int(sizes["checks"]))
    load_before = os.getloadavg()[0]
    proc, port = serve(directory)
    try:
        # a short warm-up, not counted in the timed runs' rates (its pings are recorded)
        asyncio.run(load(port, static_requests(50, port), 200, 8))
        floor = timed(proc.pid, port, static_requests(n, port), sizes["rate"], 16)
        pings = timed(
            proc.pid, port, requests_for(keys, n, port), sizes["rate"], int(sizes["connections"])
        )
    finally:
        proc.terminate()
        proc.wait(30)
    history = recorded(directory)
    ok = pings["statuses"].get(200, 0)
    checks = [
        ("every ping answered 200", ok == n, f"{ok} of {n}"),
        ("every ping recorded", history["pings"] == ok, f"{history['pings']} rows for {ok}"),
        (
            f"rate reached within 2% of {sizes['rate']:g}/s",
            pings["rate"] >= 0.98 * sizes["rate"],
            f"{pings['rate']:.0f}/s",
        ),
        (f"p99 <= {P99_LIMIT_MS:g} ms", pings["p99_ms"] <= P99_LIMIT_MS, f"{pings['p99_ms']:.1f}"),
    ]
    print(f"## Pings: {sizes['rate']:g}/s for {sizes['seconds']:g} s, {len(keys)} checks\n")
    print("| workload | sent | 200 | rate/s | p50 ms | p90 ms | p99 ms | max ms | server CPU ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in (("`POST /ping/{key}[/start, /0]`", pings), ("`GET /static/app.css`", floor)):
        print(
            f"| {label} | {r['sent']} | {r['statuses'].get(200, 0)} | {r['rate']:.0f}"
            f" | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f}"
            f" | {r['server_cpu_ms_per_request']:.2f} |"
        )
    print("\n| target | met | value |\n|---|---|---|")
    for what, met, value in checks:
        print(f"| {what} | {'yes' if met else 'NO'} | {value} |")
    print(f"\nhistory: {history['pings']} pings, runs by status {history['runs']}")
    print(
        f"the sender used {pings['sender_cpu_share']:.0%} of a core while pinging,"
        f" {floor['sender_cpu_share']:.0%} on the static file;"
        f" load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    report = {
        "quick": args.quick,
        "sizes": sizes,
        "pings": pings,
        "static": floor,
        "history": history,
        "checks": [{"target": w, "met": m, "value": v} for w, m, v in checks],
        "all_recorded": checks[0][1] and checks[1][1],
        "load": [load_before, os.getloadavg()[0]],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["all_recorded"] else 1


if __name__ == "__main__":
    sys.exit(main())
