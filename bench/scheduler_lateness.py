"""W7: how late after the due minute does the scheduler start a group?

Runs the real ``script-monitor scheduler`` in a child process against a
temporary config directory with one (or more) ``* * * * *`` groups, lets it
fire for a number of ticks, stops it with SIGTERM, and reports the median and
maximum lateness: the time from the due minute to the moment the scheduler
started the group (what it logs as "N.NNNs after due"), in real seconds.

By default the clock is accelerated (``SCRIPT_MONITOR_CLOCK``, 60 scheduled
minutes per real minute) so many ticks fit in a short run; lateness is converted
back to real seconds.  ``--real`` uses the real clock (one tick per minute) and
also reports when the run was recorded in the history database.

    python bench/scheduler_lateness.py [--ticks N] [--speed S] [--groups G] [--real] [--json]
    python bench/scheduler_lateness.py --quick      # a few ticks, for smoke tests
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
LATE = re.compile(r"group (\S+): starting \(tick [^,]*, (\d+\.\d+)s after due\)")


def _config(directory: Path, groups: int) -> None:
    (directory / "scripts.yaml").write_text("scripts:\n  - name: noop\n    command: 'true'\n")
    text = "groups:\n" + "".join(
        f"  - name: g{i}\n    schedule: '* * * * *'\n    timezone: UTC\n    scripts: [noop]\n"
        for i in range(groups)
    )
    (directory / "groups.yaml").write_text(text)


def measure(ticks: int, speed: float, groups: int, real: bool) -> dict:
    """Run the scheduler until ``ticks`` ticks per group were started; return the figures."""
    with tempfile.TemporaryDirectory(prefix="sm-lateness-") as tmp:
        conf = Path(tmp)
        _config(conf, groups)
        env = dict(os.environ)
        env.pop("SCRIPT_MONITOR_CLOCK", None)
        if not real:
            start = (time.time() // 60 + 1) * 60 - 1  # one scheduled second before a minute
            env["SCRIPT_MONITOR_CLOCK"] = f"{start}x{speed}"
        log_path = conf / "scheduler.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, str(MAIN), "--config-dir", str(conf), "scheduler"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            try:
                _wait(log_path, ticks * groups, proc, timeout=_budget(ticks, speed, real))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        text = log_path.read_text()
        late = [float(m.group(2)) for m in LATE.finditer(text)]
        out = _figures(late)
        if real:
            out["recorded"] = _figures(_recorded_lateness(conf))
        out.update(ticks=len(late), speed=1.0 if real else speed, groups=groups)
        return out


def _budget(ticks: int, speed: float, real: bool) -> float:
    per_tick = 60.0 if real else 60.0 / speed
    return 30.0 + ticks * per_tick * 1.5


def _wait(log_path: Path, count: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the scheduler exited early:\n{log_path.read_text()}")
        if len(LATE.findall(log_path.read_text())) >= count:
            return
        time.sleep(0.2)
    raise SystemExit(f"not enough ticks within {timeout:.0f}s:\n{log_path.read_text()}")


def _recorded_lateness(conf: Path) -> list[float]:
    db = sqlite3.connect(conf / ".script-monitor" / "history.db")
    try:
        rows = db.execute("SELECT started FROM group_runs WHERE trigger = 'schedule'").fetchall()
    finally:
        db.close()
    return [started - started // 60 * 60 for (started,) in rows]


def _figures(values: list[float]) -> dict:
    if not values:
        return {"median_ms": None, "max_ms": None, "n": 0}
    return {
        "median_ms": round(statistics.median(values) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
        "n": len(values),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse options, measure, print the median and max lateness."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=60, help="ticks per group (default 60)")
    parser.add_argument("--speed", type=float, default=60.0, help="clock speed (default 60)")
    parser.add_argument("--groups", type=int, default=1, help="scheduled groups (default 1)")
    parser.add_argument("--real", action="store_true", help="use the real clock (slow)")
    parser.add_argument("--quick", action="store_true", help="a few fast ticks (smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.ticks, args.speed = min(args.ticks, 5), max(args.speed, 600.0)
    result = measure(args.ticks, args.speed, args.groups, args.real)
    if args.json:
        print(json.dumps(result))
        return 0
    clock = "real clock" if args.real else f"clock x{result['speed']:g}"
    print(
        f"scheduler lateness after the due minute, {result['ticks']} group starts "
        f"({result['groups']} group(s), {clock}): "
        f"median {result['median_ms']} ms, max {result['max_ms']} ms"
    )
    if "recorded" in result:
        rec = result["recorded"]
        print(f"recorded in the history: median {rec['median_ms']} ms, max {rec['max_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
