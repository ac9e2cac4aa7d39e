"""The pager: `logs` and `history` on a terminal go through $PAGER when longer than the
screen; never when piped, never with --no-pager, never for `logs --follow`.

Every test runs the real CLI; "a terminal" is a pseudo-terminal of a given size, and the
pager is a fake that records what it was given (and its LESS variable) to a file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from helpers import MAIN, cli, make_config

FAKE_PAGER = """\
#!/bin/sh
# records its input and environment, as a pager that shows everything would read it
printf '%s' "${LESS-unset}" > "$PAGER_RECORD.less"
cat > "$PAGER_RECORD"
echo "FAKE PAGER SHOWED $(wc -l < "$PAGER_RECORD") LINES"
"""

QUITTER = """\
#!/bin/sh
# reads one line and quits, as a user pressing q at once
head -n 1 > "$PAGER_RECORD"
"""


def in_pty(
    *args: str, env: dict, rows: int = 24, columns: int = 80, timeout: float = 30
) -> tuple[int, str]:
    """Run ``python main.py ARGS`` with stdin/stdout/stderr on a pseudo-terminal."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    full = {k: v for k, v in {**os.environ, **env}.items() if v is not None}  # None: unset
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=full,
        start_new_session=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError as e:  # EIO: every holder of the terminal is gone
                    if e.errno != errno.EIO:
                        raise
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


@pytest.fixture
def setup(tmp_path: Path):
    """A config with a script `many` printing 100 numbered lines and `few` printing 2."""
    conf = make_config(
        tmp_path / "conf",
        {"many": "for i in $(seq 1 100); do echo line-$i; done", "few": "echo one; echo two"},
    )
    pager = tmp_path / "fake-pager"
    pager.write_text(FAKE_PAGER)
    pager.chmod(0o755)
    record = tmp_path / "record"
    env = {"PAGER": str(pager), "PAGER_RECORD": str(record), "LESS": None}
    env["SCRIPT_MONITOR_PAGER"] = None
    for name in ("many", "few"):
        assert cli("--config-dir", str(conf), "run", name, "-q").returncode == 0
    return conf, env, record


def test_a_long_log_on_a_terminal_goes_through_the_pager(setup):
    conf, env, record = setup
    code, screen = in_pty("--config-dir", str(conf), "logs", "many", env=env)
    assert code == 0, screen
    given = record.read_text()
    assert [f"line-{i}" for i in range(1, 101)] == [
        ln for ln in given.splitlines() if ln.startswith("line-")
    ]
    assert "FAKE PAGER SHOWED" in screen
    assert "line-50" not in screen  # only the pager wrote to the terminal
    assert Path(f"{record}.less").read_text() == "FRX"  # as git sets it when LESS is unset


def test_short_output_is_printed_without_a_pager(setup):
    conf, env, record = setup
    code, screen = in_pty("--config-dir", str(conf), "logs", "few", env=env)
    assert code == 0
    assert "one\ntwo\n" in screen
    assert not record.exists()


def test_the_screen_height_decides(setup):
    """`history few` is a header and one row: paged on a 2-row terminal, not on a 3-row one."""
    conf, env, record = setup
    code, screen = in_pty("--config-dir", str(conf), "history", "few", env=env, rows=3)
    assert code == 0 and not record.exists()
    assert "RUN" in screen and "success" in screen
    code, screen = in_pty("--config-dir", str(conf), "history", "few", env=env, rows=2)
    assert code == 0
    lines = re.sub(r"\x1b\[[0-9;]*m", "", record.read_text()).splitlines()  # rich's bold
    assert lines[0].split()[:3] == ["RUN", "STARTED", "DURATION"]
    assert "success" in lines[1] and "FAKE PAGER SHOWED 2 LINES" in screen


def test_long_lines_count_as_the_rows_they_wrap_to(setup, tmp_path):
    conf, env, record = setup
    make_config(conf, {"wide": "printf '%0300d\\n' 0"})  # one line of 300 characters
    assert cli("--config-dir", str(conf), "run", "wide", "-q").returncode == 0
    code, _ = in_pty("--config-dir", str(conf), "logs", "wide", env=env, rows=4, columns=100)
    assert code == 0 and record.exists()  # the header lines and 3 rows of the wide one
    record.unlink()
    code, _ = in_pty("--config-dir", str(conf), "logs", "wide", env=env, rows=40, columns=400)
    assert code == 0 and not record.exists()


