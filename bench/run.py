"""The benchmark harness: script-monitor against bare baselines, workload by workload.

    python bench/run.py            # full run (about 10 minutes on 2 cores)
    python bench/run.py --quick    # tiny sizes, one repetition: a smoke run for CI

Every workload is run once untimed (warm-up; W2, W3 and W8 ten times, see WARMUPS),
then several timed repetitions.
Within a repetition script-monitor and the baselines run one after the other,
the order reversed on every other repetition; ratios against `bare` are taken
pair by pair (same repetition) and the median of those ratios is reported.
Wall time is measured around spawn + exit of the tool's process; peak RSS is
``ru_maxrss`` from ``os.wait4`` of that process (the maximum over it and the
children it reaped; those children are sh, sleep, true, yes and head, all far
smaller than a Python process).  After every run the harness checks that every
script really ran: script-monitor's history rows and log footers, the
baselines' exit codes and log files.  Results are printed as Markdown tables
and written to a JSON file.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import itertools
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MAIN = ROOT / "main.py"
GROUP = "g"
W4_LINE = "script-monitor benchmark output line, 64 bytes long, repeated.."

# key -> (full size, quick size); sizes are counts, seconds or bytes per workload
SIZES = {
    "W1": ({"n": 7, "sleep": 1, "cap": 7}, {"n": 3, "sleep": 0.1, "cap": 3}),
    "W2": ({"n": 400, "cap": 8}, {"n": 20, "cap": 4}),
    "W3": ({"n": 200}, {"n": 10}),
    "W4": ({"bytes": 200_000_000}, {"bytes": 1_000_000}),
    "W5": ({"n": 100, "sleep": 2, "cap": 100}, {"n": 10, "sleep": 0.2, "cap": 10}),
    "W6": ({"scripts": 500, "runs": 100_000}, {"scripts": 20, "runs": 1_000}),
    "W8": ({"layers": 10, "width": 20, "cap": 8}, {"layers": 3, "width": 4, "cap": 2}),
}
REPS = {"W1": 9, "W2": 21, "W3": 15, "W4": 9, "W5": 7, "W6": 21, "W8": 31}
# Untimed runs before the timed ones.  The many-run workloads are measured in the
# steady state of an installation that runs them every minute: script-monitor keeps
# the newest 10 logs of a script (default_log_limit), so from its 11th run on every
# run also rotates (deletes) one.  Were the timed repetitions to straddle that point,
# a run's median would depend on how many repetitions it had: on this disk rotation
# costs up to 0.2 ms a run.
WARMUPS = {"W2": 10, "W3": 10, "W8": 10}
# Companions: other groups of the same scripts, in the same config directory (so
# their logs go to the same folders), timed in the same repetitions by script-monitor
# and bare.  W8's per-run overhead is compared with W2's shape at W8's own number of
# runs: the same 200 scripts, parallel, cap 8, without depends_on.  W2 proper has
# 400 runs, so dividing each one's extra time by its runs would give W8 twice W2's
# share of the fixed start-up (about 20 ms: interpreter, imports, config, opening the
# history).  The one-run group measures that start-up, to show the figures without it.
# key -> [(label, group name, members: "all" or "first", execution)]
COMPANIONS = {
    "W2": [("1 run", "one", "first", "serial")],
    "W8": [("W2 shape", "flat", "all", "parallel"), ("1 run", "one", "first", "serial")],
}


# ---------------------------------------------------------------- measuring


@dataclass
class Sample:
    """One timed run of one tool."""

    wall: float
    rss_kib: int
    rc: int
    problem: str | None = None


@dataclass
class Tool:
    """A command line to time, with its untimed preparation and its proof of work."""

    name: str
    argv: list[str]
    check: Callable[[Sample], str | None]
    prepare: Callable[[], None] = lambda: None
    samples: list[Sample] = field(default_factory=list)


# Why a C helper: a child's ru_maxrss also counts the address space it had before
# exec, and a child of this harness starts as a copy of (or, with vfork, as) the
# harness's own ~20 MiB Python process.  The helper is a 1 MiB process that forks,
# execs the tool, times it with CLOCK_MONOTONIC and reads wait4's rusage, so the
# peak RSS it reports is the tool's own.
SPAWN_C = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    struct timespec t0, t1;
    struct rusage ru;
    int status;
    if (argc < 3) return 125;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid == 0) { execvp(argv[2], argv + 2); _exit(127); }
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) return 125;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    FILE *f = fopen(argv[1], "w");
    if (!f) return 125;
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(f, "%.9f %ld %d\n", wall, ru.ru_maxrss, status);
    fclose(f);
    return 0;
}
"""


