"""Permissions: run as root, script-monitor refuses a configuration another user could
change (a config directory, YAML file, YAML directory or env_file writable by group or
others, or owned by another user): exit 2, a message naming the path, why, and the fix.
As another user it is a `validate` warning (docs/RELIABILITY.md).
"""

from __future__ import annotations

import importlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from helpers import cli

pytestmark = [
    pytest.mark.fault,
    pytest.mark.skipif(os.geteuid() != 0, reason="the refusal applies to root; CI runs as root"),
]

NOBODY = 65534


def configure(conf: Path, env_file: Path | None = None) -> None:
    script = {"name": "a", "command": "echo ran"}
    if env_file is not None:
        script["env_file"] = str(env_file)
    (conf / "config.yaml").write_text(yaml.safe_dump({"execution": {"kill_grace": 1}}))
    (conf / "scripts.yaml").write_text(yaml.safe_dump({"scripts": [script]}))


def refused(conf: Path, path: Path, why: str, fix: str) -> None:
    """Every command that loads the configuration exits 2 naming path, reason and fix."""
    for args in (["validate"], ["run", "a"], ["list"]):
        r = cli("--config-dir", str(conf), *args)
        assert "Traceback" not in r.stderr, r.stderr
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert str(path) in r.stderr and why in r.stderr and fix in r.stderr, r.stderr
        assert "ran" not in r.stdout
    assert not (conf / "logs").exists(), "a refused configuration must not run anything"


def test_safe_permissions_are_accepted(config_dir, tmp_path):
    """Pass: 0755 directories and 0644 files owned by root validate and run (exit 0);
    an env_file (it holds secrets) others may read is only warned about."""
    env = tmp_path / "app.env"
    env.write_text("X=1\n")
    configure(config_dir, env)
    os.chmod(config_dir, 0o755)
    os.chmod(env, 0o644)
    r = cli("--config-dir", str(config_dir), "validate")
    assert r.returncode == 0 and "readable by others; fix with: chmod o-r" in r.stdout
    os.chmod(env, 0o640)
    r = cli("--config-dir", str(config_dir), "validate")
    assert r.returncode == 0 and "warning" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert cli("--config-dir", str(config_dir), "run", "a").returncode == 0


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777], ids=oct)
def test_group_or_world_writable_config_dir_is_refused(config_dir, mode):
    """Pass: a config directory writable by group or others -> exit 2, path, chmod go-w."""
    configure(config_dir)
    os.chmod(config_dir, mode)
    refused(config_dir, config_dir, "writable by group or others", f"chmod go-w {config_dir}")


@pytest.mark.parametrize("name", ["scripts.yaml", "config.yaml"])
def test_writable_yaml_file_is_refused(config_dir, name):
    """Pass: a YAML file writable by others -> exit 2 naming the file and chmod go-w."""
    configure(config_dir)
    path = config_dir / name
    os.chmod(path, 0o666)
    refused(config_dir, path, "writable by group or others", f"chmod go-w {path}")


def test_writable_yaml_directory_is_refused(config_dir):
    """Pass: a world-writable scripts/ directory (anyone could add a script) -> exit 2."""
    (config_dir / "scripts").mkdir()
    (config_dir / "scripts" / "a.yaml").write_text(
        yaml.safe_dump({"scripts": [{"name": "a", "command": "echo ran"}]})
    )
    path = config_dir / "scripts"
    os.chmod(path, 0o777)
    refused(config_dir, path, "writable by group or others", f"chmod go-w {path}")


def test_writable_env_file_is_refused(config_dir, tmp_path):
    """Pass: an env_file writable by group -> exit 2 naming the env_file."""
    env = tmp_path / "app.env"
    env.write_text("X=1\n")
    os.chmod(env, 0o664)
    configure(config_dir, env)
    refused(config_dir, env, "writable by group or others", f"chmod go-w {env}")


def test_symlink_to_writable_yaml_is_refused(config_dir, tmp_path):
    """Pass: scripts.yaml as a symlink to a world-writable file is judged by its target."""
    configure(config_dir)
    target = tmp_path / "elsewhere.yaml"
    (config_dir / "scripts.yaml").rename(target)
    os.chmod(target, 0o666)
    (config_dir / "scripts.yaml").symlink_to(target)
    r = cli("--config-dir", str(config_dir), "validate")
    assert r.returncode == 2 and "writable by group or others" in r.stderr, r.stderr


@pytest.mark.parametrize("what", ["dir", "yaml", "env_file"])
def test_file_owned_by_another_user_is_refused(config_dir, tmp_path, what):
    """Pass: a config dir, YAML file or env_file owned by another uid -> exit 2, chown fix."""
    env = tmp_path / "app.env"
    env.write_text("X=1\n")
    configure(config_dir, env)
    path = {"dir": config_dir, "yaml": config_dir / "scripts.yaml", "env_file": env}[what]
    os.chown(path, NOBODY, NOBODY)
    refused(config_dir, path, f"owned by uid {NOBODY}", f"chown 0 {path}")


def _validate_as(uid: int, conf: Path) -> tuple[int, str]:
    """Run the real `validate` command in a forked child that dropped root to ``uid``.

    The interpreter lives under /root (0700), so a fresh process of another user could
    not start it; a fork already holds every module it needs.
    """
    from script_monitor import cli as cli_module

    importlib.import_module("script_monitor.commands.configure")  # before dropping root

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, run the command, report through the pipe
        code = 70
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            out = io.StringIO()
            sys.stdout = sys.stderr = out
            code = cli_module.main(["--config-dir", str(conf), "validate"])
            os.write(w, out.getvalue().encode())
        except BaseException as e:
            os.write(w, f"child failed: {e!r}".encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        text = f.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp dirs are 0700 root)."""
    d = Path(tempfile.mkdtemp(prefix="smperm-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_writable_config_is_only_a_warning_for_another_user(shared_dir):
    """Pass: as a non-root user a world-writable scripts.yaml is a `validate` warning, exit 0."""
    conf = shared_dir / "conf"
    conf.mkdir()
    configure(conf)
    for p in (conf, conf / "config.yaml", conf / "scripts.yaml"):
        os.chown(p, NOBODY, NOBODY)
    os.chmod(conf / "scripts.yaml", 0o666)
    code, text = _validate_as(NOBODY, conf)
    assert code == 0, text
    assert "warning" in text and "writable by group or others" in text, text
    assert "Configuration OK" in text


def test_unreadable_config_dir_is_a_message_not_a_crash(shared_dir):
    """Pass: a config directory the user may not read -> exit 2 naming it, no traceback."""
    conf = shared_dir / "conf"
    conf.mkdir()
    configure(conf)
    os.chmod(conf, 0o700)  # root's, closed to others
    code, text = _validate_as(NOBODY, conf)
    assert code == 2, text
    assert str(conf) in text and "Permission denied" in text, text
    assert "unexpected error" not in text
