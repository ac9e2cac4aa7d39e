"""A real ``script-monitor serve`` process for the web tests (tests/test_web_*.py)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from helpers import MAIN, cli, history, make_config, write

TOKEN = "test-token-0123456789abcdef"


class Server:
    """``python main.py --config-dir DIR serve --port 0``; ``url`` is where it listens."""

    def __init__(self, config_dir: Path, *args: str, env: dict | None = None, marker: str = ""):
        self.config_dir = config_dir
        self.args = args
        self.err_path = config_dir.parent / f"serve-{time.monotonic_ns()}.err"
        full_env = dict(os.environ)
        full_env.pop("SCRIPT_MONITOR_WEB_TOKEN", None)
        full_env.update(env or {})
        if marker:
            full_env["SM_TEST_MARKER"] = marker
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(MAIN),
                    "--config-dir",
                    str(config_dir),
                    "serve",
                    *([] if "--socket" in args else ["--port", "0"]),
                    *args,
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                env=full_env,
            )
        line = self._first_line(30)
        self.socket: str | None = None
        unix = re.search(r"serving unix:(\S+) for", line)
        if unix:  # serve --socket PATH
            self.socket, self.url, self.port = unix.group(1), "http://localhost", 80
            return
        found = re.search(r"serving (http://\S+?)/? for", line)
        if not found:
            self.stop()
            raise AssertionError(f"serve did not start: {line!r}\n{self.stderr()}")
        self.url = found.group(1).rstrip("/")
        self.port = int(self.url.rsplit(":", 1)[1])

    def _first_line(self, timeout: float) -> str:
        end = time.monotonic() + timeout
        data = b""
        while b"\n" not in data and time.monotonic() < end:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                data += chunk
        return data.decode(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def client(self, token: str | None = None, **kwargs) -> httpx.Client:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.socket:
            kwargs["transport"] = httpx.HTTPTransport(uds=self.socket)
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        with self.client(kwargs.pop("token", None)) as c:
            return c.get(path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        with self.client(kwargs.pop("token", None)) as c:
            return c.post(path, **kwargs)

    def rss_kib(self) -> int:
        """The server's resident memory now (VmRSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode


def web_config(directory: Path, settings: dict | None = None, more: dict | None = None) -> Path:
    """The scripts and groups the web tests use (``more``: name -> command, added)."""
    scripts = {
        "quick_ok": {"command": "echo all good", "description": "prints one line"},
        "always_fails": {"command": "echo about to fail; exit 3"},
        "slow_lines": {
            "command": "for i in $(seq 1 30); do echo line $i; sleep 0.2; done",
            "description": "a line every 0.2 s for 6 s",
        },
        "xss_probe": {
            "command": "echo '<img src=x onerror=alert(1)>'; echo '<script>alert(2)</script>'",
            "description": '<script>alert("description")</script><b onmouseover=alert(3)>x</b>',
        },
        "never_ran": "true",
        **(more or {}),
    }
    groups = [
        {
            "name": "pair",
            "execution": "parallel",
            "schedule": "*/10 * * * *",
            "scripts": ["quick_ok", "always_fails"],
        },
        {"name": "rest", "scripts": ["slow_lines", "xss_probe", "never_ran"]},
    ]
    return make_config(directory, scripts, groups, settings)


def populated_config(directory: Path) -> Path:
    """``web_config`` with a small history: successes, a failure, a group run, the XSS probe."""
    from helpers import cli

    d = web_config(directory)
    for args in (
        ["run", "quick_ok"],
        ["run", "quick_ok"],
        ["run", "always_fails"],
        ["run-group", "pair"],
        ["run", "xss_probe"],
    ):
        cli("--config-dir", str(d), *args)
    return d


def wait_for_run(config_dir: Path, name: str, status: str | None = None, timeout: float = 30):
    """The newest run of ``name`` once one exists (with ``status``, if given)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        runs = history(config_dir, name, 1)
        if runs and (status is None or runs[0]["status"] == status):
            return runs[0]
        time.sleep(0.2)
    raise AssertionError(f"no {status or ''} run of {name} within {timeout}s")


def when_free(send, timeout: float = 20):
    """``send()`` again while it is refused because the target is still running (409)."""
    end = time.monotonic() + timeout
    r = send()
    while r.status_code == 409 and time.monotonic() < end:
        time.sleep(0.1)
        r = send()
    return r


__all__ = [
    "TOKEN",
    "Server",
    "cli",
    "history",
    "wait_for_run",
    "web_config",
    "when_free",
    "write",
]