def build_spawner(work: Path) -> Path | None:
    """Compile the measuring helper; None when no C compiler is there."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    (work / "spawn.c").write_text(SPAWN_C)
    done = subprocess.run([cc, "-O2", "-o", str(work / "spawn"), str(work / "spawn.c")],
                          capture_output=True)  # fmt: skip
    return work / "spawn" if done.returncode == 0 else None


def child_env(work: Path) -> dict[str, str]:
    """The same environment for every tool: plain output, no inherited config dir.

    Byte-code is cached (under the work directory, not in the checkout), as on any
    installed system: with PYTHONDONTWRITEBYTECODE, set in some sandboxes, every
    start would recompile script-monitor's sources (about 17 ms here) while bare's
    few lines cost nothing to compile.  The warm-up run writes the cache.
    """
    env = dict(os.environ)
    env.pop("SCRIPT_MONITOR_HOME", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env["NO_COLOR"] = "1"
    env["PARALLEL_SHELL"] = "/bin/sh"
    return env


def measure(argv: list[str], out_dir: Path, spawner: Path | None, env: dict) -> Sample:
    """Run ``argv`` with stdout/stderr to files; its wall time, peak RSS and exit code.

    Without the helper (no C compiler) the harness times the tool itself, and the
    peak RSS is then only an upper bound (it includes the harness's own size).
    """
    result = out_dir / "spawn.result"
    with open(out_dir / "stdout", "wb") as out, open(out_dir / "stderr", "wb") as err:
        if spawner is not None:
            subprocess.run([str(spawner), str(result), *argv], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=err, env=env, check=True)  # fmt: skip
            wall, rss, status = result.read_text().split()
            return Sample(float(wall), int(rss), os.waitstatus_to_exitcode(int(status)))
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Sample(wall, usage.ru_maxrss, proc.returncode)


def run_tool(tool: Tool, out_dir: Path, bench: Bench) -> Sample:
    """Prepare, time and check one run of ``tool``."""
    tool.prepare()
    settle(out_dir)
    sample = measure(tool.argv, out_dir, bench.spawner, bench.env)
    if sample.rc != 0:
        tail = (out_dir / "stderr").read_text(errors="replace")[-400:]
        sample.problem = f"exit code {sample.rc}: {tail.strip()}"
    else:
        sample.problem = tool.check(sample)
    return sample


def settle(work: Path) -> None:
    """Write back and evict the big logs earlier runs left in the page cache.

    Otherwise a run pays for its predecessors' output: on this machine, writing
    200 MB took 0.15 s with little in the cache and 0.7-0.9 s once a few earlier
    200 MB logs were cached, whichever tool wrote them.  Logs stay on disk, so
    script-monitor's rotation still does its real work.  Only logs are evicted:
    the history database stays cached, as it is for anyone using it.
    """
    os.sync()
    for folder, _, files in os.walk(work):
        for name in files:
            if not name.endswith(".log"):
                continue
            path = os.path.join(folder, name)
            try:
                if os.path.getsize(path) < 1 << 20:
                    continue
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def run_reps(tools: list[Tool], reps: int, out_dir: Path, bench: Bench, warmups: int = 1) -> None:
    """``warmups`` untimed runs of each tool, then ``reps`` alternating timed repetitions."""
    for _ in range(warmups):
        for tool in tools:
            warm = run_tool(tool, out_dir, bench)
            if warm.problem:
                tool.samples.append(warm)  # keep the failure visible in the results
    for rep in range(reps):
        order = tools if rep % 2 == 0 else list(reversed(tools))
        for tool in order:
            sample = run_tool(tool, out_dir, bench)
            tool.samples.append(sample)
            bench.log(f"  rep {rep + 1}/{reps} {tool.name:<22} {sample.wall:8.3f}s")


# ---------------------------------------------------------------- configurations


def write_config(
    root: Path,
    commands: dict[str, str],
    execution: str,
    cap: int,
    needs: dict[str, list[str]] | None = None,
    extra: tuple[tuple[str, list[str], str], ...] = (),
) -> None:
    """A config dir with group ``g`` holding every script in order, and ``extra``
    groups: (name, members, execution), with the same cap and no depends_on."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(f"execution:\n  max_parallel_workers: {cap}\n")
    lines = ["scripts:"]
    for name, command in commands.items():
        lines += [f"  - name: {name}", f"    command: {json.dumps(command)}"]
    (root / "scripts.yaml").write_text("\n".join(lines) + "\n")
    members = "".join(f"      - {name}\n" for name in commands)
    (root / "groups.yaml").write_text(
        f"groups:\n  - name: {GROUP}\n    execution: {execution}\n"
        f"    max_parallel_workers: {cap}\n    scripts:\n{members}"
        + (f"    depends_on: {json.dumps(needs)}\n" if needs else "")
        + "".join(
            f"  - name: {name}\n    execution: {mode}\n    max_parallel_workers: {cap}\n"
            f"    scripts: {json.dumps(members)}\n"
            for name, members, mode in extra
        )
    )


def script_names(n: int) -> list[str]:
    return [f"s{i:03d}" for i in range(n)]


def commands_file(root: Path, commands: dict[str, str], log_dir: Path) -> Path:
    """One shell line per script, its output redirected to its own log (xargs, parallel)."""
    path = log_dir.with_name(log_dir.name + ".cmds")
    path.write_text(
        "".join(f"{cmd} > {log_dir / name}.log 2>&1\n" for name, cmd in commands.items())
    )
    return path


# ---------------------------------------------------------------- proofs of work


def sm_check(
    root: Path, names: list[str], min_bytes: int = 0, log_dir: Path | None = None
) -> Callable[[Sample], str | None]:
    """script-monitor ran every script: success rows in its newest group run, log footers."""
    logs = log_dir or root / "logs"

    def check(_sample: Sample) -> str | None:
        db = sqlite3.connect(f"file:{root / '.script-monitor' / 'history.db'}?mode=ro", uri=True)
        try:
            (gid,) = db.execute("SELECT MAX(id) FROM group_runs").fetchone()
            rows = db.execute(
                "SELECT script, status, exit_code, log_path FROM runs WHERE group_run_id = ?",
                (gid,),
            ).fetchall()
        finally:
            db.close()
        if sorted(r[0] for r in rows) != sorted(names):
            return f"history has {len(rows)} runs in group run {gid}, expected {len(names)}"
        bad = [r[0] for r in rows if r[1] != "success" or r[2] != 0]
        if bad:
            return f"not successful: {', '.join(bad[:5])}"
        return _check_logs([logs / r[3] for r in rows], min_bytes, b"finished: success")

    return check


def file_check(log_dir: Path, names: list[str], min_bytes: int = 0) -> Callable:
    """A baseline ran every script: its exit code was 0 (checked before) and each log exists."""

    def check(_sample: Sample) -> str | None:
        return _check_logs([log_dir / f"{n}.log" for n in names], min_bytes, None)

    return check


def folder_check(log_dir: Path, names: list[str], min_bytes: int = 0) -> Callable:
    """bare ran every script: a new log per run in a folder per script (its newest checked)."""

    def check(_sample: Sample) -> str | None:
        newest = []
        for n in names:
            logs = sorted((log_dir / n).glob(f"{n}_*.log"))
            if not logs:
                return f"no log of {n} in {log_dir / n}"
            newest.append(logs[-1])
        return _check_logs(newest, min_bytes, None)

    return check


def _check_logs(paths: list[Path], min_bytes: int, footer: bytes | None) -> str | None:
    for path in paths:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return f"missing log {path}"
        if size < min_bytes:
            return f"log {path} has {size} bytes, expected at least {min_bytes}"
        if footer is not None:
            with open(path, "rb") as f:
                f.seek(max(0, size - 300))
                if footer not in f.read():
                    return f"log {path} has no '{footer.decode()}' footer"
    return None


def fresh_dir(path: Path) -> Callable[[], None]:
    def prepare() -> None:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)

    return prepare


