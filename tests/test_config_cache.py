"""The parsed scripts and groups kept in the state folder: used while the files are
unchanged, never when they changed, never instead of an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_clean_error, sm, write
from script_monitor.config import ItemCache, load_config

OLD = 1_600_000_000  # an mtime far enough in the past to be kept


def _config(root: Path, scripts: str, groups: str = "") -> None:
    (root / ".script-monitor").mkdir(exist_ok=True)
    write(root, "scripts.yaml", scripts)
    if groups:
        write(root, "groups.yaml", groups)
    for name in ("scripts.yaml", "groups.yaml"):
        if (root / name).exists():
            os.utime(root / name, (OLD, OLD))


def _kept(root: Path) -> Path:
    return root / ".script-monitor" / ItemCache.FILE


SCRIPTS = "scripts:\n  - name: a\n    command: echo one\n  - name: b\n    command: [echo, 2]\n"
GROUPS = (
    "groups:\n  - name: g\n    execution: parallel\n    stop_on_error: true\n"
    "    scripts: [a, b]\n    depends_on: {b: a}\n"
)


def test_a_kept_load_equals_a_parsed_one(tmp_path: Path) -> None:
    _config(tmp_path, SCRIPTS, GROUPS)
    first = load_config(tmp_path)
    assert _kept(tmp_path).exists() and (_kept(tmp_path).stat().st_mode & 0o777) == 0o600
    again = load_config(tmp_path)
    assert again.scripts == first.scripts and again.groups == first.groups
    assert again.origin == first.origin
    assert again.warnings == first.warnings and "stop_on_error" in str(again.warnings[0])


def test_an_edited_file_is_read_again(tmp_path: Path) -> None:
    _config(tmp_path, SCRIPTS)
    load_config(tmp_path)
    write(tmp_path, "scripts.yaml", SCRIPTS.replace("echo one", "echo six"))  # same size
    assert load_config(tmp_path).scripts["a"].command == "echo six"


def test_an_error_is_reported_with_its_line_although_a_copy_is_kept(tmp_path: Path) -> None:
    _config(tmp_path, SCRIPTS, "groups:\n  - name: g\n    scripts: [a]\n")
    load_config(tmp_path)
    write(tmp_path, "groups.yaml", "groups:\n  - name: g\n    scripts: [a, nope]\n")
    r = sm(tmp_path, "list-groups")
    assert_clean_error(r)
    assert "groups.yaml:3" in r.stderr and "nope" in r.stderr


def test_a_damaged_copy_is_ignored(tmp_path: Path) -> None:
    _config(tmp_path, SCRIPTS)
    load_config(tmp_path)
    _kept(tmp_path).write_bytes(b"\x93not what was kept")
    assert load_config(tmp_path).scripts["b"].command == ["echo", "2"]
    assert load_config(tmp_path).scripts["a"].command == "echo one"


def test_nothing_is_kept_before_the_state_folder_exists(tmp_path: Path) -> None:
    _config(tmp_path, SCRIPTS)
    (tmp_path / ".script-monitor").rmdir()
    load_config(tmp_path)
    assert not (tmp_path / ".script-monitor").exists()


def test_a_file_changed_just_now_is_not_kept(tmp_path: Path) -> None:
    _config(tmp_path, SCRIPTS)
    write(tmp_path, "scripts.yaml", SCRIPTS)  # mtime: now
    load_config(tmp_path)
    assert not _kept(tmp_path).exists()


def test_a_duplicate_across_files_is_still_found(tmp_path: Path) -> None:
    (tmp_path / ".script-monitor").mkdir()
    write(tmp_path, "scripts/one.yaml", "scripts:\n  - name: a\n    command: echo 1\n")
    write(tmp_path, "scripts/two.yaml", "scripts:\n  - name: b\n    command: echo 2\n")
    for f in (tmp_path / "scripts").iterdir():
        os.utime(f, (OLD, OLD))
    assert set(load_config(tmp_path).scripts) == {"a", "b"}
    write(tmp_path, "scripts/two.yaml", "scripts:\n  - name: a\n    command: echo 2\n")
    r = sm(tmp_path, "list")
    assert_clean_error(r)
    assert "duplicate script name 'a'" in r.stderr


CONFIG = (
    "scheduling:\n  timezone: Europe/Paris\n"
    "web:\n  tokens:\n    - {name: ci, token_file: ci.token, role: operator}\n"
    "execution:\n  max_parallel_workers: 3\n"
)


def _with_settings(root: Path, text: str = CONFIG) -> None:
    _config(root, SCRIPTS, GROUPS)
    write(root, "config.yaml", text)
    os.utime(root / "config.yaml", (OLD, OLD))


def test_config_yaml_is_kept_too_and_then_yaml_is_not_even_imported(tmp_path: Path) -> None:
    _with_settings(tmp_path)
    first = load_config(tmp_path)
    again = load_config(tmp_path)
    assert again.settings == first.settings and again.origin == first.origin
    assert again.settings.execution.max_parallel_workers == 3
    assert again.settings.web.tokens[0].token_file == "ci.token"
    probe = (
        "import sys; from pathlib import Path; from script_monitor.config import load_config;"
        f" c = load_config(Path({str(tmp_path)!r}));"
        " print(c.settings.scheduling.timezone, 'yaml' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Europe/Paris", "False"]


def test_an_edited_config_yaml_is_read_again(tmp_path: Path) -> None:
    _with_settings(tmp_path)
    load_config(tmp_path)
    write(tmp_path, "config.yaml", CONFIG.replace("workers: 3", "workers: 4"))  # same size
    assert load_config(tmp_path).settings.execution.max_parallel_workers == 4
    write(tmp_path, "config.yaml", CONFIG.replace("Europe/Paris", "Europe/Nowhere"))
    r = sm(tmp_path, "list")
    assert_clean_error(r)
    assert "config.yaml:2" in r.stderr and "unknown timezone 'Europe/Nowhere'" in r.stderr


def test_a_state_folder_elsewhere_still_loads_config_yaml_right(tmp_path: Path) -> None:
    _with_settings(tmp_path, CONFIG + "paths:\n  state_dir: elsewhere\n")
    (tmp_path / "elsewhere").mkdir()
    first = load_config(tmp_path)
    os.utime(tmp_path / "config.yaml", (OLD + 1, OLD + 1))  # changed, but long ago
    again = load_config(tmp_path)
    assert again.settings == first.settings
    assert again.settings.paths.state_dir == "elsewhere"
    assert (tmp_path / "elsewhere" / ItemCache.FILE).exists()


@pytest.mark.parametrize(
    ("config", "scripts"),
    [
        ("web:\n  tokens:\n    - {name: ci, token: THE-SECRET-0123456789}\n", SCRIPTS),
        ("web:\n  token: THE-SECRET-0123456789\n", SCRIPTS),
        ("notifications:\n  channels:\n    ops: ['tgram://THE-SECRET-0123456789/1']\n", SCRIPTS),
        ("store:\n  url: postgresql://u:THE-SECRET-0123456789@db/x\n", SCRIPTS),
        (
            "secret_env: [TOKEN]\n",
            "scripts:\n  - name: a\n    command: 'true'\n    env: {TOKEN: THE-SECRET-0123456789}\n",
        ),
        (
            "",
            "scripts:\n  - name: a\n    command: 'true'\n    secret_env: [T]\n"
            "    env: {T: THE-SECRET-0123456789}\n",
        ),
        ("", "scripts:\n  - name: a\n    command: curl https://u:THE-SECRET-0123456789@h/\n"),
        ("", "scripts:\n  - name: a\n    command: curl 'https://h/?api_key=THE-SECRET-0'\n"),
    ],
)
def test_a_file_holding_a_secret_is_never_kept(tmp_path: Path, config: str, scripts: str) -> None:
    """A secret stays in no file but its own: a file holding one is read every time."""
    _config(tmp_path, scripts)
    write(tmp_path, "config.yaml", config or "execution:\n  max_parallel_workers: 2\n")
    os.utime(tmp_path / "config.yaml", (OLD, OLD))
    load_config(tmp_path)
    load_config(tmp_path)
    assert _kept(tmp_path).exists()  # the files without one are kept
    assert b"THE-SECRET" not in _kept(tmp_path).read_bytes()
