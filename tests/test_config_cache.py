"""The parsed scripts and groups kept in the state folder: used while the files are
unchanged, never when they changed, never instead of an error."""

from __future__ import annotations

import os
from pathlib import Path

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
