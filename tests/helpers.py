"""The one module of test helpers: the real CLI in a subprocess, config directories,
probes, the history read straight from its database, waiting and process checks.

Fixtures live in conftest.py; every test file imports its helpers from here.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
PY = sys.executable
GUIDE = ROOT / "docs" / "EXECUTION_MODES.md"  # the user's guide: tests/test_guide.py runs it


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def cli(
    *args: str,
    cwd: Path | None = None,
    env: dict | None = None,
    timeout: float = 120,
    input: str | None = None,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.CompletedProcess:
    """Run ``python main.py ARGS`` as a user would; capture text output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(MAIN), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        pass_fds=pass_fds,
    )


def popen(*args: str, **kwargs) -> subprocess.Popen:
    """Start ``python main.py ARGS`` in the background (for signal tests)."""
    return subprocess.Popen(
        [sys.executable, str(MAIN), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


# ---------------------------------------------------------------- helpers for e2e tests

PROBE = """\
#!/bin/sh
# probe NAME SECONDS [EXIT]: log start/end timestamps to events.log, sleep, exit.
events="$SCRIPT_MONITOR_CONFIG_DIR/events.log"
echo "$1 start $(date +%s.%N)" >> "$events"
echo "probe $1 running"
sleep "$2"
echo "$1 end $(date +%s.%N)" >> "$events"
exit "${3:-0}"
"""


def make_config(
    directory: Path,
    scripts: dict[str, object],
    groups: list[dict] | None = None,
    settings: dict | None = None,
    extra: dict[str, dict] | None = None,
) -> Path:
    """Write scripts.yaml (name -> command or full mapping), groups.yaml, config.yaml."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    items = []
    for name, spec in scripts.items():
        item = {"name": name, **spec} if isinstance(spec, dict) else {"name": name, "command": spec}
        items.append({**item, **(extra or {}).get(name, {})})
    (directory / "scripts.yaml").write_text(yaml.safe_dump({"scripts": items}, sort_keys=False))
    if groups is not None:
        (directory / "groups.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    if settings is not None:
        (directory / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    (directory / "probe.sh").write_text(PROBE)
    return directory


def probe(name: str, seconds: float = 0.1, code: int = 0) -> str:
    """A command running the probe script (relative to the config dir, its default cwd)."""
    return f"sh probe.sh {name} {seconds} {code}"


def events(directory: Path) -> dict[str, tuple[float, float | None]]:
    """name -> (start, end) as the probe scripts themselves recorded them."""
    out: dict[str, list] = {}
    path = directory / "events.log"
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        name, kind, stamp = line.split()
        out.setdefault(name, [None, None])[0 if kind == "start" else 1] = float(stamp)
    return {k: (v[0], v[1]) for k, v in out.items()}


def max_overlap(spans: dict[str, tuple[float, float | None]]) -> int:
    """The largest number of spans open at one instant (open-ended spans never close)."""
    points = []
    for start, end in spans.values():
        points.append((start, 1))
        if end is not None:
            points.append((end, -1))
    best = level = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):  # ends before starts on ties
        level += step
        best = max(best, level)
    return best


def hash_tree(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` by relative path."""
    import hashlib

    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def marked_pids(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment or command line contains ``marker``."""
    needle = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rfind(b")") + 2 :].split()[0] in (b"Z", b"X"):
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if needle in env or needle in cmd:
            found.append(int(entry))
    return found


def kill_marked(marker: str) -> None:
    """Clean up after a failing test: SIGKILL every process carrying ``marker``."""
    import signal

    for pid in marked_pids(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def wait_for(predicate, timeout: float = 20, interval: float = 0.05):
    """Poll ``predicate`` until it returns something true or ``timeout`` seconds pass;
    return its last value (so ``assert wait_for(...)`` fails with it)."""
    import time

    end = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < end:
        time.sleep(interval)
        value = predicate()
    return value


def until(predicate, timeout: float = 20, interval: float = 0.05):
    """``wait_for`` that fails the test, naming what it waited for, when time runs out."""
    value = wait_for(predicate, timeout, interval)
    assert value, f"timed out after {timeout}s waiting for {getattr(predicate, '__name__', '?')}"
    return value


def cli_json(*args: str, **kwargs):
    """Run a ``--json`` command and parse its output."""
    import json

    r = cli(*args, **kwargs)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def assert_clean_error(r: subprocess.CompletedProcess, code: int = 2) -> None:
    """Exit ``code`` with a message and no Python traceback."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    assert r.stderr.strip()


def sm(conf: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """``script-monitor --config-dir CONF ARGS`` (keyword arguments as for ``cli``)."""
    return cli("--config-dir", str(conf), *args, **kwargs)


def sm_json(conf: Path, *args: str) -> Any:
    """``script-monitor --config-dir CONF ARGS`` of a ``--json`` command, parsed."""
    return cli_json("--config-dir", str(conf), *args)


def sm_bytes(conf: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI with byte output (logs may hold anything)."""
    return subprocess.run(
        [PY, str(MAIN), "--config-dir", str(conf), *args], capture_output=True, timeout=timeout
    )


def history(conf: Path, name: str, limit: int = 1000) -> list[dict]:
    """``history NAME --json -n LIMIT``: the script's newest runs, newest first."""
    return cli_json("--config-dir", str(conf), "history", name, "--json", "-n", str(limit))


def runs(conf: Path, script: str | None = None) -> list[dict]:
    """Rows of the run history, oldest first (read straight from the real database)."""
    path = conf / ".script-monitor" / "history.db"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        db.row_factory = sqlite3.Row
        sql = "SELECT * FROM runs" + (" WHERE script = ?" if script else "") + " ORDER BY id"
        try:
            return [dict(r) for r in db.execute(sql, (script,) if script else ())]
        except sqlite3.OperationalError as e:  # created, its schema not committed yet
            if "no such table" in str(e):
                return []
            raise
    finally:
        db.close()


def group_runs(conf: Path, group: str) -> list[dict]:
    """A group's recorded runs, oldest first (read straight from the real database)."""
    import msgspec

    from script_monitor.store import Store

    store = Store(conf / ".script-monitor")
    try:
        rows = store.runs.group_history(group, limit=10_000)
        return [msgspec.structs.asdict(g) for g in reversed(rows)]
    finally:
        store.close()


# ---------------------------------------------------------------- servers (distributed)

PG_ADMIN_URL = os.environ.get("SCRIPT_MONITOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
# Redis databases 9, 10, ...: one per parallel test worker (pytest-xdist's gw0, gw1, ...),
# since each flushes its own at the start and at the end.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
REDIS_TEST_URL = os.environ.get(
    "SCRIPT_MONITOR_TEST_REDIS", f"redis://127.0.0.1:6379/{9 + _WORKER}"
)
AMQP_TEST_URL = os.environ.get("SCRIPT_MONITOR_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")


def need_server(what: str, reason: str) -> None:
    """Skip the test for a missing server, except under CI=true where it must be there."""
    import pytest

    message = f"{what} is not available: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: the server must run; see .ci/run)")
    pytest.skip(message)


def port_open(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def direct_sql(store, sql: str, args: tuple = ()) -> list:
    """Run SQL on the store's database with a connection of its own (tampering in tests)."""
    if store.url is None:
        with sqlite3.connect(store.path) as con:
            rows = con.execute(sql, args).fetchall()
        con.close()
        return rows
    from script_monitor.store.postgres import PgDb

    con = PgDb(store.url, 10_000)
    try:
        cur = con.execute(sql.replace("?", "%s"), args)
        return cur.fetchall() if cur.description else []
    finally:
        con.close()


# ---------------------------------------------------------------- receivers on loopback


class Receiver:
    """A webhook receiver on loopback: ``mode`` is ok, error (500) or hang."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.mode = "ok"
        self.delay = 0.0
        self.on_post: Callable[[], None] | None = None  # called once a post is kept
        self.release = threading.Event()
        self.arrived = threading.Event()  # set when a post arrives, before any answer
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                data = self.rfile.read(n)
                outer.arrived.set()
                if outer.mode == "hang":
                    outer.release.wait(60)
                    return
                if outer.mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    return
                time.sleep(outer.delay)
                outer.posts.append(json.loads(data))
                if outer.on_post is not None:
                    outer.on_post()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