def test_history_json_on_a_terminal_is_paged_whole(setup):
    import json

    conf, env, record = setup
    code, _ = in_pty("--config-dir", str(conf), "history", "many", "--json", env=env, rows=5)
    assert code == 0
    assert json.loads(record.read_text())[0]["script"] == "many"


@pytest.mark.parametrize(
    "argv",
    [
        ["--no-pager", "logs", "many"],
        ["logs", "many", "--no-pager"],
        ["logs", "many", "--follow"],
        ["history", "many", "--no-pager"],
    ],
)
def test_no_pager_and_follow_print_directly(setup, argv):
    conf, env, record = setup
    code, screen = in_pty("--config-dir", str(conf), *argv, env=env, rows=5)
    assert code == 0, screen
    assert not record.exists()
    assert ("line-100" if argv[1:2] != ["history"] and "logs" in argv else "success") in screen


def test_piped_output_is_never_paged(setup):
    conf, env, record = setup
    env = {k: v for k, v in env.items() if v is not None}
    r = cli("--config-dir", str(conf), "logs", "many", env=env)
    assert r.returncode == 0 and "line-100" in r.stdout
    r = cli("--config-dir", str(conf), "history", "many", env=env)
    assert r.returncode == 0 and "success" in r.stdout
    assert not record.exists()


@pytest.mark.parametrize("value", ["", "cat"])
def test_an_empty_or_cat_pager_means_none(setup, value):
    conf, env, record = setup
    code, screen = in_pty("--config-dir", str(conf), "logs", "many", env={**env, "PAGER": value})
    assert code == 0 and "line-1\n" in screen and "line-100" in screen
    assert not record.exists()


def test_script_monitor_pager_wins_over_pager(setup):
    conf, env, record = setup
    env = {**env, "SCRIPT_MONITOR_PAGER": env["PAGER"], "PAGER": "/nonexistent/pager"}
    code, screen = in_pty("--config-dir", str(conf), "logs", "many", env=env)
    assert code == 0 and "line-100" in record.read_text()
    assert "cannot run the pager" not in screen


def test_the_default_pager_is_less_with_FRX(setup, tmp_path):
    conf, env, record = setup
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "less").write_text(FAKE_PAGER)
    (bin_dir / "less").chmod(0o755)
    env = {**env, "PAGER": None, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    code, _ = in_pty("--config-dir", str(conf), "logs", "many", env=env)
    assert code == 0 and "line-100" in record.read_text()
    assert Path(f"{record}.less").read_text() == "FRX"


def test_a_users_less_setting_is_kept(setup):
    conf, env, record = setup
    code, _ = in_pty("--config-dir", str(conf), "logs", "many", env={**env, "LESS": "-S"})
    assert code == 0 and Path(f"{record}.less").read_text() == "-S"


def test_quitting_the_pager_early_ends_the_command_quietly(setup, tmp_path):
    conf, env, record = setup
    make_config(conf, {"huge": "seq 1 200000"})  # far more than a pipe holds
    assert cli("--config-dir", str(conf), "run", "huge", "-q").returncode == 0
    quitter = tmp_path / "quitter"
    quitter.write_text(QUITTER)
    quitter.chmod(0o755)
    start = time.monotonic()
    code, screen = in_pty(
        "--config-dir", str(conf), "logs", "huge", env={**env, "PAGER": str(quitter)}
    )
    assert code == 0, screen
    assert "Traceback" not in screen and "Exception" not in screen
    assert record.read_text().strip()  # it was given the start
    assert time.monotonic() - start < 20


def test_a_pager_that_is_not_there_falls_back_to_the_terminal(setup):
    conf, env, _ = setup
    env = {**env, "PAGER": "/nonexistent/pager -x"}
    code, screen = in_pty("--config-dir", str(conf), "logs", "many", env=env)
    assert code == 0
    assert "cannot run the pager '/nonexistent/pager -x'" in screen
    assert "line-1\n" in screen and "line-100" in screen
