"""The command line: both entry points, how the config directory is chosen, --version, init."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from helpers import ROOT, assert_clean_error, cli, hash_tree, make_config, write

CONSOLE = ROOT / ".venv" / "bin" / "script-monitor"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def console(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed ``script-monitor`` console script."""
    return subprocess.run(
        [str(CONSOLE), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def one_script(conf: Path, text: str) -> Path:
    return make_config(conf, {"hello": f"echo {text}"})


def test_version_from_the_checkout_and_the_console_script():
    r = cli("--version")
    assert (r.returncode, r.stdout) == (0, f"script-monitor {VERSION}\n")
    if not CONSOLE.exists():
        pytest.skip(f"no installed console script at {CONSOLE}")
    r = console("--version")
    assert (r.returncode, r.stdout) == (0, f"script-monitor {VERSION}\n")


def test_the_console_script_runs_the_same_program(config_dir):
    if not CONSOLE.exists():
        pytest.skip(f"no installed console script at {CONSOLE}")
    one_script(config_dir, "from-console")
    r = console("--config-dir", str(config_dir), "run", "hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Running hello...\nfrom-console\nhello ✓ (")
    r = cli("--config-dir", str(config_dir), "history", "hello", "--json")
    assert r.returncode == 0 and '"status": "success"' in r.stdout
    r = console("--config-dir", str(config_dir), "list")
    assert r.stdout.splitlines()[1].split()[:2] == ["hello", "success"]


def test_help_and_usage_errors():
    r = cli("--help")
    assert r.returncode == 0 and "run-group" in r.stdout
    for args in (["no-such-command"], [], ["run"], ["history", "x", "--limit", "0"]):
        r = cli(*args)
        assert r.returncode == 2, args
        assert "Traceback" not in r.stderr
        assert "usage:" in r.stderr


def test_the_config_dir_comes_from_the_option_then_the_variable_then_the_cwd(tmp_path):
    option, variable, current = (one_script(tmp_path / n, n) for n in ("opt", "var", "cwd"))
    env = {"SCRIPT_MONITOR_HOME": str(variable)}
    cases = [
        (["--config-dir", str(option)], env, "opt"),
        ([], env, "var"),
        ([], {}, "cwd"),
    ]
    for prefix, extra_env, expected in cases:
        r = cli(*prefix, "run", "hello", "-q", cwd=current, env=extra_env)
        assert r.returncode == 0, r.stderr
        log = next((tmp_path / expected / "logs" / "hello").iterdir()).read_text()
        assert f"\n{expected}\n" in log
    # each run was recorded in its own directory, nothing leaked into the others
    for name in ("opt", "var", "cwd"):
        assert len(list((tmp_path / name / "logs" / "hello").iterdir())) == 1
        assert (tmp_path / name / ".script-monitor").is_dir()


def test_a_relative_config_dir_and_home_are_resolved(tmp_path):
    one_script(tmp_path / "conf", "relative")
    r = cli("--config-dir", "conf", "run", "hello", cwd=tmp_path)
    assert r.returncode == 0
    home = Path(os.environ["HOME"])
    one_script(home / "mon", "tilde")
    r = cli("--config-dir", "~/mon", "run", "hello")
    assert r.returncode == 0 and "tilde" in r.stdout


def test_relative_paths_in_the_config_are_relative_to_the_config_dir(tmp_path):
    conf = tmp_path / "conf"
    make_config(
        conf,
        {"w": {"command": "pwd > out.txt; cat data.txt", "cwd": "work"}},
        settings={
            "paths": {
                "log_dir": "var/logs",
                "scripts_file": "defs/scripts",
                "state_dir": "var/state",
            }
        },
    )
    (conf / "defs" / "scripts").mkdir(parents=True)
    (conf / "scripts.yaml").rename(conf / "defs" / "scripts" / "main.yaml")
    (conf / "work").mkdir()
    (conf / "work" / "data.txt").write_text("data from the config dir\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = cli("--config-dir", str(conf), "run", "w", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert "data from the config dir" in r.stdout
    assert (conf / "work" / "out.txt").read_text() == f"{conf / 'work'}\n"
    assert len(list((conf / "var" / "logs" / "w").iterdir())) == 1
    assert (conf / "var" / "state").is_dir()
    assert list(elsewhere.iterdir()) == []


def test_init_writes_a_config_that_validates_runs_and_is_not_overwritten(tmp_path):
    target = tmp_path / "new" / "monitor"
    r = cli("init", str(target))
    assert r.returncode == 0, r.stderr
    suggestion = r.stdout.splitlines()[-1]
    assert sorted(p.name for p in target.iterdir()) == [
        ".schema",  # the JSON Schemas the files' first lines point editors at
        "checks.yaml",
        "config.yaml",
        "groups.yaml",
        "scripts.yaml",
    ]
    r = cli("--config-dir", str(target), "validate")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stdout
    # the command init suggests works
    assert suggestion == f"Try: script-monitor --config-dir {target} run-group health_checks"
    r = cli("--config-dir", str(target), "run-group", "health_checks")
    assert r.returncode == 0, r.stdout + r.stderr
    before = hash_tree(target)
    r = cli("init", str(target))
    assert_clean_error(r)
    assert "refusing to overwrite" in r.stderr
    assert hash_tree(target) == before


def test_init_without_a_directory_uses_the_config_dir(tmp_path):
    conf = tmp_path / "home-monitor"
    r = cli("init", env={"SCRIPT_MONITOR_HOME": str(conf)})
    assert r.returncode == 0, r.stderr
    assert (conf / "scripts.yaml").is_file()
    r = cli("validate", env={"SCRIPT_MONITOR_HOME": str(conf)})
    assert r.returncode == 0


def test_init_refuses_a_directory_with_a_scripts_dir(tmp_path):
    (tmp_path / "c" / "scripts").mkdir(parents=True)
    r = cli("init", str(tmp_path / "c"))
    assert_clean_error(r)
    assert not (tmp_path / "c" / "config.yaml").exists()


def test_output_to_a_closed_pipe_is_not_an_error(config_dir):
    make_config(config_dir, {f"s{i}": "true" for i in range(300)})
    r = subprocess.run(
        f"{sys.executable} {ROOT / 'main.py'} --config-dir {config_dir} list | head -1",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert r.stdout.startswith("SCRIPT")
    assert "Traceback" not in r.stderr


def test_numbers_in_an_argv_list_are_words(config_dir):
    """`command: [sleep, 0]` needs no quotes: YAML numbers become argv words."""
    write(config_dir, "scripts.yaml", "scripts:\n  - name: n\n    command: [echo, 5, 1.5]\n")
    r = cli("--config-dir", str(config_dir), "run", "n")
    assert r.returncode == 0, r.stderr
    assert "5 1.5\n" in r.stdout


def test_run_all_is_recorded_apart_from_user_groups(config_dir):
    """run-all's runs carry the group '(all)', which no user group can be named."""
    write(
        config_dir,
        "scripts.yaml",
        'scripts:\n  - name: a\n    command: "echo [$SCRIPT_MONITOR_GROUP]"\n',
    )
    r = cli("--config-dir", str(config_dir), "run-all")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Running all scripts...\n")
    r = cli("--config-dir", str(config_dir), "history", "a", "--json")
    assert json.loads(r.stdout)[0]["group"] == "(all)"
    r = cli("--config-dir", str(config_dir), "logs", "a")
    assert "\n[]\n" in r.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "a", "-q"],
        ["--config-dir", "x", "run-group", "g", "--trigger", "schedule"],
        ["--config-dir=x", "--no-color", "run-all"],
        ["list", "--json"],
        ["history", "a", "-n", "3"],
        ["logs", "a", "--run", "7", "--follow", "--raw"],
        ["clear-logs", "a"],
        ["get-setting", "execution.max_parallel_workers"],
        ["init", "somewhere"],
        ["scheduler", "--once"],
        ["export-systemd", "g", "--user", "--output", "out"],
        ["export-cron", "g"],
        ["list-schedules", "--json"],
        ["validate"],
    ],
)
def test_building_only_the_verbs_parser_parses_the_same(argv):
    """Only the verb's sub-parser is built at start-up; it must read the same."""
    from script_monitor.cli import _verb_in, build_parser

    assert _verb_in(argv) == next(
        w for w in argv if w in __import__("script_monitor.cli").cli.VERBS
    )
    assert build_parser(_verb_in(argv)).parse_args(argv) == build_parser().parse_args(argv)


@pytest.mark.parametrize(
    "argv", [["--help"], ["-h"], ["--config-dir", "x", "--help"], ["--no-color", "-h", "run"]]
)
def test_the_top_level_help_is_the_same_without_the_verbs_arguments(argv, capsys):
    """`--help` builds every verb's name and help but none of their arguments."""
    from script_monitor.cli import TOP, _verb_in, build_parser

    assert _verb_in(argv) == TOP
    texts = []
    for only in (TOP, None):
        with pytest.raises(SystemExit):
            build_parser(only).parse_args(argv)
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and "run-group" in texts[0] and "usage: script-monitor" in texts[0]


@pytest.mark.parametrize("verb", ["run", "run-group", "history", "logs", "export-systemd"])
def test_a_verbs_help_is_the_same_with_one_parser_or_all(verb, capsys):
    from script_monitor.cli import build_parser

    texts = []
    for only in (verb, None):
        with pytest.raises(SystemExit):
            build_parser(only).parse_args([verb, "--help"])
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and f"usage: script-monitor {verb}" in texts[0]