# ---------------------------------------------------------------- run-group workloads


def group_tools(
    sm: list[str],
    root: Path,
    commands: dict[str, str],
    cap: int,
    min_bytes: int = 0,
    before: Path | None = None,
    group: str = GROUP,
    baselines: bool = True,
):
    """script-monitor, bare, xargs -P and (when installed) GNU parallel on one group
    (only the first two without ``baselines``).

    script-monitor, ``before`` and bare write their logs into the same folders
    (``root/logs/NAME/``, each under names of its own).  On this ext4 the cost of
    creating a file depends on where its directory lives: 0.02 ms in one folder,
    0.3-0.8 ms in another, at the same moment (the kernel's search for a free inode
    in the directory's block group).  In folders of their own, two identical builds
    differed by 20% on W2 (1.19x and 1.42x bare) by their directories alone.
    """
    names = list(commands)
    py = sm[0]
    logs = root / "logs"
    tools = [
        Tool(
            "script-monitor",
            [*sm, "--config-dir", str(root), "run-group", group],
            sm_check(root, names, min_bytes),
        ),
        Tool(
            "bare",
            [py, str(BENCH / "bare.py"), str(root), group, str(logs)],
            folder_check(logs, names, min_bytes),
        ),
    ]
    if before is not None:  # the same workload through another checkout: a copy of root
        # with a history of its own, its logs in the same folders
        other = root.with_name(root.name + "-before")
        shutil.rmtree(other, ignore_errors=True)
        shutil.copytree(root, other, ignore=shutil.ignore_patterns("logs", ".script-monitor"))
        with open(other / "config.yaml", "a") as f:
            f.write(f"paths:\n  log_dir: {json.dumps(str(logs))}\n")
        tools.insert(
            1,
            Tool(
                "before",
                [py, str(before), "--config-dir", str(other), "run-group", group],
                sm_check(other, names, min_bytes, logs),
            ),
        )
    if not baselines:
        return tools
    # xargs' and parallel's logs outside the config directory: a tool that
    # creates and deletes hundreds of files beside script-monitor's logs (same
    # directory tree, so the same ext4 block groups) slows script-monitor's own
    # file creation, and not that of `before`, which runs in a copy elsewhere.
    xlogs = root.with_name(root.name + "-xargs-logs")
    tools.append(
        Tool(
            "xargs -P",
            ["sh", "-c", 'exec xargs -d "\\n" -P "$1" -n 1 sh -c < "$2"', "sh", str(cap),
             str(commands_file(root, commands, xlogs))],
            file_check(xlogs, names, min_bytes),
            fresh_dir(xlogs),
        )
    )  # fmt: skip
    if shutil.which("parallel"):
        plogs = root.with_name(root.name + "-parallel-logs")
        tools.append(
            Tool(
                "GNU parallel",
                ["sh", "-c", 'exec parallel --will-cite -j "$1" < "$2"', "sh", str(cap),
                 str(commands_file(root, commands, plogs))],
                file_check(plogs, names, min_bytes),
                fresh_dir(plogs),
            )
        )  # fmt: skip
    return tools


