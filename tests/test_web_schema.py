"""schemathesis runs the OpenAPI document against a live ``serve``: no 500, every
response (status, content type, headers, body) as the document says (docs/WEB.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli, write
from script_monitor.store import Store
from web_helpers import TOKEN, Server, web_config

EXAMPLES = "25"  # generated cases per operation and phase: bounded, about half a minute


def schemathesis() -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("schemathesis")
    if not found:
        pytest.fail("schemathesis is not installed (pip install -e '.[test]')")
    return [found]


OWN_SERVER = "^/api/v1/(checks|group-runs|audit)"


@pytest.mark.slow
def test_the_live_api_matches_its_openapi_document(tmp_path, marker):
    # POSTs start real runs: at most 4 alive at once (429 beyond), one per script (409)
    conf = web_config(tmp_path / "conf", {"web": {"token": TOKEN, "max_launches": 4}})
    write(conf, "checks.yaml", "checks:\n  - {name: nightly_copy, period: 3600}\n")
    for args in (["run", "quick_ok"], ["run", "always_fails"], ["run-group", "pair"]):
        cli("--config-dir", str(conf), *args)
    cli("--config-dir", str(conf), "ping", "nightly_copy", "--exit-code", "3")
    server = Server(conf, marker=marker)
    common = [
        *schemathesis(),
        "run",
        "--checks",
        "all",
        "--max-examples",
        EXAMPLES,
        "--seed",
        "20261201",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--no-color",
    ]
    try:
        # Every operation with generated and boundary cases; then the stateful phase
        # (which follows links, e.g. a script's name into its runs), POSTs included:
        # the overlap refusal (409) and web.max_launches (429) keep the runs they start
        # bounded, and both answers are in the document.
        # The checks', group runs' and audit's operations get a server of their own
        # (below): the wrong tokens sent to every operation would otherwise reach one
        # server's throttle (10 a minute).
        common += ["--exclude-path-regex", OWN_SERVER]
        first = subprocess.run(
            [*common, f"{server.url}/api/v1/openapi.json", "--phases", "examples,coverage,fuzzing"],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
        )
        second = subprocess.run(
            [*common, f"{server.url}/api/v1/openapi.json", "--phases", "stateful"],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
        )
    finally:
        server.stop()
    server = Server(conf, marker=marker)
    try:
        only = ["--include-path-regex", OWN_SERVER, "--phases", "examples,coverage,fuzzing"]
        checks = subprocess.run(
            [*common[:-2], f"{server.url}/api/v1/openapi.json", *only],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
        )
    finally:
        server.stop()
    for done in (first, second, checks):
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert "No issues found" in done.stdout
    assert "Operations:" in first.stdout and " 0 selected" not in first.stdout
    assert "Traceback" not in server.stderr()
    started = [r for r in Store(conf / ".script-monitor").audit.rows() if r.action == "launch"]
    assert started and any(r.result == "accepted" for r in started)
