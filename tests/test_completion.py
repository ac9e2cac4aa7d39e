"""Shell completion: `completion bash|zsh|fish` prints a script that completes verbs,
options, and script and group names read from the configuration.

Each script is loaded into the real shell: bash's completion function is called with
COMP_WORDS/COMP_CWORD as bash sets them and COMPREPLY is read back; fish answers
`complete -C`; zsh completes a line typed into an interactive shell on a pseudo-terminal.
The names come from the real CLI (`__complete`), through a `script-monitor` on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import MAIN, assert_clean_error, cli, make_config
from script_monitor.cli import VERBS, build_parser

SCRIPTS = ["check_disk", "check_dns", "backup"]
GROUPS = ["nightly", "hourly"]


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    return make_config(
        tmp_path / "conf",
        {name: "true" for name in SCRIPTS},
        [
            {"name": "nightly", "scripts": ["check_disk", "check_dns"], "schedule": "0 2 * * *"},
            {"name": "hourly", "scripts": ["backup"]},
        ],
    )


@pytest.fixture
def path_env(tmp_path: Path) -> dict[str, str]:
    """PATH with a `script-monitor` that runs this checkout's CLI."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "script-monitor"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{MAIN}" "$@"\n')
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def script(shell: str) -> str:
    r = cli("completion", shell)
    assert r.returncode == 0, r.stderr
    return r.stdout


# ---------------------------------------------------------------- __complete


def test_complete_prints_the_configured_names(conf):
    r = cli("--config-dir", str(conf), "__complete", "scripts")
    assert (r.returncode, r.stdout, r.stderr) == (0, "".join(f"{n}\n" for n in SCRIPTS), "")
    r = cli("--config-dir", str(conf), "__complete", "groups")
    assert (r.returncode, r.stdout) == (0, "nightly\nhourly\n")


def test_complete_on_a_broken_configuration_prints_no_names(conf):
    (conf / "groups.yaml").write_text("groups:\n  - name: [\n")
    r = cli("--config-dir", str(conf), "__complete", "scripts")
    assert_clean_error(r)
    assert r.stdout == ""


def test_the_hidden_verb_is_not_offered():
    assert "__complete" not in cli("--help").stdout
    assert "'__complete:" not in script("zsh")  # bash and fish: see their verb lists below