def layers(size: dict) -> tuple[dict[str, str], dict[str, list[str]]]:
    """W8: ``layers`` layers of ``width`` scripts, each needing every script of the last."""
    rows = [[f"l{k:02d}s{j:02d}" for j in range(size["width"])] for k in range(size["layers"])]
    commands = {name: "true" for row in rows for name in row}
    needs = {name: prev for prev, row in itertools.pairwise(rows) for name in row}
    return commands, needs


def group_workload(key: str, size: dict) -> tuple[str, dict[str, str], str, int, int]:
    """Title, commands, execution mode, cap and minimum log size of W1-W5 and W8."""
    if key == "W8":
        commands, _ = layers(size)
        title = (
            f"{len(commands)} x true in {size['layers']} layers of {size['width']}"
            f" (each needs the last), parallel, cap {size['cap']}"
        )
        return title, commands, "parallel", size["cap"], 0
    if key == "W4":
        n = size["bytes"]
        cmd = f"yes '{W4_LINE}' | head -c {n}"
        return f"one script printing {n / 1e6:g} MB", {"big": cmd}, "serial", 1, n
    if key == "W3":
        n = size["n"]
        return f"{n} x true, serial", dict.fromkeys(script_names(n), "true"), "serial", 1, 0
    n, cap = size["n"], size["cap"]
    cmd = f"sleep {size['sleep']:g}" if "sleep" in size else "true"
    title = f"{n} x {cmd}, parallel, cap {cap}"
    return title, dict.fromkeys(script_names(n), cmd), "parallel", cap, 0


def notify_tool(
    root: Path, copy: Path, sm: Tool, names: list[str], min_bytes: int, channel: bool
) -> Tool:
    """script-monitor on a copy of ``root`` (``--notify``); with ``channel`` its
    config.yaml adds a notification channel.  The scripts succeed and never failed, so
    no event fires: the pair measures what a configured channel costs a run that sends
    nothing.  Both are copies, so neither shares a directory with bare's logs."""
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(parents=True)
    for name in ("config.yaml", "scripts.yaml", "groups.yaml"):
        shutil.copy(root / name, copy / name)
    if channel:
        with open(copy / "config.yaml", "a") as f:
            f.write('notifications:\n  channels:\n    ops: ["json://127.0.0.1:9/bench"]\n')
    argv = [str(copy) if a == str(root) else a for a in sm.argv]
    name = "script-monitor + channel" if channel else "script-monitor (copy)"
    return Tool(name, argv, sm_check(copy, names, min_bytes))


# ---------------------------------------------------------------- W6: --help and list


def populate_history(
    src: Path, root: Path, scripts: list[str], runs: int, other: list[str] | None = None
) -> None:
    """Insert ``runs`` finished runs (spread over ``scripts``) straight into the history.

    The schema comes from script-monitor's own Store (or, with ``other``, the command of
    another checkout: its ``list`` creates the schema of its version); the rows are
    inserted in one transaction, outside any timed part.
    """
    path = root / ".script-monitor" / "history.db"
    if other is not None:
        subprocess.run([*other, "--config-dir", str(root), "list"], capture_output=True, check=True)
    else:
        sys.path.insert(0, str(src))
        from script_monitor.store import Store

        store = Store(root / ".script-monitor")
        store.runs.reap_lost()  # opens the database: creates it and its schema
        store.close()
    per_script = runs // len(scripts)
    now = time.time() - per_script * 3600
    group_rows, run_rows = [], []
    for tick in range(per_script):
        started = now + tick * 3600
        gid = tick + 1
        group_rows.append((gid, "all", "schedule", "success", started, started + 60, "bench|x|1|1"))
        for i, name in enumerate(scripts):
            failed = (tick + i) % 17 == 0
            recent = tick >= per_script - 10
            run_rows.append(
                (name, gid, "all", "schedule", "failed" if failed else "success",
                 started + i * 0.1, started + i * 0.1 + 0.05, 0.05, 1 if failed else 0,
                 10_000 + i, "bench|x|1|1", f"{name}/{tick:06d}.log",
                 "ok" if recent else "rotated")
            )  # fmt: skip
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO group_runs (id, group_name, trigger, status, started, ended, owner)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        group_rows,
    )
    db.executemany(
        "INSERT INTO runs (script, group_run_id, group_name, trigger, status, started, ended,"
        " duration, exit_code, pid, owner, log_path, log_state)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        run_rows,
    )
    db.execute("COMMIT")
    db.close()


