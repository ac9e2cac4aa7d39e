"""Secrets: a secret value never appears in any file under the config directory nor in
any command's output (docs/RELIABILITY.md).

Secret values come from every source docs/CONFIG.md names: a script's env_file, the
global env_file of config.yaml, a global `secret_env` name set in the inherited
environment, and a script's `secret_env` name.  Scripts print them every way a
script can: stdout, stderr, without a final newline, split across two writes, across
a 64 KiB pipe-buffer boundary, just before a timeout kills them.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import yaml

from helpers import cli, sm

pytestmark = pytest.mark.fault


def secret(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


def every_file(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, files in os.walk(root) for f in files]


def assert_nowhere(values: list[str], root: Path, outputs: list[str], skip: tuple = ()) -> None:
    """No value in any file under ``root`` (bar the user's own ``skip``) or any output."""
    for value in values:
        for text in outputs:
            assert value not in text, f"secret {value} printed:\n{text}"
        for path in every_file(root):
            if path.name in skip:
                continue
            assert value.encode() not in path.read_bytes(), f"secret {value} stored in {path}"


@pytest.fixture
def leaky(tmp_path: Path, config_dir: Path) -> dict:
    """A configuration whose scripts print secrets from every source in every way."""
    secrets_dir = tmp_path / "secrets"  # outside the config directory, as it should be
    secrets_dir.mkdir()
    values = {
        "DB_PASSWORD": secret("db"),
        "API_TOKEN": secret("api"),
        "GLOBAL_KEY": secret("global"),
        "INHERITED_SECRET": secret("inherited"),
    }
    (secrets_dir / "app.env").write_text(
        f"DB_PASSWORD={values['DB_PASSWORD']}\nAPI_TOKEN='{values['API_TOKEN']}'\n"
    )
    (secrets_dir / "global.env").write_text(f"GLOBAL_KEY={values['GLOBAL_KEY']}\n")
    split = (
        'printf "%s" "${INHERITED_SECRET%??????????}"; sleep 0.3; '
        'printf "%s\\n" "${INHERITED_SECRET#"${INHERITED_SECRET%??????????}"}"'
    )
    boundary = (
        "python3 -c \"import os, sys; sys.stdout.write('x' * 65530 + os.environ['API_TOKEN']"
        " + 'y' * 70000 + os.environ['DB_PASSWORD'])\""
    )
    scripts = [
        {
            "name": "leak",
            "env_file": "../secrets/app.env",
            "env": {"PLAIN": "visible-value"},
            "command": (
                'echo "db=$DB_PASSWORD plain=$PLAIN"; echo "api=$API_TOKEN" >&2; '
                f'echo "global=$GLOBAL_KEY"; {split}; printf "%s" "$DB_PASSWORD"'
            ),
        },
        {"name": "boundary", "env_file": "../secrets/app.env", "command": boundary},
        {
            "name": "hang",
            "env_file": "../secrets/app.env",
            "timeout": 1,
            "command": 'echo "before timeout $DB_PASSWORD"; sleep 30',
        },
        {
            "name": "fails",
            "secret_env": ["INHERITED_SECRET"],
            "command": 'echo "$INHERITED_SECRET" >&2; exit 3',
        },
    ]
    groups = [
        {"name": "all_par", "execution": "parallel", "scripts": ["leak", "boundary", "fails"]},
    ]
    (config_dir / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "execution": {"kill_grace": 1},
                "env_file": "../secrets/global.env",
                "secret_env": ["INHERITED_SECRET"],
                "validation": {"warn_unused_scripts": False},
            }
        )
    )
    (config_dir / "scripts.yaml").write_text(yaml.safe_dump({"scripts": scripts}))
    (config_dir / "groups.yaml").write_text(yaml.safe_dump({"groups": groups}))
    return {"values": values, "env": {"INHERITED_SECRET": values["INHERITED_SECRET"]}}