def test_other_commands_load_nothing_of_completion_status_or_pager(conf):
    """Start-up stays as it was: `--help` and `list` import none of the new modules."""
    probe = (
        "import sys\n"
        "from script_monitor.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "new = ('completion', 'status', 'pager', 'difflib')\n"
        "print(sorted(m for m in sys.modules if m.rsplit('.', 1)[-1] in new), file=sys.stderr)\n"
    )
    for argv in (["--help"], ["--config-dir", str(conf), "list"]):
        r = subprocess.run(
            [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60
        )
        assert r.stderr.strip().splitlines()[-1] == "[]", (argv, r.stderr)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_every_verb_and_option_is_in_every_script(shell):
    from script_monitor.commands.completion import spec

    text = script(shell)
    options, verbs = spec(build_parser())
    assert [v.name for v in verbs] == list(VERBS)
    for v in verbs:
        assert v.name in text
        for o in v.options:
            for flag in o.flags:
                word = flag if shell != "fish" else (f"-l {flag[2:]}" if flag[1] == "-" else "-s ")
                assert word in text, (v.name, flag)
    for o in options:
        assert o.flags[-1].lstrip("-") in text


def test_an_unknown_shell_is_a_usage_error():
    r = cli("completion", "tcsh")
    assert_clean_error(r)
    assert "invalid choice: 'tcsh'" in r.stderr


# ---------------------------------------------------------------- bash

BASH_CASES = {
    # COMP_WORDS after "script-monitor" (the last one is being completed) -> COMPREPLY
    ("",): sorted(VERBS),
    ("ru",): ["run", "run-all", "run-group"],
    ("--",): ["--config-dir", "--help", "--no-color", "--no-pager", "--version"],
    ("run", "ch"): ["check_disk", "check_dns"],
    ("run", ""): sorted(SCRIPTS),
    ("run", "check_disk", ""): [],
    ("run", "-q", "b"): ["backup"],
    ("run", "--trigger", ""): ["api", "manual", "schedule"],
    ("run", "--trigger", "schedule", "c"): ["check_disk", "check_dns"],
    ("run", "--trigger", "=", "s"): ["schedule"],
    ("run-group", ""): sorted(GROUPS),
    ("history", "-n", "5", ""): sorted(SCRIPTS),
    ("history", "--lim"): ["--limit"],
    ("logs", "--"): ["--follow", "--help", "--no-pager", "--raw", "--run"],
    ("logs", "--run", ""): [],
    ("clear-logs", "back"): ["backup"],
    ("export-systemd", "n"): ["nightly"],
    ("export-cron", "--output", "x", "h"): ["hourly"],
    ("get-setting", "execution.max"): ["execution.max_parallel_workers"],
    ("completion", ""): ["bash", "fish", "zsh"],
    ("status", "--"): ["--help", "--json"],
    ("list", ""): [],
}


def run_bash(cases: list[tuple[str, ...]], env: dict, cwd: Path) -> list[list[str]]:
    """Complete each case in one real bash, as bash would call the function."""
    lines = [
        "source /dev/stdin <<'COMPLETION'",
        script("bash"),
        "COMPLETION",
        'complete -p script-monitor; echo "=="',
        't() { COMP_WORDS=(script-monitor "$@"); COMP_CWORD=$#; COMPREPLY=(); _script_monitor;'
        ' printf "%s\\n" "${COMPREPLY[@]}" | sort; echo "=="; }',
    ]
    for words in cases:
        lines.append("t " + " ".join(f"'{w}'" for w in words))
    r = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    blocks = r.stdout.split("==\n")
    assert blocks[0] == "complete -F _script_monitor script-monitor\n"
    return [[w for w in b.splitlines() if w] for b in blocks[1:-1]]


def test_bash_completes_verbs_options_and_names(conf, path_env):
    got = run_bash(list(BASH_CASES), {**path_env, "SCRIPT_MONITOR_HOME": str(conf)}, conf.parent)
    assert dict(zip(BASH_CASES, got, strict=True)) == BASH_CASES


def test_bash_reads_names_from_the_config_dir_on_the_line(conf, path_env, tmp_path):
    other = make_config(tmp_path / "other", {"only_here": "true"})
    cases = [
        ("--config-dir", str(other), "run", ""),
        ("--config-dir", "=", str(other), "run", ""),
        ("--no-color", "--config-dir", str(conf), "run", "b"),
        (
            "--config-dir",
            str(tmp_path / "oth"),
        ),
        ("run", ""),  # from the current directory: conf
    ]
    got = run_bash(cases, path_env, conf)
    assert got == [["only_here"], ["only_here"], ["backup"], [str(other)], sorted(SCRIPTS)]


def test_bash_offers_nothing_when_the_configuration_is_broken(conf, path_env):
    (conf / "scripts.yaml").write_text("scripts: [\n")
    assert run_bash([("run", "")], path_env, conf) == [[]]


# ---------------------------------------------------------------- fish

needs_fish = pytest.mark.skipif(not shutil.which("fish"), reason="fish is not installed")
needs_zsh = pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")


@needs_fish
def test_fish_script_is_valid_and_completes(conf, path_env, tmp_path):
    path = tmp_path / "script-monitor.fish"
    path.write_text(script("fish"))
    assert subprocess.run(["fish", "--no-execute", str(path)]).returncode == 0
    other = make_config(tmp_path / "other", {"only_here": "true"})
    cases = {
        "script-monitor ": sorted(VERBS),
        "script-monitor ru": ["run", "run-all", "run-group"],
        "script-monitor run ch": ["check_disk", "check_dns"],
        "script-monitor run check_disk ": [],
        "script-monitor run --trigger ": ["api", "manual", "schedule"],
        "script-monitor run -q --trigger manual b": ["backup"],
        "script-monitor run-group ": sorted(GROUPS),
        "script-monitor history -n 3 b": ["backup"],
        "script-monitor logs --r": ["--raw", "--run"],
        "script-monitor get-setting display.": ["display.date_format", "display.use_colors"],
        "script-monitor export-cron n": ["nightly"],
        f"script-monitor --config-dir {other} run ": ["only_here"],
        f"script-monitor --config-dir={other} run ": ["only_here"],
        "script-monitor completion ": ["bash", "fish", "zsh"],
    }
    program = [f"source {path}"]
    for line in cases:
        program += [f"complete -C {line!r} | sort", "echo =="]
    r = subprocess.run(
        ["fish", "--no-config", "-c", "\n".join(program)],
        capture_output=True,
        text=True,
        env={**os.environ, **path_env},
        cwd=conf,
        timeout=120,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    blocks = r.stdout.split("==\n")[:-1]
    got = [[ln.split("\t")[0] for ln in b.splitlines()] for b in blocks]
    assert dict(zip(cases, got, strict=True)) == cases


# ---------------------------------------------------------------- zsh

ZSH_STUB = """#!/bin/sh
# names come from the real CLI; any other command line is only echoed
case " $* " in
  *" __complete "*) exec "{python}" "{main}" "$@" ;;
  *) echo "ARGS: $*" ;;
esac
"""


def zsh_session(lines: list[str], env: dict, cwd: Path, timeout: float = 30) -> str:
    """Type lines into an interactive zsh on a pseudo-terminal; return what it showed."""
    import fcntl
    import select
    import struct
    import termios
    import time

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        ["zsh", "-f", "-i"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, **env, "TERM": "dumb", "PS1": "> "},
        cwd=cwd,
        start_new_session=True,
    )
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + timeout
        for i, line in enumerate(lines):
            os.write(master, line.encode())
            mark = f"DONE-{i}".encode()
            os.write(master, f"echo DONE-{i}\n".encode() if line.endswith("\n") else b"")
            while mark not in out and time.monotonic() < deadline and line.endswith("\n"):
                if select.select([master], [], [], 0.1)[0]:
                    out += os.read(master, 65536)
        os.write(master, b"exit\n")
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return out.decode("utf-8", "replace").replace("\r", "")


@needs_zsh
def test_zsh_script_is_valid_and_completes_in_a_real_zsh(conf, tmp_path):
    path = tmp_path / "_script-monitor"
    path.write_text(script("zsh"))
    assert subprocess.run(["zsh", "-n", str(path)]).returncode == 0
    bin_dir = tmp_path / "zbin"
    bin_dir.mkdir()
    stub = bin_dir / "script-monitor"
    stub.write_text(ZSH_STUB.format(python=sys.executable, main=MAIN))
    stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    screen = zsh_session(
        [
            f"autoload -U compinit && compinit -u -D && source {path}\n",
            "print -r -- $_comps[script-monitor]\n",
            "script-monitor run-group nig\t\n",  # one match: completed in place
            "script-monitor -\t\n",
            "script-monitor --config-dir . history ba\t\n",
            "script-monitor run --trigger sch\t ch\t\n",  # two matches: their common prefix
            "script-monitor get-setting execution.def\t\n",
            "script-monitor completion fi\t\n",
        ],
        env,
        conf,
    )
    assert "\n_script_monitor\n" in screen, screen  # compdef registered the function
    for line in (
        "ARGS: run-group nightly",
        "ARGS: --config-dir . history backup",
        "ARGS: run --trigger schedule check_d",  # (the shell word-splits the echo)
        "ARGS: get-setting execution.default_timeout",
        "ARGS: completion fish",
    ):
        assert f"\n{line}\n" in screen, screen
    options = [ln.split()[0] for ln in screen.splitlines() if ln.startswith("--")]
    assert options == ["--config-dir", "--help", "--no-color", "--no-pager", "--version"]
    assert "command not found" not in screen and "not an identifier" not in screen, screen
