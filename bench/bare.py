"""The `bare` baseline: the same job as `script-monitor run-group`, nothing more.

Reads the same YAML (config.yaml, scripts.yaml, groups.yaml) with PyYAML's
CSafeLoader, runs the group's scripts through ``/bin/sh -c`` in a thread pool
(cap = the group's or the global ``max_parallel_workers``, 1 for a serial
group), streams each script's stdout and stderr straight into one log file per
script, prints one line per script and exits 0 when every script succeeded.
No database, no timeouts, no process-group handling, no log rotation: it is
the floor that script-monitor's bookkeeping is measured against.

    python bench/bare.py CONFIG_DIR GROUP
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml


def _read(path: Path) -> dict:
    if not path.exists():
        return {}
    with path.open("rb") as f:
        return yaml.load(f, Loader=yaml.CSafeLoader) or {}


def _run(command: str | list[str], log: Path) -> int:
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
    with log.open("wb") as out:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out).returncode


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
    log_dir = root / "bare-logs"
    log_dir.mkdir(exist_ok=True)
    members = group["scripts"]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        codes = list(pool.map(lambda s: _run(scripts[s]["command"], log_dir / f"{s}.log"), members))
    for script, code in zip(members, codes, strict=True):
        print(f"Running {script}... {'✓' if code == 0 else '✗ FAILED'}")
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
