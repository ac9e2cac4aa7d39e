"""The fuzzed real CLI: ``validate`` and ``run-group`` on schema-shaped configurations
and on arbitrary YAML text (the strategies and checks of test_fuzz.py, in a file of its
own so that a second test process runs it beside the in-process examples).

The only outcomes allowed are exit 0, or exit 2 with a message and nothing written:
never a traceback, another exit code or a hang.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from helpers import cli
from test_fuzz import (
    FILES,
    SUBPROCESS,
    first_group,
    fresh_root,
    load_checked,
    shaped,
    snapshot,
    write_config,
    yaml_text,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]


def check_cli(root: Path, *args: str) -> int:
    """Run the CLI; the outcome must be 0, or 2 with a message and nothing written."""
    before = snapshot(root)
    r = cli("--config-dir", str(root), *args, timeout=60)  # TimeoutExpired = a hang
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode in (0, 2), (args, r.returncode, r.stdout, r.stderr)
    event(f"{args[0]}: exit {r.returncode}")
    if r.returncode == 2:
        assert r.stderr.strip(), "exit 2 without a message"
        assert snapshot(root) == before, f"{args[0]} wrote files although it refused to run"
    return r.returncode


@SUBPROCESS
@given(files=shaped(safe=True))
@example(
    files={
        "scripts.yaml": {"scripts": [{"name": "a", "command": "true", "timeout": 1e308}]},
        "groups.yaml": {"groups": [{"name": "g", "scripts": ["a"]}]},
    }
)
@example(
    files={
        "scripts.yaml": {"scripts": [{"name": "a", "command": "true", "env": {"A": "x\x00y"}}]},
        "groups.yaml": {"groups": [{"name": "g", "scripts": ["a"]}]},
    }
)
def test_validate_and_run_group_exit_0_or_2_never_a_traceback(files):
    """Pass: `validate` and `run-group` on schema-shaped configs (commands are `true`) exit 0
    or 2 with a message; a refused command writes nothing; nothing hangs."""
    with fresh_root() as tmp:
        root = Path(tmp) / "conf"
        root.mkdir()
        write_config(root, files)
        valid = check_cli(root, "validate") == 0
        assert valid == load_checked(root)
        check_cli(root, "run-group", first_group(files))


@SUBPROCESS
@given(which=st.sampled_from(FILES), text=yaml_text)
def test_validate_on_arbitrary_yaml_text_exits_0_or_2(which, text):
    """Pass: `validate` on arbitrary YAML text exits 0 or 2 with a message, no traceback."""
    with fresh_root() as tmp:
        root = Path(tmp) / "conf"
        root.mkdir()
        write_config(root, {which: text})
        check_cli(root, "validate")