def w6_tools(sm: list[str], root: Path, names: list[str], out_dir: Path) -> list[Tool]:
    def lists_all(_sample: Sample) -> str | None:
        text = (out_dir / "stdout").read_text()
        firsts = {line.split()[0] for line in text.splitlines() if line.strip()}
        missing = [n for n in names if n not in firsts]
        return f"{len(missing)} scripts missing from the output" if missing else None

    def helps(_sample: Sample) -> str | None:
        text = (out_dir / "stdout").read_text()
        return None if "run-group" in text else "--help output does not list run-group"

    py, sm = sm[0], [*sm, "--config-dir", str(root)]
    return [
        Tool("script-monitor --help", [*sm, "--help"], helps),
        Tool("script-monitor list", [*sm, "list"], lists_all),
        Tool("bare_list", [py, str(BENCH / "bare_list.py"), str(root)], lists_all),
    ]


def w6_config(root: Path, n: int) -> list[str]:
    """500 scripts in groups of 50, like a real configuration; return the script names."""
    names = [f"script-{i:04d}" for i in range(n)]
    root.mkdir(parents=True, exist_ok=True)
    lines = ["scripts:"]
    for i, name in enumerate(names):
        lines += [
            f"  - name: {name}",
            f"    command: echo job {i} && test -d /tmp",
            f"    description: nightly job number {i}",
            "    timeout: 600",
        ]
    (root / "scripts.yaml").write_text("\n".join(lines) + "\n")
    groups = ["groups:"]
    for g in range(0, n, 50):
        groups += [f"  - name: batch-{g // 50}", "    execution: parallel", "    scripts:"]
        groups += [f"      - {name}" for name in names[g : g + 50]]
    (root / "groups.yaml").write_text("\n".join(groups) + "\n")
    return names


# ---------------------------------------------------------------- summaries


def stats(samples: list[Sample]) -> dict:
    walls = [s.wall for s in samples]
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "peak_rss_mib": max(s.rss_kib for s in samples) / 1024,
    }


def pair_ratios(a: Tool, b: Tool) -> list[float]:
    return [x.wall / y.wall for x, y in zip(a.samples, b.samples, strict=True)]


