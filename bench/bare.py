"""The `bare` baseline: the same job as `script-monitor run-group`, nothing more.

Reads the same YAML (config.yaml, scripts.yaml, groups.yaml) with PyYAML's
CSafeLoader, runs the group's scripts through ``/bin/sh -c`` in a thread pool
(cap = the group's or the global ``max_parallel_workers``, 1 for a serial
group), honours the group's ``depends_on`` (a script starts once what it needs
succeeded), streams each script's stdout and stderr straight into a new log file
per run in a folder per script (as script-monitor does: creating a file costs far
more than truncating one on a journaled disk), prints one line per script and exits
0 when every script succeeded.  No database, no timeouts, no process-group
handling, no log rotation: it is the floor that script-monitor's bookkeeping is
measured against.

    python bench/bare.py CONFIG_DIR GROUP [LOG_DIR]     # LOG_DIR: default CONFIG_DIR/bare-logs
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import yaml


def _read(path: Path) -> dict:
    if not path.exists():
        return {}
    with path.open("rb") as f:
        return yaml.load(f, Loader=yaml.CSafeLoader) or {}


def _run(command: str | list[str], folder: Path) -> int:
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
    folder.mkdir(exist_ok=True)
    with (folder / f"{folder.name}_{time.time_ns()}.log").open("xb") as out:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out).returncode


def _run_all(members: list[str], needs: dict[str, list[str]], workers: int, start) -> dict:
    """Exit codes by script; a script whose dependency failed is not run (code None)."""
    codes: dict[str, int | None] = {}
    waiting = list(members)
    running: dict[Future, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while waiting or running:
            for name in list(waiting):
                deps = needs.get(name, [])
                if any(d in codes and codes[d] != 0 for d in deps):
                    codes[name] = None
                    waiting.remove(name)
                elif all(codes.get(d) == 0 for d in deps):
                    running[pool.submit(start, name)] = name
                    waiting.remove(name)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                codes[running.pop(future)] = future.result()
    return codes


def main(argv: list[str]) -> int:
    """Run group ``argv[1]`` of config dir ``argv[0]``; 0 when every script succeeded."""
    root, name = Path(argv[0]).resolve(), argv[1]
    settings = _read(root / "config.yaml")
    scripts = {s["name"]: s for s in _read(root / "scripts.yaml")["scripts"]}
    group = next(g for g in _read(root / "groups.yaml")["groups"] if g["name"] == name)
    cap = group.get("max_parallel_workers") or settings.get("execution", {}).get(
        "max_parallel_workers", 5
    )
    workers = cap if group.get("execution") == "parallel" else 1
    log_dir = Path(argv[2]) if len(argv) > 2 else root / "bare-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    members = group["scripts"]
    needs = {k: [v] if isinstance(v, str) else v for k, v in group.get("depends_on", {}).items()}
    codes = _run_all(members, needs, workers, lambda s: _run(scripts[s]["command"], log_dir / s))
    for script in members:
        print(f"Running {script}... {'✓' if codes.get(script) == 0 else '✗ FAILED'}")
    return 0 if all(codes.get(s) == 0 for s in members) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
