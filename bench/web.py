"""Benchmark of ``script-monitor serve``: latency under concurrent clients, and the cost
of following a chatty run live.

    python bench/web.py            # full: 500 scripts, 100 000 runs, 20 clients (~3 min)
    python bench/web.py --quick    # tiny sizes: a smoke run (tests/test_web_bench.py)

1. Latency: a history of 500 scripts and 100 000 runs (inserted straight into SQLite),
   one ``serve`` process, 20 clients on loopback each sending its next request as soon
   as the last one is answered (keep-alive HTTP/1.1), for ``/api/v1/scripts``, ``/``
   and ``/metrics`` in turn.  Reported: p50, p90, p99 and max latency, requests/s.
   Then the group-run page of a group of 200 scripts (a tree of ``depends_on``, one
   retried member, skipped ones) and its JSON, and the status page.
   Targets: p50 <= 25 ms, p99 <= 100 ms.
2. Followers: one chatty script (4 000 lines of 70 bytes, a millisecond apart) run with
   ``script-monitor run``, alone and with 100 clients following its log over SSE
   (``/api/v1/runs/ID/log``), alternating; its wall time is the run's recorded duration.
   Every follower must receive the whole log.  Targets: the median wall time with
   followers <= 1.10 x without; the server's peak RSS <= 150 MiB.

Results are printed as Markdown and written to bench/results-web.json (--json PATH).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import select
import shutil
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
SRC = ROOT / "src"

FULL = {
    "cold": 30,
    "scripts": 500,
    "runs": 100_000,
    "clients": 20,
    "requests": 2000,
    "followers": 100,
    "lines": 4000,
    "reps": 5,
}
QUICK = {
    "cold": 3,
    "scripts": 20,
    "runs": 1000,
    "clients": 4,
    "requests": 100,
    "followers": 10,
    "lines": 300,
    "reps": 1,
}
# (path, gzip): the targets are for the plain answers; browsers and Prometheus ask for gzip
ENDPOINTS = [
    ("/api/v1/scripts", False),
    ("/", False),
    ("/metrics", False),
    ("/", True),
    ("/metrics", True),
    ("/group-runs/{big}", False),
    ("/api/v1/group-runs/{big}", False),
    ("/status", False),
]
BIG = 200  # members of the group whose group-run page is measured
CHATTY = (
    "import sys, time\n"
    "for i in range({n}):\n"
    "    sys.stdout.write(f'chatty line {{i:06d}} ' + 'x' * 50 + '\\n'); sys.stdout.flush()\n"
    "    time.sleep(0.001)\n"
)


# ---------------------------------------------------------------- the store


def make_config(root: Path, scripts: int, lines: int) -> list[str]:
    """500 scripts in 10 groups (half scheduled), plus the chatty one."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"s{i:03d}" for i in range(scripts)]
    out = ["scripts:"]
    for name in names:
        out.append(
            f"  - name: {name}\n    description: benchmark script {name}\n    command: 'true'"
        )
    (root / "chatty.py").write_text(CHATTY.format(n=lines))
    out.append(f"  - name: chatty\n    command: [{sys.executable!r}, chatty.py]")
    (root / "scripts.yaml").write_text("\n".join(out) + "\n")
    groups = ["groups:"]
    per = max(1, scripts // 10)
    for g in range(10):
        members = names[g * per : (g + 1) * per] or names[:1]
        sched = f'\n    schedule: "*/{5 + g} * * * *"' if g % 2 == 0 else ""
        groups.append(
            f"  - name: g{g}\n    execution: parallel{sched}\n    scripts: [{', '.join(members)}]"
        )
    groups.append("  - name: chatty_group\n    scripts: [chatty]")
    big = names[:BIG]
    groups.append(f"  - name: big\n    execution: parallel\n    scripts: [{', '.join(big)}]")
    groups.append("    depends_on:")
    groups += [f"      {name}: [{big[(i - 1) // 2]}]" for i, name in enumerate(big) if i]
    (root / "groups.yaml").write_text("\n".join(groups) + "\n")
    (root / "config.yaml").write_text(
        "validation:\n  warn_unused_scripts: false\ndefault_log_limit: {type: count, value: 50}\n"
    )
    return names


def populate(root: Path, names: list[str], runs: int) -> None:
    """``runs`` finished runs spread over the scripts, inserted in one transaction."""
    sys.path.insert(0, str(SRC))
    from script_monitor.store import Store

    store = Store(root / ".script-monitor")
    store.runs.reap_lost()  # creates the database and its schema
    store.close()
    rng = random.Random(12)
    per = runs // len(names)
    start = time.time() - per * 600
    group_rows, run_rows = [], []
    statuses = ["success"] * 90 + ["failed"] * 6 + ["timeout", "skipped", "lost", "interrupted"]
    for tick in range(per):
        at = start + tick * 600
        group_rows.append(
            (tick + 1, f"g{tick % 10}", "schedule", "success", at, at + 30, "bench|x|1|1")
        )
        for i, name in enumerate(names):
            status = rng.choice(statuses)
            took = (
                None
                if status == "lost"
                else 0.0
                if status == "skipped"
                else rng.expovariate(1 / 20)
            )
            ended = at + (took or 0)
            run_rows.append(
                (
                    name,
                    tick + 1,
                    f"g{i % 10}",
                    "schedule",
                    status,
                    at,
                    ended,
                    took,
                    0 if status == "success" else 1,
                    "bench|x|1|1",
                    f"{name}/{tick:06d}.log",
                    "rotated",
                )
            )
    db = sqlite3.connect(store.path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO group_runs (id, group_name, trigger, status, started, ended, owner)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        group_rows,
    )
    db.executemany(
        "INSERT INTO runs (script, group_run_id, group_name, trigger, status, started, ended,"
        " duration, exit_code, owner, log_path, log_state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        run_rows,
    )
    db.execute("COMMIT")
    _big_group_run(db_path=store.path, names=names[:BIG], gid=per + 1, at=time.time() - 300)


def _big_group_run(db_path, names: list[str], gid: int, at: float) -> None:
    """One run of the group ``big``: every member once, one retried, a subtree skipped."""
    rows = []
    skipped = set(names[len(names) - len(names) // 10 :])
    for i, name in enumerate(names):
        start = at + (i.bit_length()) * 5.0
        if name in skipped:
            rows.append((name, "skipped", start, start, 0.0, 1, f"needs {names[(i - 1) // 2]}"))
            continue
        if i == 3:  # failed once, then succeeded
            rows.append((name, "failed", start, start + 2, 2.0, 1, None))
            start += 4
            rows.append((name, "success", start, start + 3, 3.0, 2, None))
            continue
        rows.append((name, "success", start, start + 4, 4.0, 1, None))
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "INSERT INTO group_runs (id, group_name, trigger, status, started, ended, owner)"
        " VALUES (?, 'big', 'manual', 'failed', ?, ?, 'bench|x|1|1')",
        (gid, at, at + 60),
    )
    db.executemany(
        "INSERT INTO runs (script, group_run_id, group_name, trigger, status, started, ended,"
        " duration, attempt, detail, owner, log_state)"
        " VALUES (?, ?, 'big', 'manual', ?, ?, ?, ?, ?, ?, 'bench|x|1|1', 'rotated')",
        [(n, gid, st, a, b, d, att, det) for n, st, a, b, d, att, det in rows],
    )
    db.execute("COMMIT")
    db.close()


# ---------------------------------------------------------------- the server


class Server:
    def __init__(self, root: Path, python: str):
        self.proc = subprocess.Popen(
            [python, str(MAIN), "--config-dir", str(root), "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        data = b""
        end = time.monotonic() + 60
        while b"\n" not in data and time.monotonic() < end:
            if select.select([self.proc.stdout], [], [], 0.2)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                data += chunk
        found = re.search(rb"http://([\d.]+):(\d+)/", data)
        if not found:
            self.stop()
            raise SystemExit(f"serve did not start: {data!r}")
        self.host, self.port = found.group(1).decode(), int(found.group(2))

    def status(self, key: str) -> int:
        """VmRSS or VmHWM of the server, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def cpu(self) -> float:
        """CPU seconds the server has used (user + system)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rfind(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- a small HTTP client


async def request(reader, writer, host: str, path: str, extra: str = "") -> tuple[int, bytes]:
    """One keep-alive GET; the whole body is read (Content-Length)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    body = await reader.readexactly(length)
    return status, body


async def load(host: str, port: int, path: str, clients: int, total: int, gz: bool = False) -> dict:
    """``clients`` connections sending ``total`` requests between them, back to back."""
    latencies: list[float] = []
    errors: list[str] = []
    sizes: set[int] = set()
    left = [total]
    extra = "Accept-Encoding: gzip\r\n" if gz else ""

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while left[0] > 0:
                left[0] -= 1
                t0 = time.perf_counter()
                status, body = await request(reader, writer, f"{host}:{port}", path, extra)
                latencies.append(time.perf_counter() - t0)
                sizes.add(len(body))
                if status != 200:
                    errors.append(f"{status}: {body[:200]!r}")
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "path": path,
        "gzip": gz,
        "requests": len(latencies),
        "errors": errors[:5],
        "p50_ms": q[49] * 1000,
        "p90_ms": q[89] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": max(latencies) * 1000,
        "rps": len(latencies) / wall,
        "body_bytes": max(sizes),
    }


def cold(root: Path, server: Server, path: str, n: int) -> dict:
    """One client; before each request another process commits a finished run, so every
    answer is computed afresh (what a busy installation sees after each run)."""
    db = sqlite3.connect(root / ".script-monitor" / "history.db", isolation_level=None)
    times = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            for i in range(n):
                now = time.time()
                db.execute(
                    "INSERT INTO runs (script, trigger, status, started, ended, duration,"
                    " exit_code, owner, log_state) VALUES (?, 'manual', 'success', ?, ?, 0.1,"
                    " 0, 'bench|x|1|1', 'none')",
                    (f"s{i % 7:03d}", now, now),
                )
                t0 = time.perf_counter()
                status, _ = await request(reader, writer, f"{server.host}:{server.port}", path)
                times.append(time.perf_counter() - t0)
                assert status == 200, status
        finally:
            writer.close()

    asyncio.run(one())
    db.close()
    return {
        "path": path,
        "requests": n,
        "p50_ms": statistics.median(times) * 1000,
        "max_ms": max(times) * 1000,
    }


# ---------------------------------------------------------------- followers


async def follow(host: str, port: int, run_id: int) -> tuple[int, str | None]:
    """Read a run's SSE log to its end: (bytes of data, the end status)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /api/v1/runs/{run_id}/log HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Accept: text/event-stream\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    last_id, status, event = 0, None, None
    buf = b""
    while True:
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        buf += chunk
        while b"\r\n" in buf:  # chunked transfer encoding: size line, data, CRLF
            size_line, _, rest = buf.partition(b"\r\n")
            size = int(size_line, 16)
            if len(rest) < size + 2:
                break
            data, buf = rest[:size], rest[size + 2 :]
            for line in data.decode().split("\n"):
                if line.startswith("id: "):
                    last_id = int(line[4:])
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "end":
                    status = line[6:]
            if size == 0:
                buf = b""
                break
    writer.close()
    return last_id, status


def chatty_run(root: Path, python: str, server: Server, followers: int) -> dict:
    """Run the chatty script, with ``followers`` SSE clients on it; its recorded duration."""
    host, port, cpu0 = server.host, server.port, server.cpu()
    db_path = root / ".script-monitor" / "history.db"
    db = sqlite3.connect(db_path)
    top = db.execute("SELECT COALESCE(MAX(id), 0) FROM runs").fetchone()[0]
    proc = subprocess.Popen(
        [python, str(MAIN), "--config-dir", str(root), "run", "--quiet", "chatty"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_id = None
    while run_id is None:
        row = db.execute("SELECT id FROM runs WHERE script = 'chatty' AND id > ?", (top,))
        found = row.fetchone()
        run_id = found[0] if found else None
        time.sleep(0.005)
    results: list = []
    if followers:

        async def all_of_them():
            return await asyncio.gather(*(follow(host, port, run_id) for _ in range(followers)))

        results = asyncio.run(all_of_them())
    proc.wait()
    row = db.execute("SELECT status, duration, log_path FROM runs WHERE id = ?", (run_id,))
    status, duration, log_path = row.fetchone()
    db.close()
    size = (root / "logs" / log_path).stat().st_size
    complete = all(got == size and st == "success" for got, st in results)
    return {
        "run": run_id,
        "status": status,
        "wall_s": duration,
        "log_bytes": size,
        "followers": followers,
        "every_follower_got_it_all": complete,
        "server_cpu_s": server.cpu() - cpu0,
    }


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--json", default=str(BENCH / "results-web.json"), help="results file")
    parser.add_argument("--work", help="working directory (default: a temporary one)")
    parser.add_argument("--python", default=sys.executable, help="python running serve")
    parser.add_argument(
        "--only", metavar="PATHS", help="only these pages' latency (comma-separated paths)"
    )
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="sm-web-bench-"))
    root = work / "conf"
    if root.exists():
        shutil.rmtree(root)
    names = make_config(root, size["scripts"], size["lines"])
    t0 = time.perf_counter()
    populate(root, names, size["runs"])
    big_id = size["runs"] // len(names) + 1
    endpoints = [(path.format(big=big_id), gz) for path, gz in ENDPOINTS]
    if args.only:
        endpoints = [e for e in endpoints if e[0] in args.only.split(",")]
    print(
        f"history: {size['scripts']} scripts, {size['runs']} runs "
        f"({time.perf_counter() - t0:.1f}s to insert)",
        flush=True,
    )
    report: dict = {
        "quick": args.quick,
        "sizes": size,
        "machine": _machine(),
        "latency": [],
        "followers": {},
    }

    # 1. latency
    server = Server(root, args.python)
    try:
        time.sleep(1)  # the server fills its caches at start
        for path, gz in endpoints:
            asyncio.run(load(server.host, server.port, path, 2, 20, gz))  # warm-up
            load0 = os.getloadavg()[0]
            result = asyncio.run(
                load(server.host, server.port, path, size["clients"], size["requests"], gz)
            )
            result["load_before"] = load0
            report["latency"].append(result)
            print(
                f"{path}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                f"{result['rps']:.0f} req/s",
                flush=True,
            )
        report["latency_server_rss_kib"] = server.status("VmHWM")
        report["cold"] = [
            cold(root, server, path, size["cold"])
            for path, gz in endpoints
            if not gz and path != "/status" and not args.only
        ]
        for c in report["cold"]:
            print(f"{c['path']} after a commit: median {c['p50_ms']:.1f} ms", flush=True)
    finally:
        server.stop()

    if args.only:  # the latency of some pages only
        report["followers"] = None
        report["targets"] = _targets(report)
        _print(report)
        Path(args.json).write_text(json.dumps(report, indent=1))
        return 0 if all(not r["errors"] for r in report["latency"]) else 1

    # 2. followers of a chatty run (a fresh server: its peak RSS is this part's)
    server = Server(root, args.python)
    samples: dict[str, list] = {"alone": [], "followed": []}
    try:
        chatty_run(root, args.python, server, 0)  # warm-up
        for rep in range(size["reps"]):
            order = ["alone", "followed"] if rep % 2 == 0 else ["followed", "alone"]
            for kind in order:
                n = size["followers"] if kind == "followed" else 0
                samples[kind].append(chatty_run(root, args.python, server, n))
        peak = server.status("VmHWM")
    finally:
        server.stop()
    alone = statistics.median(s["wall_s"] for s in samples["alone"])
    followed = statistics.median(s["wall_s"] for s in samples["followed"])
    report["followers"] = {
        "samples": samples,
        "median_alone_s": alone,
        "median_followed_s": followed,
        "ratio": followed / alone,
        "server_peak_rss_kib": peak,
        "every_follower_got_it_all": all(
            s["every_follower_got_it_all"] for s in samples["followed"]
        ),
    }
    report["targets"] = _targets(report)
    _print(report)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"\nresults written to {args.json}")
    ok = all(not r["errors"] for r in report["latency"])
    ok = ok and report["followers"]["every_follower_got_it_all"]
    return 0 if ok else 1


def _targets(report: dict) -> list[dict]:
    out = []
    for r in report["latency"]:
        if r["gzip"]:
            continue
        out.append({"what": f"{r['path']} p50", "value": r["p50_ms"], "limit": 25, "unit": "ms"})
        out.append({"what": f"{r['path']} p99", "value": r["p99_ms"], "limit": 100, "unit": "ms"})
    f = report["followers"]
    if f is None:
        for t in out:
            t["met"] = t["value"] <= t["limit"]
        return out
    out.append(
        {"what": "wall time followed / alone", "value": f["ratio"], "limit": 1.10, "unit": "x"}
    )
    out.append(
        {
            "what": "server peak RSS (followers)",
            "value": f["server_peak_rss_kib"] / 1024,
            "limit": 150,
            "unit": "MiB",
        }
    )
    for t in out:
        t["met"] = t["value"] <= t["limit"]
    return out


def _print(report: dict) -> None:
    s = report["sizes"]
    print(
        f"\n### Latency: {s['scripts']} scripts, {s['runs']} runs, {s['clients']} clients, "
        f"{s['requests']} requests per endpoint\n"
    )
    print("| endpoint | p50 ms | p90 ms | p99 ms | max ms | req/s | body bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in report["latency"]:
        print(
            f"| `{r['path']}`{' (gzip)' if r['gzip'] else ''} | {r['p50_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['max_ms']:.1f} | {r['rps']:.0f} | {r['body_bytes']} |"
        )
    if report.get("cold"):
        print("\nAfter a commit (one client, every answer computed afresh):\n")
        print("| endpoint | median ms | max ms |")
        print("|---|---:|---:|")
        for c in report["cold"]:
            print(f"| `{c['path']}` | {c['p50_ms']:.1f} | {c['max_ms']:.1f} |")
    f = report["followers"]
    if f is None:
        _print_targets(report)
        return
    print(
        f"\n### A chatty run ({s['lines']} lines), alone and with {s['followers']} SSE "
        f"followers, {s['reps']} each\n"
    )
    print("| | wall time, median s | samples s | server CPU s per run |")
    print("|---|---:|---|---:|")
    for kind in ("alone", "followed"):
        walls = ", ".join(f"{x['wall_s']:.2f}" for x in f["samples"][kind])
        cpu = statistics.median(x["server_cpu_s"] for x in f["samples"][kind])
        print(f"| {kind} | {f[f'median_{kind}_s']:.3f} | {walls} | {cpu:.2f} |")
    print(
        f"\nratio {f['ratio']:.3f}; server peak RSS {f['server_peak_rss_kib'] / 1024:.1f} MiB; "
        f"every follower got the whole log: {f['every_follower_got_it_all']}"
    )
    _print_targets(report)


def _print_targets(report: dict) -> None:
    print("\n| target | value | limit | met |")
    print("|---|---:|---:|---|")
    for t in report["targets"]:
        print(
            f"| {t['what']} | {t['value']:.2f} {t['unit']} | {t['limit']} {t['unit']} | "
            f"{'yes' if t['met'] else 'NO'} |"
        )


def _machine() -> dict:
    import importlib.metadata as md

    versions = {}
    for name in ("starlette", "uvicorn", "jinja2", "prometheus_client"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
        "versions": versions,
    }


if __name__ == "__main__":
    sys.exit(main())