def table(tools: list[Tool], base: Tool) -> list[str]:
    rows = [
        "| tool | median | min–max | peak RSS | × bare (pairwise median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for tool in tools:
        s = stats(tool.samples)
        ratio = "1" if tool is base else f"{statistics.median(pair_ratios(tool, base)):.3f}"
        rows.append(
            f"| {tool.name} | {s['median_s']:.3f} s | {s['min_s']:.3f}–{s['max_s']:.3f} s"
            f" | {s['peak_rss_mib']:.1f} MiB | {ratio} |"
        )
    return rows


def target(name: str, value: float, limit: float, unit: str = "×") -> dict:
    return {"target": name, "value": round(value, 4), "limit": limit, "unit": unit,
            "met": value <= limit}  # fmt: skip


def info(name: str, value: float, unit: str = "ms") -> dict:
    """A figure shown beside the targets, with no limit of its own."""
    return {"target": name, "value": round(value, 4), "limit": None, "unit": unit, "met": True}


def companion_groups(
    key: str, commands: dict[str, str]
) -> list[tuple[str, str, dict[str, str], str]]:
    """``key``'s ``COMPANIONS`` as (label, group name, members with commands, execution)."""
    return [
        (label, group, dict(commands) if which == "all" else dict(list(commands.items())[:1]), mode)
        for label, group, which, mode in COMPANIONS.get(key, [])
    ]


def extra_per_run(sm: Tool, bare: Tool, n: int) -> list[float]:
    """Per repetition: script-monitor's extra wall time over bare, in ms per run."""
    return [(x.wall - y.wall) / n * 1000 for x, y in zip(sm.samples, bare.samples, strict=True)]


def group_targets(key: str, sm: Tool, bare: Tool, n: int) -> list[dict]:
    ratio = statistics.median(pair_ratios(sm, bare))
    rss = stats(sm.samples)["peak_rss_mib"]
    if key == "W3":
        per_run = statistics.median(extra_per_run(sm, bare, n))
        return [target("extra time per run vs bare", per_run, 0.5, "ms")]
    if key == "W8":
        return []  # Bench.per_run_targets: against W2's shape, in the same repetitions
    limits = {"W1": 1.05, "W2": 1.25, "W4": 1.2, "W5": 1.05}
    out = [target("wall time / bare", ratio, limits[key])]
    if key == "W4":
        out.append(target("script-monitor peak RSS", rss, 40, "MiB"))
    if key == "W5":
        out.append(target("script-monitor peak RSS", rss, 45, "MiB"))
    return out


# ---------------------------------------------------------------- workloads


@dataclass
class Bench:
    """One benchmark run: options, work directory, collected results."""

    py: str
    quick: bool
    work: Path
    reps_override: int | None
    spawner: Path | None = None
    main: Path = MAIN
    before: Path | None = None  # another checkout's main.py, run side by side
    notify: bool = False  # also time script-monitor with a notification channel configured
    results: list[dict] = field(default_factory=list)
    per_run: dict[str, dict[str, float]] = field(default_factory=dict)  # see COMPANIONS

    @property
    def env(self) -> dict[str, str]:
        return child_env(self.work)

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def reps(self, key: str) -> int:
        if self.reps_override:
            return self.reps_override
        return 1 if self.quick else REPS[key]

    def size(self, key: str) -> dict:
        return SIZES[key][1 if self.quick else 0]

    def record(self, key: str, title: str, tools: list[Tool], base: Tool, targets, load0) -> None:
        problems = {t.name: [s.problem for s in t.samples if s.problem] for t in tools}
        self.results.append(
            {
                "workload": key,
                "title": title,
                "repetitions": self.reps(key),
                "load_before": load0,
                "load_after": list(os.getloadavg()),
                "tools": {
                    t.name: {
                        **stats(t.samples),
                        "wall_s": [round(s.wall, 5) for s in t.samples],
                        "rss_kib": [s.rss_kib for s in t.samples],
                        "ratio_to_bare": [round(r, 4) for r in pair_ratios(t, base)],
                    }
                    for t in tools
                },
                "every_script_ran": not any(problems.values()),
                "problems": {k: v for k, v in problems.items() if v},
                "targets": targets,
                "table": table(tools, base),
            }
        )

    def group(self, key: str) -> None:
        title, commands, mode, cap, min_bytes = group_workload(key, self.size(key))
        root = self.work / key.lower()
        needs = layers(self.size(key))[1] if key == "W8" else None
        groups = companion_groups(key, commands)
        write_config(
            root, commands, mode, cap, needs, tuple((g, list(m), e) for _, g, m, e in groups)
        )
        tools = group_tools([self.py, str(self.main)], root, commands, cap, min_bytes, self.before)
        if needs:  # xargs, GNU parallel and checkouts before depends_on know nothing of it
            tools = [t for t in tools if t.name in ("script-monitor", "bare")]
        if self.notify:  # the same run with a channel configured and no event firing,
            # against the same run without, each in a directory of its own made the same way
            for i, channel in enumerate((False, True)):
                copy = self.work / f"{key.lower()}-{'notify' if channel else 'plain'}"
                tool = notify_tool(root, copy, tools[0], list(commands), min_bytes, channel)
                tools.insert(1 + i, tool)
        extra = self.companion_tools(groups, root, cap, min_bytes)
        self.log(f"{key}: {title}")
        load0 = list(os.getloadavg())
        warmups = 1 if self.quick else WARMUPS.get(key, 1)
        run_reps(
            tools + [t for pair in extra for t in pair[1:3]], self.reps(key), root, self, warmups
        )
        sm, bare = tools[0], next(t for t in tools if t.name == "bare")
        if any(
            s.problem for t in [sm, bare, *(t for p in extra for t in p[1:3])] for s in t.samples
        ):
            targets = []
        else:
            targets = group_targets(key, sm, bare, len(commands))
            if extra:
                targets += self.per_run_targets(key, (sm, bare, len(commands)), extra)
            if self.notify:
                ratio = statistics.median(pair_ratios(tools[2], tools[1]))
                targets.append(target("with a channel / without (copies)", ratio, 1.05))
        self.record(key, title, tools, bare, targets, load0)
        for _, sm_c, bare_c, _ in extra:  # the companions' rows, each against its own bare
            self.results[-1]["table"] += table([sm_c, bare_c], bare_c)[2:]
            for t in (sm_c, bare_c):
                walls = [round(x.wall, 5) for x in t.samples]
                self.results[-1]["tools"][t.name] = {**stats(t.samples), "wall_s": walls}

    def companion_tools(
        self,
        groups: list[tuple[str, str, dict[str, str], str]],
        root: Path,
        cap: int,
        min_bytes: int,
    ) -> list[tuple[str, Tool, Tool, int]]:
        """(label, script-monitor, bare, runs) for each companion group (``companion_groups``)."""
        out = []
        for label, group, members, _ in groups:
            sm, bare = group_tools(
                [self.py, str(self.main)], root, members, cap, min_bytes, None, group, False
            )
            sm.name, bare.name = f"script-monitor, {label}", f"bare, {label}"
            out.append((label, sm, bare, len(members)))
        return out

    def per_run_targets(self, key: str, main: tuple, extra: list[tuple]) -> list[dict]:
        """Extra time per run over bare, with and without the start-up; W8's against W2's.

        Medians of the per-repetition differences (script-monitor minus bare), in ms.
        """

        def extra_ms(sm: Tool, bare: Tool) -> float:  # the whole group's extra time
            return statistics.median(extra_per_run(sm, bare, 1))

        n = main[2]
        mine = extra_ms(*main[:2])
        by_label = {label: (extra_ms(sm, bare), runs) for label, sm, bare, runs in extra}
        startup = by_label["1 run"][0]
        per_run = {"with": mine / n, "without": (mine - startup) / (n - 1), "runs": n}
        self.per_run[key] = per_run
        out = [
            info("start-up: extra time of a one-run group vs bare", startup),
            info(f"extra time per run vs bare ({n} runs)", per_run["with"]),
            info("the same, start-up taken out", per_run["without"]),
        ]
        if key != "W8":
            return out
        same, runs = by_label["W2 shape"]
        out.append(target(f"extra time per run / W2's at the same {runs} runs", mine / same, 1.10))
        out.append(info("the same, start-up taken out", (mine - startup) / (same - startup), "×"))
        w2 = self.per_run.get("W2")
        if w2 is not None and w2["with"] > 0:  # W2 proper: 400 runs, in its own repetitions
            out.append(
                info(
                    f"extra time per run / W2's ({w2['runs']:g} runs)",
                    per_run["with"] / w2["with"],
                    "×",
                )
            )
            if w2["without"] > 0:
                ratio = per_run["without"] / w2["without"]
                out.append(info("the same, start-up taken out", ratio, "×"))
        return out

    def w6(self) -> None:
        size = self.size("W6")
        root = self.work / "w6"
        names = w6_config(root, size["scripts"])
        populate_history(self.main.parent / "src", root, names, size["runs"])
        title = f"--help, and list on {size['scripts']} scripts with {size['runs']} runs"
        self.log(f"W6: {title}")
        tools = w6_tools([self.py, str(self.main)], root, names, root)
        if self.before:  # the other checkout's --help and list, in the same repetitions,
            # on a history of its own schema with the same rows
            other = root.with_name(root.name + "-before")
            w6_config(other, size["scripts"])
            populate_history(Path(), other, names, size["runs"], [self.py, str(self.before)])
            old = w6_tools([self.py, str(self.before)], other, names, root)[:2]
            for tool in old:
                tool.name = tool.name.replace("script-monitor", "before:")
            tools[2:2] = old
        load0 = list(os.getloadavg())
        run_reps(tools, self.reps("W6"), root, self)
        help_, list_, bare = tools[0], tools[1], tools[-1]
        targets = []
        if not any(s.problem for t in tools for s in t.samples):
            targets = [
                target("--help / bare_list", statistics.median(pair_ratios(help_, bare)), 1.6),
                target("list / bare_list", statistics.median(pair_ratios(list_, bare)), 2.0),
            ]
            if self.before:
                for new, old in zip(tools[:2], tools[2:4], strict=True):
                    ratio = statistics.median(pair_ratios(new, old))
                    targets.append(target(f"{new.name} / {old.name}", ratio, 1.05))
        self.record("W6", title, tools, bare, targets, load0)

    def w7(self) -> None:
        """The scheduler's lateness: bench/scheduler_lateness.py, when it exists."""
        path = BENCH / "scheduler_lateness.py"
        if not path.exists():
            self.log("W7: bench/scheduler_lateness.py is not there yet; skipped")
            self.results.append(
                {"workload": "W7", "title": "scheduler lateness", "skipped": "not available"}
            )
            return
        self.log("W7: scheduler lateness (bench/scheduler_lateness.py)")
        spec = importlib.util.spec_from_file_location("scheduler_lateness", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["scheduler_lateness"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        load0 = list(os.getloadavg())
        argv = ["--json", *(["--quick"] if self.quick else [])]
        captured = io.StringIO()
        try:
            with redirect_stdout(captured):
                module.main(argv)
            figures, problem = json.loads(captured.getvalue().strip().splitlines()[-1]), None
        except (SystemExit, ValueError, IndexError) as e:  # it exits with a reason on failure
            figures, problem = {}, f"{e}"[-400:] or "no figures printed"
        self.results.append(w7_result(figures, problem, argv, load0))


def w7_result(figures: dict, problem: str | None, argv: list[str], load0: list[float]) -> dict:
    """W7 from the figures scheduler_lateness.py printed (lateness in real milliseconds)."""
    result = {
        "workload": "W7",
        "title": "scheduler lateness after the due minute",
        "command": "python bench/scheduler_lateness.py " + " ".join(argv),
        "load_before": load0,
        "load_after": list(os.getloadavg()),
        "figures": figures,
        "every_script_ran": problem is None and bool(figures.get("ticks")),
        "problems": {"scheduler": [problem]} if problem else {},
        "targets": [],
        "table": [],
    }
    if figures.get("median_ms") is not None:
        result["targets"] = [
            target("median lateness", figures["median_ms"], 50, "ms"),
            target("max lateness", figures["max_ms"], 500, "ms"),
        ]
        speed = figures.get("speed", 1)
        clock = "real clock" if speed == 1 else f"clock ×{speed:g} (real ms)"
        result["table"] = [
            "| group starts | clock | median lateness | max lateness |",
            "|---:|---|---:|---:|",
            f"| {figures['ticks']} | {clock} | {figures['median_ms']} ms"
            f" | {figures['max_ms']} ms |",
        ]
    return result


# ---------------------------------------------------------------- machine and versions


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return out.splitlines()[0].strip() if out.strip() else "unknown"


def environment(py: str) -> dict:
    """The machine and the versions of everything measured."""
    probe = (
        "import sys, sqlite3, yaml, msgspec; print(sys.version.split()[0], sqlite3.sqlite_version,"
        " yaml.__version__, yaml.__with_libyaml__, msgspec.__version__)"
    )
    pyv, sqlv, yamlv, libyaml, msgv = _first_line([py, "-c", probe]).split()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if "model name" in ln), "?")
    rev = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"])
    return {
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30),
            "kernel": platform.release(),
            "load_at_start": list(os.getloadavg()),
        },
        "versions": {
            "script-monitor": f"git {rev}" + (" (src modified)" if dirty != "unknown" else ""),
            "python": pyv,
            "sqlite": sqlv,
            "PyYAML": f"{yamlv} (libyaml: {libyaml})",
            "msgspec": msgv,
            "xargs": _first_line(["xargs", "--version"]),
            "GNU parallel": _first_line(["parallel", "--version"])
            if shutil.which("parallel")
            else "not installed",
        },
    }


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (CI)")
    parser.add_argument("--only", help="comma-separated workloads, e.g. W2,W6")
    parser.add_argument("--reps", type=int, help="repetitions for every workload")
    parser.add_argument(
        "--json",
        type=Path,
        help="results file (default: bench/results.json; with --quick,"
        " script-monitor-bench-quick.json in the temp directory)",
    )
    parser.add_argument("--work", type=Path, help="work directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--python", default=sys.executable, help="interpreter for every tool")
    parser.add_argument(
        "--main", type=Path, default=MAIN, help="script-monitor's main.py (to compare checkouts)"
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout's main.py, run beside script-monitor in each group workload and W6",
    )
    parser.add_argument(
        "--notify",
        action="store_true",
        help="also run script-monitor with a notification channel configured (no event fires)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every script of every tool really ran."""
    import tempfile

    args = parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="sm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(
        args.python, args.quick, work, args.reps, build_spawner(work), args.main, args.before
    )
    bench.notify = args.notify
    wanted = (args.only or "W1,W2,W3,W4,W5,W6,W7,W8").upper().split(",")
    started = time.time()
    env = environment(args.python)
    for key in wanted:
        if key == "W6":
            bench.w6()
        elif key == "W7":
            bench.w7()
        else:
            bench.group(key)
    report = {
        "command": "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "script_monitor_main": str(args.main.resolve()),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "measured_by": "C helper: fork, exec, CLOCK_MONOTONIC, wait4 rusage"
        if bench.spawner
        else "the harness: perf_counter and os.wait4 (peak RSS is an upper bound)",
        **env,
        "workloads": bench.results,
    }
    report["every_script_ran"] = all(r.get("every_script_ran", True) for r in bench.results)
    quick_json = Path(tempfile.gettempdir()) / "script-monitor-bench-quick.json"
    out = args.json or (quick_json if args.quick else BENCH / "results.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nresults written to {out}")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report["every_script_ran"] else 1


def render(report: dict) -> str:
    """The Markdown tables of a report, as pasted into bench/README.md."""
    lines = [f"`{report['command'].strip()}` — {report['started']}, {report['elapsed_s']} s", ""]
    for w in report["workloads"]:
        if "skipped" in w:
            lines += [f"### {w['workload']}: {w['title']} — skipped ({w['skipped']})", ""]
            continue
        reps = f", {w['repetitions']} repetitions" if "repetitions" in w else ""
        load = f"load {w['load_before'][0]:.2f} → {w['load_after'][0]:.2f}"
        lines += [f"### {w['workload']}: {w['title']}{reps} ({load})", "", *w["table"], ""]
        for t in w["targets"]:
            mark = "met" if t["met"] else "MISSED"
            limit = "no target" if t["limit"] is None else f"≤ {t['limit']:g}"
            lines.append(f"- {t['target']}: {t['value']:g} {t['unit']} ({limit}): {mark}")
        for tool, problems in w.get("problems", {}).items():
            lines.append(f"- **{tool} did not run every script**: {problems[0]}")
        lines.append("")
    ran = "yes" if report["every_script_ran"] else "NO"
    lines.append(f"Every script of every tool ran: {ran}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
