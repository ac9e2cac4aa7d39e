"""Configuration: every bad input is refused cleanly; warnings, strict mode, settings.

Bad input must give exit 2, a message naming the file and line, no traceback, and
must leave every file untouched (no state directory, no logs) — for every command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import assert_clean_error, cli, hash_tree, make_config, write
from script_monitor.config import Settings, get_setting, load_config
from script_monitor.errors import ConfigError

SCRIPTS = "scripts:\n  - name: a\n    command: echo a\n"
GROUPS = "groups:\n  - name: g\n    scripts: [a]\n"

# id -> (files, "file:line" expected, fragment of the message)
BAD: dict[str, tuple[dict[str, str | bytes], str, str]] = {
    "malformed-yaml": (
        {"scripts.yaml": "scripts:\n  - name: a\n    command: echo a\n  - name b: [\n"},
        "scripts.yaml:",
        "invalid YAML",
    ),
    "tab": (
        {"scripts.yaml": "scripts:\n\t- name: a\n    command: echo a\n"},
        "scripts.yaml:2",
        "tabs are not allowed",
    ),
    "unclosed-quote": (
        {"scripts.yaml": 'scripts:\n  - name: a\n    command: "echo a\n  - name: b\n  - x\n'},
        "scripts.yaml:3",
        "quoted scalar",
    ),
    "execution-sideways": (
        {"scripts.yaml": SCRIPTS, "groups.yaml": GROUPS + "    execution: sideways\n"},
        "groups.yaml:4",
        "invalid value 'sideways': expected serial or parallel",
    ),
    "stop-on-error-maybe": (
        {"scripts.yaml": SCRIPTS, "groups.yaml": GROUPS + "    stop_on_error: maybe\n"},
        "groups.yaml:4",
        "key 'stop_on_error': expected true or false",
    ),
    "scripts-5": (
        {"scripts.yaml": SCRIPTS, "groups.yaml": "groups:\n  - name: g\n    scripts: 5\n"},
        "groups.yaml:3",
        "key 'scripts': expected a list",
    ),
    "unknown-script-key": (
        {"scripts.yaml": SCRIPTS + "    commmand: typo\n"},
        "scripts.yaml:4",
        "unknown key 'commmand'",
    ),
    "unknown-group-key": (
        {"scripts.yaml": SCRIPTS, "groups.yaml": GROUPS + "    parallel: true\n"},
        "groups.yaml:4",
        "unknown key 'parallel'",
    ),
    "unknown-setting": (
        {"scripts.yaml": SCRIPTS, "config.yaml": "execution:\n  max_workers: 3\n"},
        "config.yaml:2",
        "unknown key 'max_workers'",
    ),
    "unknown-top-level-key": (
        {"scripts.yaml": SCRIPTS + "groups: []\n"},
        "scripts.yaml:4",
        "unknown top-level key 'groups'",
    ),
    "duplicate-across-files": (
        {
            "scripts/10-base.yaml": SCRIPTS,
            "scripts/20-more.yaml": "scripts:\n  - name: b\n    command: x\n"
            "  - name: a\n    command: y\n",
        },
        "scripts/20-more.yaml:4",
        "duplicate script name 'a' (first defined in 10-base.yaml:2)",
    ),
    "duplicate-group": (
        {"scripts.yaml": SCRIPTS, "groups.yaml": GROUPS + "  - name: g\n    scripts: [a]\n"},
        "groups.yaml:4",
        "duplicate group name 'g'",
    ),
    "missing-member": (
        {"scripts.yaml": SCRIPTS, "groups.yaml": "groups:\n  - name: g\n    scripts: [a, nope]\n"},
        "groups.yaml:3",  # the member's own line
        "group 'g': unknown script 'nope'",
    ),
    "missing-member-beside-a-warning": (
        {
            "scripts.yaml": SCRIPTS,
            "groups.yaml": "groups:\n  - name: g\n    execution: parallel\n"
            "    stop_on_error: true\n    scripts: [nope]\n",
        },
        "groups.yaml:5",
        "group 'g': unknown script 'nope'",
    ),
    "empty-file": ({"scripts.yaml": ""}, "scripts.yaml:1", "file is empty"),
    "only-comments": ({"scripts.yaml": "# nothing yet\n"}, "scripts.yaml:1", "file is empty"),
    "non-utf8": (
        {"scripts.yaml": b"scripts:\n  - name: a\n    command: echo \xff\xfe\n"},
        "scripts.yaml:3",
        "not valid UTF-8",
    ),
    "negative-timeout": (
        {"scripts.yaml": SCRIPTS + "    timeout: -1\n"},
        "scripts.yaml:4",
        "key 'timeout': expected a number >= 0, got -1",
    ),
    "timeout-not-a-number": (
        {"scripts.yaml": SCRIPTS + "    timeout: soon\n"},
        "scripts.yaml:4",
        "key 'timeout': expected a number",
    ),
    "bad-cron": (
        {"scripts.yaml": SCRIPTS, "groups.yaml": GROUPS + '    schedule: "61 * * * *"\n'},
        "groups.yaml:4",
        "invalid cron expression '61 * * * *'",
    ),
    "unknown-timezone": (
        {"scripts.yaml": SCRIPTS, "groups.yaml": GROUPS + "    timezone: Mars/Olympus_Mons\n"},
        "groups.yaml:4",
        "unknown timezone 'Mars/Olympus_Mons'",
    ),
    "unknown-global-timezone": (
        {"scripts.yaml": SCRIPTS, "config.yaml": "scheduling:\n  timezone: Nowhere/City\n"},
        "config.yaml:2",
        "unknown timezone 'Nowhere/City'",
    ),
    "bad-name": (
        {"scripts.yaml": "scripts:\n  - name: ../etc\n    command: x\n"},
        "scripts.yaml:2",
        "invalid name '../etc'",
    ),
    "empty-command": (
        {"scripts.yaml": "scripts:\n  - name: a\n    command: []\n"},
        "scripts.yaml:3",
        "key 'command'",
    ),
    "bad-env-name": (
        {"scripts.yaml": SCRIPTS + "    env: {'1BAD': x}\n"},
        "scripts.yaml:4",
        "invalid variable name '1BAD'",
    ),
    "bad-log-limit": (
        {"scripts.yaml": SCRIPTS + "    log_limit: {type: size, value: 3}\n"},
        "scripts.yaml:4",
        "expected count or age",
    ),
    "zero-workers": (
        {"scripts.yaml": SCRIPTS, "config.yaml": "execution:\n  max_parallel_workers: 0\n"},
        "config.yaml:2",
        "expected a whole number >= 1",
    ),
    "duplicate-key": (
        {"scripts.yaml": SCRIPTS + "    command: echo b\n"},
        "scripts.yaml:4",
        "duplicate key 'command'",
    ),
    "scripts-not-a-list": ({"scripts.yaml": "scripts: echo\n"}, "scripts.yaml:1", "must be a list"),
    "missing-scripts-file": (
        {"scripts.yaml": SCRIPTS, "config.yaml": "paths:\n  scripts_file: elsewhere.yaml\n"},
        "config.yaml",
        "'elsewhere.yaml' does not exist",
    ),
}


def populate(conf: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = conf / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_with_file_and_line(config_dir, case):
    files, where, fragment = BAD[case]
    populate(config_dir, files)
    before = hash_tree(config_dir)
    r = cli("--config-dir", str(config_dir), "validate")
    assert_clean_error(r)
    location = f"{config_dir / where}"
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert any(line.startswith(location) and fragment in line for line in errors), r.stderr
    # every error names a file and a line ("path:N: error: ...")
    for line in errors:
        head = line.split(": error: ")[0]
        assert head.startswith(str(config_dir)), line
        if case != "missing-scripts-file":
            assert head.rsplit(":", 1)[1].isdigit(), line
    assert r.stderr.splitlines()[-1].startswith("script-monitor: configuration is invalid (")
    assert hash_tree(config_dir) == before
    assert sorted(p.name for p in config_dir.iterdir()) == sorted(
        {n.split("/")[0] for n in files}
    ), "validate created something"


def test_every_problem_of_every_file_is_reported_at_once(config_dir):
    populate(
        config_dir,
        {
            "config.yaml": "execution:\n  max_parallel_workers: lots\n",
            "scripts.yaml": SCRIPTS
            + "    timeout: -5\n  - name: b\n    command: x\n    bogus: 1\n",
            "groups.yaml": GROUPS + "    execution: sideways\n",
        },
    )
    r = cli("--config-dir", str(config_dir), "validate")
    assert_clean_error(r)
    assert f"{config_dir}/config.yaml:2: error:" in r.stderr
    assert f"{config_dir}/scripts.yaml:4: error:" in r.stderr
    assert f"{config_dir}/scripts.yaml:7: error:" in r.stderr
    assert f"{config_dir}/groups.yaml:4: error:" in r.stderr
    assert "configuration is invalid (4 errors)" in r.stderr


def _verb_args(verb: str) -> list[str]:
    extra = {
        "run": ["a"],
        "run-group": ["g"],
        "history": ["a"],
        "logs": ["a"],
        "clear-logs": ["a"],
        "get-setting": ["execution.max_parallel_workers"],
        "export-systemd": ["g"],
        "export-cron": ["g"],
        "graph": ["g"],
        "scheduler": [],
        "store": ["migrate"],
        "notify-test": ["ops"],
        "ping": ["a"],
        "wrap": ["a", "--", "touch", "ran"],  # nothing runs: no file appears
    }
    return [verb, *extra.get(verb, [])]


def test_every_command_refuses_an_invalid_config_the_same_way(config_dir):
    from script_monitor.cli import VERBS

    populate(config_dir, {"scripts.yaml": SCRIPTS, "groups.yaml": GROUPS + "    execution: x\n"})
    before = hash_tree(config_dir)
    reference = cli("--config-dir", str(config_dir), "validate")
    assert_clean_error(reference)
    # init writes a new configuration; completion and schema print what the program
    # defines and read none
    verbs = [v for v in VERBS if v not in ("validate", "init", "completion", "schema")]
    assert len(verbs) >= 14
    for verb in verbs:
        r = cli("--config-dir", str(config_dir), *_verb_args(verb), timeout=30, cwd=config_dir)
        assert_clean_error(r)
        assert r.stderr == reference.stderr, verb
        assert r.stdout == "", verb
    assert hash_tree(config_dir) == before
    assert sorted(p.name for p in config_dir.iterdir()) == ["groups.yaml", "scripts.yaml"]


def test_a_missing_config_directory_is_a_clean_error(tmp_path):
    r = cli("--config-dir", str(tmp_path / "nope"), "list")
    assert_clean_error(r)
    assert f"{tmp_path / 'nope'}: error: config directory does not exist" in r.stderr
    assert not (tmp_path / "nope").exists()


def test_unknown_script_or_group_is_a_usage_error(config_dir):
    populate(config_dir, {"scripts.yaml": SCRIPTS, "groups.yaml": GROUPS})
    for args, text in (
        (["run", "zzz"], "unknown script 'zzz'; `script-monitor list` shows every script"),
        (["run-group", "zzz"], "unknown group 'zzz'; `script-monitor list-groups` shows every"),
        (["history", "zzz"], "unknown script 'zzz'; `script-monitor list` shows every script"),
        (["logs", "zzz"], "unknown script 'zzz'; `script-monitor list` shows every script"),
    ):
        r = cli("--config-dir", str(config_dir), *args)
        assert_clean_error(r)
        assert r.stderr.startswith(f"script-monitor: {text}")
        assert len(r.stderr.splitlines()) == 1  # and never "configuration is invalid"


# ---------------------------------------------------------------- warnings, strict


def _warning_config(conf: Path, strict: bool | None = None, **flags) -> None:
    settings: dict = {"validation": dict(flags)}
    if strict is not None:
        settings["validation"]["strict"] = strict
    make_config(
        conf,
        {"a": "echo a", "unused": "echo u"},
        [
            {"name": "p", "execution": "parallel", "stop_on_error": True, "scripts": ["a"]},
            {"name": "empty", "scripts": []},
        ],
        settings if settings["validation"] else None,
    )


def test_warnings_name_file_and_line_and_do_not_fail(config_dir):
    _warning_config(config_dir)
    r = cli("--config-dir", str(config_dir), "validate")
    assert r.returncode == 0, r.stderr
    s, g = config_dir / "scripts.yaml", config_dir / "groups.yaml"
    lines = r.stdout.splitlines()
    assert f"{s}:4: warning: script 'unused' is not in any group" in lines
    assert f"{g}:7: warning: group 'empty' has no scripts" in lines
    assert f"{g}:4: warning: group 'p': stop_on_error has no effect on a parallel group" in lines
    assert lines[-1].startswith("Configuration OK: 2 scripts, 2 groups, 3 warnings (")
    # other commands still work and show the warnings on stderr
    r = cli("--config-dir", str(config_dir), "run", "a")
    assert r.returncode == 0
    assert "warning: script 'unused' is not in any group" in r.stderr


def test_strict_turns_warnings_into_errors(config_dir):
    _warning_config(config_dir, strict=True)
    r = cli("--config-dir", str(config_dir), "validate")
    assert_clean_error(r)
    assert "error: script 'unused' is not in any group (validation.strict)" in r.stderr
    assert "configuration is invalid (3 errors)" in r.stderr
    r = cli("--config-dir", str(config_dir), "run", "a")
    assert_clean_error(r)
    assert not (config_dir / "logs").exists()


def test_warning_switches_turn_warnings_off(config_dir):
    _warning_config(config_dir, warn_unused_scripts=False, warn_empty_groups=False)
    r = cli("--config-dir", str(config_dir), "validate")
    assert r.returncode == 0
    assert "not in any group" not in r.stdout
    assert "has no scripts" not in r.stdout
    assert "stop_on_error has no effect" in r.stdout


# ---------------------------------------------------------------- settings


def test_get_setting_prints_effective_values_and_refuses_unknown_keys(config_dir):
    populate(
        config_dir,
        {"scripts.yaml": SCRIPTS, "config.yaml": "execution:\n  default_timeout: 12.5\n"},
    )
    expect = {
        "execution.max_parallel_workers": "5",
        "execution.default_timeout": "12.5",
        "scheduling.enabled": "true",
        "paths.log_dir": "logs",
        "default_log_limit": '{"type": "count", "value": 10}',
        "display.date_format": "%d %b %H:%M",
    }
    for key, value in expect.items():
        r = cli("--config-dir", str(config_dir), "get-setting", key)
        assert (r.returncode, r.stdout) == (0, value + "\n"), key
    for key in ("execution.nope", "nope", "execution.max_parallel_workers.x", ""):
        r = cli("--config-dir", str(config_dir), "get-setting", key)
        assert_clean_error(r)
        assert r.stdout == ""


def test_show_config_json_holds_every_setting_and_item(config_dir):
    import json

    make_config(config_dir, {"a": "echo a"}, [{"name": "g", "scripts": ["a"]}])
    r = cli("--config-dir", str(config_dir), "show-config", "--json")
    data = json.loads(r.stdout)
    assert data["settings"]["execution"]["max_parallel_workers"] == 5
    assert [s["name"] for s in data["scripts"]] == ["a"]
    assert [g["name"] for g in data["groups"]] == ["g"]
    assert data["config_dir"] == str(config_dir)


# ---------------------------------------------------------------- the YAML stays untouched


def test_running_leaves_every_yaml_file_byte_for_byte_unchanged(config_dir):
    scripts = (
        "# my scripts  -- hand formatted, with comments\n"
        "scripts:\n"
        "  - {name: a, command: 'echo a'}   # flow style\n"
        "  - name: b\n"
        "    command:\n"
        "      - sh\n"
        "      - -c\n"
        "      - exit 3\n"
        "    timeout: 5   # seconds\n"
    )
    groups = "groups:\n  - name: g\n    execution: parallel\n    scripts: [a, b]\n\n\n# end\n"
    config = "execution:\n    max_parallel_workers: 2   # odd indent\n"
    populate(config_dir, {"scripts.yaml": scripts, "groups.yaml": groups, "config.yaml": config})
    yamls = [config_dir / n for n in ("scripts.yaml", "groups.yaml", "config.yaml")]
    before = [(p.read_bytes(), p.stat().st_mtime_ns) for p in yamls]
    for args in (
        ["run", "a"],
        ["run", "b"],
        ["run-group", "g"],
        ["run-all"],
        ["list"],
        ["list-groups"],
        ["history", "b"],
        ["logs", "a"],
        ["clear-logs", "a"],
        ["clear-all-logs"],
        ["show-config"],
        ["validate"],
    ):
        r = cli("--config-dir", str(config_dir), *args)
        assert r.returncode in (0, 1), (args, r.stderr)
    assert [(p.read_bytes(), p.stat().st_mtime_ns) for p in yamls] == before


# ---------------------------------------------------------------- the config package directly


def test_load_config_reads_a_scripts_directory_in_sorted_order(config_dir):
    write(config_dir, "scripts/b.yml", "scripts:\n  - name: second\n    command: x\n")
    write(config_dir, "scripts/a.yaml", "scripts:\n  - name: first\n    command: [x, y]\n")
    write(config_dir, "scripts/notes.txt", "ignored")
    config = load_config(config_dir)
    assert list(config.scripts) == ["first", "second"]
    assert config.scripts["first"].command == ["x", "y"]
    assert config.origin["script:second"] == (config_dir / "scripts" / "b.yml", 2)


def test_load_config_resolves_paths_relative_to_the_config_dir(config_dir, monkeypatch, tmp_path):
    populate(
        config_dir,
        {
            "scripts.yaml": SCRIPTS,
            "config.yaml": "paths:\n  log_dir: ../elsewhere/logs\n  state_dir: state\n",
        },
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(config_dir)
    assert config.log_dir == (tmp_path / "elsewhere" / "logs").resolve()
    assert config.state_dir == config_dir / "state"
    assert config.timeout_for(config.scripts["a"]) == 300
    assert config.log_limit_for(config.scripts["a"]).value == 10


def test_load_config_raises_with_every_problem(config_dir):
    populate(config_dir, {"scripts.yaml": SCRIPTS + "    timeout: -1\n    x: 1\n"})
    with pytest.raises(ConfigError) as e:
        load_config(config_dir)
    assert sorted((p.file, p.line) for p in e.value.problems) == [
        (config_dir / "scripts.yaml", 4),
        (config_dir / "scripts.yaml", 5),
    ]
    assert all(p.level == "error" for p in e.value.problems)


def test_workers_for_prefers_the_group_value(config_dir):
    make_config(
        config_dir,
        {"a": "true"},
        [
            {"name": "own", "execution": "parallel", "max_parallel_workers": 7, "scripts": ["a"]},
            {"name": "default", "execution": "parallel", "scripts": ["a"]},
        ],
        {"execution": {"max_parallel_workers": 3}},
    )
    config = load_config(config_dir)
    assert config.workers_for(config.groups["own"]) == 7
    assert config.workers_for(config.groups["default"]) == 3


def test_get_setting_function():
    settings = Settings()
    assert get_setting(settings, "execution.max_parallel_workers") == 5
    with pytest.raises(KeyError):
        get_setting(settings, "execution.bogus")


# The wording of each kind of problem, in our words (never msgspec's): what the key
# expects and what it got; a key inside a mapping is named; every bad key is reported.
WORDING = [
    ("    timeout: soon\n", "key 'timeout': expected a number, got a string"),
    ("    timeout: -1\n", "key 'timeout': expected a number >= 0, got -1"),
    ("    retries: {backoff: 0.5}\n", "key 'retries.backoff': expected a number >= 1, got 0.5"),
    ("    retries: x\n", "key 'retries': expected a whole number or a mapping, got a string"),
    ("    notify: 3\n", "key 'notify': expected true/false or a mapping, got a whole number"),
    (
        "    retries: {exit_codes: [x]}\n",
        "key 'retries.exit_codes.0': expected a whole number, got a string",
    ),
    ("    env: {A: [1]}\n", "key 'env.A': expected a string, a number or true/false, got a list"),
    ("    env: {1BAD: x, 2BAD: y}\n", "key 'env': invalid variable name '1BAD', '2BAD'"),
    ("    secret_env: [a-b]\n", "key 'secret_env.0': invalid variable name 'a-b'"),
    ("    leftovers: maybe\n", "key 'leftovers': invalid value 'maybe': expected keep or kill"),
    ("    log_limit: {type: count}\n", "missing required key 'value' in 'log_limit'"),
    ("    alerts: [{pattern: x, colour: red}]\n", "in 'alerts.0': unknown key 'colour'"),
]


@pytest.mark.parametrize(("extra", "message"), WORDING)
def test_each_problem_is_worded_by_us_and_names_its_key(config_dir, extra, message):
    write(config_dir, "scripts.yaml", SCRIPTS + extra)
    with pytest.raises(ConfigError) as e:
        load_config(config_dir)
    assert [p.message for p in e.value.problems] == [f"script 'a': {message}"]


def test_every_bad_key_of_an_item_is_reported_and_the_item_kept(config_dir):
    write(config_dir, "scripts.yaml", SCRIPTS + "    timeout: x\n    cwd: 5\n    colour: red\n")
    write(config_dir, "groups.yaml", GROUPS + "    execution: sideways\n")
    with pytest.raises(ConfigError) as e:
        load_config(config_dir)
    assert [(p.line, p.message) for p in e.value.problems] == [
        (4, "script 'a': key 'timeout': expected a number, got a string"),
        (5, "script 'a': key 'cwd': expected a string, got a whole number"),
        (6, "script 'a': unknown key 'colour'"),
        (4, "group 'g': key 'execution': invalid value 'sideways': expected serial or parallel"),
    ]  # the group's member 'a' exists: the script was kept without its bad keys