@pytest.mark.slow
def test_secret_values_appear_in_no_file_and_no_output(config_dir, leaky):
    """Pass: after runs (echoed, grouped, timed out, failed) and every reading command, no
    secret value is in any stdout/stderr or any file under the config directory; the
    logs show *** where they were and the plain variable in the clear."""
    env, values = leaky["env"], list(leaky["values"].values())
    outputs = []
    for args, code in [
        (["run", "leak"], 0),
        (["run", "boundary"], 0),
        (["run", "hang"], 1),
        (["run", "fails"], 1),
        (["run-group", "all_par"], 1),
        (["run-all"], 1),
    ]:
        r = sm(config_dir, *args, env=env)
        assert r.returncode == code, (args, r.stderr)
        outputs += [r.stdout, r.stderr]
    for args in [
        ["list"],
        ["list", "--json"],
        ["list-groups", "--json"],
        ["show-config"],
        ["show-config", "--json"],
        ["validate"],
        *[["history", n] for n in ("leak", "boundary", "hang", "fails")],
        *[["history", n, "--json"] for n in ("leak", "boundary", "hang", "fails")],
        *[["logs", n] for n in ("leak", "boundary", "hang", "fails")],
        *[["logs", "--raw", n] for n in ("leak", "boundary", "hang", "fails")],
    ]:
        r = sm(config_dir, *args, env=env)
        assert r.returncode == 0, (args, r.stderr)
        assert "Traceback" not in r.stderr
        outputs += [r.stdout, r.stderr]
    assert_nowhere(values, config_dir, outputs)
    # The secrets really were printed, and only they were masked.
    leak_log = sm(config_dir, "logs", "--raw", "leak", env=env).stdout
    assert "db=*** plain=visible-value" in leak_log
    assert "api=***" in leak_log and "global=***" in leak_log
    assert leak_log.count("***") == 5
    boundary_log = sm(config_dir, "logs", "--raw", "boundary", env=env).stdout
    assert "x" * 65530 + "***" + "y" * 70000 + "***" in boundary_log
    assert "before timeout ***" in sm(config_dir, "logs", "hang", env=env).stdout


def test_secret_env_declared_in_yaml_is_masked_in_show_config(config_dir):
    """Pass: a variable named in secret_env whose value sits in scripts.yaml shows as *** in
    show-config (YAML and JSON) and in the run's log; the value is in no other file."""
    value = secret("inline")
    (config_dir / "scripts.yaml").write_text(
        yaml.safe_dump(
            {
                "scripts": [
                    {
                        "name": "s",
                        "env": {"INLINE": value, "OTHER": "shown"},
                        "secret_env": ["INLINE"],
                        "command": 'echo "inline=$INLINE"',
                    }
                ]
            }
        )
    )
    outputs = []
    for args in (["run", "s"], ["show-config"], ["show-config", "--json"], ["logs", "s"]):
        r = cli("--config-dir", str(config_dir), *args)
        assert r.returncode == 0, r.stderr
        outputs += [r.stdout, r.stderr]
    assert "inline=***" in outputs[0]
    assert "***" in outputs[2] and "shown" in outputs[2]
    assert_nowhere([value], config_dir, outputs, skip=("scripts.yaml",))


def test_leftover_of_a_secret_script_keeps_running_and_logging(config_dir, tmp_path):
    """Pass: a background job left by a script with an env_file survives script-monitor's exit,
    finishes its work and its output (masked) reaches the log, as without secrets."""
    done = tmp_path / "done"
    (tmp_path / "app.env").write_text("TOKEN=abcdef123456\n")
    job = tmp_path / "job.py"
    pidfile = tmp_path / "job.pid"
    job.write_text(
        "import os, time\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "for i in range(3):\n"
        "    print('tick', i, os.environ['TOKEN'], flush=True)\n"
        "    time.sleep(1)\n"
        f"open({str(done)!r}, 'w').write('ok')\n"
    )
    (config_dir / "scripts.yaml").write_text(
        yaml.safe_dump(
            {
                "scripts": [
                    {
                        "name": "bg",
                        "env_file": str(tmp_path / "app.env"),
                        "command": f"python3 {job} & echo started",
                    }
                ]
            }
        )
    )
    r = cli("--config-dir", str(config_dir), "run", "bg")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 20
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    while alive(int(pidfile.read_text())) and not done.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert done.exists(), "the background job was killed"
    log_file = next((config_dir / "logs" / "bg").iterdir())
    while "tick 2 ***" not in log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)  # the relay copies the last line a moment after the job wrote it
    assert "tick 2 ***" in log_file.read_text()
