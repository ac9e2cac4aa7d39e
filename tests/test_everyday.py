"""What a new user trips on: empty configuration files and mistyped names.

- An empty or comments-only config.yaml means every default; an empty groups.yaml
  means no groups; neither is even a warning (so validation.strict cannot turn it
  into an error). An empty scripts file stays an error: nothing could run.
- An unknown script or group name is a usage error that names it, suggests the
  closest names, exits 2 and never calls the configuration invalid.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import assert_clean_error, make_config, sm

EMPTY = {
    "zero-bytes": "",
    "blank-lines": "\n\n   \n",
    "comments": "# settings come later\n  # indented comment\n",
    "document-marker": "---\n# nothing yet\n",
    "null": "~\n",
}


@pytest.fixture
def working(config_dir: Path) -> Path:
    return make_config(
        config_dir,
        {"check_disk": "echo disk ok", "check_dns": "true", "backup": "true"},
        [
            {"name": "health", "execution": "parallel", "scripts": ["check_disk", "check_dns"]},
            {"name": "nightly", "scripts": ["backup"]},
        ],
    )


@pytest.mark.parametrize("text", EMPTY.values(), ids=EMPTY.keys())
def test_an_empty_config_yaml_means_every_default(working, text):
    (working / "config.yaml").write_text(text)
    r = sm(working, "validate")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout.startswith("Configuration OK: 3 scripts, 2 groups (")
    assert sm(working, "get-setting", "execution.max_parallel_workers").stdout == "5\n"
    r = sm(working, "run-group", "health")
    assert r.returncode == 0 and r.stderr == ""


def test_touching_config_yaml_never_breaks_a_working_setup(working):
    before = [sm(working, *a).stdout for a in (["validate"], ["show-config"], ["list"])]
    (working / "config.yaml").touch()
    after = [sm(working, *a).stdout for a in (["validate"], ["show-config"], ["list"])]
    assert after == before


@pytest.mark.parametrize("text", [*EMPTY.values(), "groups:\n#  - name: later\n"])
def test_an_empty_groups_file_means_no_groups(working, text):
    (working / "groups.yaml").write_text(text)
    r = sm(working, "validate")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.startswith("Configuration OK: 3 scripts, 0 groups")
    assert sm(working, "list-groups").stdout == ""
    assert sm(working, "run", "check_disk").returncode == 0


def test_an_empty_groups_file_is_no_warning_even_when_strict(working):
    (working / "config.yaml").write_text("validation:\n  strict: true\n")
    (working / "groups.yaml").write_text("# groups come later\n")
    r = sm(working, "validate")
    assert r.returncode == 0, r.stderr


def test_an_empty_file_in_a_groups_directory_is_skipped(working):
    (working / "groups.yaml").unlink()
    (working / "groups").mkdir()
    (working / "groups" / "a.yaml").write_text(
        "groups:\n  - name: a\n    scripts: [backup, check_disk, check_dns]\n"
    )
    (working / "groups" / "b.yaml").write_text("# b is not written yet\n")
    r = sm(working, "validate")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.startswith("Configuration OK: 3 scripts, 1 groups (")


@pytest.mark.parametrize("text", ["", "# no scripts yet\n"])
def test_an_empty_scripts_file_stays_an_error(working, text):
    (working / "scripts.yaml").write_text(text)
    r = sm(working, "validate")
    assert_clean_error(r)
    assert f"{working / 'scripts.yaml'}:1: error: file is empty" in r.stderr


def test_groups_with_nothing_but_a_key_is_not_a_scripts_file_excuse(working):
    (working / "scripts.yaml").write_text("scripts:\n# - name: a\n")
    r = sm(working, "validate")
    assert_clean_error(r)
    assert "'scripts' must be a list of scripts, got nothing" in r.stderr


# ---------------------------------------------------------------- unknown names

TYPO = "unknown script 'check_dsk'; did you mean 'check_disk' or 'check_dns'?"
CASES = [
    (["run", "check_dsk"], TYPO),
    (["history", "check_dsk"], TYPO),
    (["logs", "check_dsk"], TYPO),
    (["clear-logs", "check_dsk"], TYPO),
    (["history", "bakup"], "unknown script 'bakup'; did you mean 'backup'?"),
    (["run-group", "helth"], "unknown group 'helth'; did you mean 'health'?"),
    (["export-cron", "helth"], "unknown group 'helth'; did you mean 'health'?"),
    (["export-systemd", "helth"], "unknown group 'helth'; did you mean 'health'?"),
    (["run", "zzz"], "unknown script 'zzz'; `script-monitor list` shows every script"),
    (["run-group", "zzz"], "unknown group 'zzz'; `script-monitor list-groups` shows every group"),
    (["run", "health"], "unknown script 'health' ('health' is a group)"),
    (["run-group", "backup"], "unknown group 'backup' ('backup' is a script)"),
    (
        ["run-group", "check_dis"],
        "unknown group 'check_dis' ('check_dis' is a script); did you mean 'check_disk'?",
    ),
]


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_an_unknown_name_is_named_with_suggestions(working, argv, message):
    if argv == ["run-group", "check_dis"]:  # a script's name, and close to one group's
        make_config(
            working,
            {"check_dis": "true", "backup": "true"},
            [{"name": "check_disk", "scripts": ["check_dis", "backup"]}],
        )
    r = sm(working, *argv)
    assert_clean_error(r)
    assert r.stderr == f"script-monitor: {message}\n"  # one line: the configuration is fine
    assert r.stdout == ""
    assert not (working / ".script-monitor").exists()  # refused before any history is made


def test_an_unknown_name_after_runs_leaves_the_history_alone(working):
    assert sm(working, "run", "backup").returncode == 0
    r = sm(working, "history", "bakup", "--json")
    assert_clean_error(r)
    assert r.stdout == ""
    assert "configuration is invalid" not in r.stderr
