"""export-systemd and export-cron: content, files, refusals, and systemd's own reading."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers import cli, write
from script_monitor import cron


@pytest.fixture
def conf(config_dir: Path) -> Path:
    write(
        config_dir,
        "scripts.yaml",
        """
        scripts:
          - name: hello
            command: echo hello
        """,
    )
    write(
        config_dir,
        "groups.yaml",
        """
        groups:
          - name: nightly
            schedule: "30 2 * * *"
            timezone: Europe/Berlin
            scripts: [hello]
          - name: office
            schedule: "*/15 9-17 * * mon-fri"
            scripts: [hello]
          - name: manual
            scripts: [hello]
        """,
    )
    return config_dir


def _unit(text: str, name: str) -> str:
    """One file's text out of the combined stdout of export-systemd."""
    parts = re.split(r"^# ---- (\S+)\n", text, flags=re.M)
    files = dict(zip(parts[1::2], parts[2::2], strict=True))
    return files[name]


def test_export_systemd_prints_service_and_timer(conf):
    r = cli("--config-dir", str(conf), "export-systemd", "nightly")
    assert r.returncode == 0, r.stderr
    service = _unit(r.stdout, "script-monitor-nightly.service")
    timer = _unit(r.stdout, "script-monitor-nightly.timer")
    assert "Type=oneshot" in service
    exec_start = re.search(r"^ExecStart=(.*)$", service, re.M).group(1).split()
    assert Path(exec_start[0]).is_absolute() and Path(exec_start[0]).exists()
    assert exec_start[-7:] == [
        "--config-dir",
        str(conf),
        "run-group",
        "--trigger",
        "schedule",
        "--",
        "nightly",
    ]
    assert f"WorkingDirectory={conf}" in service
    assert "OnCalendar=*-*-* 02:30:00 Europe/Berlin" in timer
    assert "Persistent=true" in timer
    assert "Unit=script-monitor-nightly.service" in timer
    assert "WantedBy=timers.target" in timer
    # DST gap days get an explicit line at the end of the gap (what the scheduler does)
    assert re.search(r"^OnCalendar=\d{4}-03-\d\d 03:00:00 Europe/Berlin$", timer, re.M)


def test_export_systemd_runs_the_group_it_names(conf):
    """The ExecStart line really runs the group against the exported config dir."""
    r = cli("--config-dir", str(conf), "export-systemd", "nightly")
    service = _unit(r.stdout, "script-monitor-nightly.service")
    argv = re.search(r"^ExecStart=(.*)$", service, re.M).group(1).split()
    done = subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Running hello... ✓" in done.stdout


def test_export_systemd_output_dir_and_user(conf, tmp_path):
    out = tmp_path / "units"
    r = cli("--config-dir", str(conf), "export-systemd", "office", "--user", "--output", str(out))
    assert r.returncode == 0, r.stderr
    service = (out / "script-monitor-office.service").read_text()
    timer = (out / "script-monitor-office.timer").read_text()
    assert "systemctl --user" in service and "User=" not in service
    assert "OnCalendar=Mon..Fri *-*-* 09..17:00,15,30,45:00\n" in timer  # local: no zone
    assert str(out / "script-monitor-office.timer") in r.stdout


def test_export_cron_line(conf, tmp_path):
    r = cli("--config-dir", str(conf), "export-cron", "nightly")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith("#")]
    assert lines[0] == "CRON_TZ=Europe/Berlin"
    fields = lines[1].split()
    assert fields[:5] == ["30", "2", "*", "*", "*"]
    assert Path(fields[5]).is_absolute()
    assert fields[-7:] == [
        "--config-dir",
        str(conf),
        "run-group",
        "--trigger",
        "schedule",
        "--",
        "nightly",
    ]
    r = cli("--config-dir", str(conf), "export-cron", "office", "--output", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "c" / "script-monitor-office.cron").read_text()
    assert "CRON_TZ" not in text
    assert re.search(
        r"^\*/15 9-17 \* \* mon-fri /\S+ .*run-group --trigger schedule -- office$", text, re.M
    )


def test_export_cron_line_runs_under_a_shell(conf):
    r = cli("--config-dir", str(conf), "export-cron", "office")
    line = next(ln for ln in r.stdout.splitlines() if ln and not ln.startswith("#"))
    command = line.split(" ", 5)[5]
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Running hello... ✓" in done.stdout


@pytest.mark.parametrize("verb", ["export-systemd", "export-cron"])
def test_exports_refuse_a_group_without_schedule(conf, verb):
    r = cli("--config-dir", str(conf), verb, "manual")
    assert r.returncode == 2
    assert "group 'manual' has no schedule" in r.stderr
    assert r.stdout == ""
    r = cli("--config-dir", str(conf), verb, "nope")
    assert r.returncode == 2 and "unknown group 'nope'" in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------- systemd agrees

SYSTEMD_CASES = [
    ("* * * * *", "UTC", "2030-01-01 00:00"),
    ("*/7 * * * *", "UTC", "2030-01-01 00:50"),
    ("0 * * * *", "UTC", "2030-01-01 00:00"),
    ("30 2 * * *", "UTC", "2030-01-01 00:00"),
    ("@weekly", "UTC", "2030-01-01 00:00"),
    ("@monthly", "UTC", "2030-01-01 00:00"),
    ("@yearly", "UTC", "2030-01-01 00:00"),
    ("0 0 * * 7", "UTC", "2030-01-01 00:00"),
    ("0 0 * * 5-7", "UTC", "2030-01-01 00:00"),
    ("0 9-17/2 * * mon-fri", "UTC", "2030-01-01 00:00"),
    ("0 0 1,15 * 5", "UTC", "2030-01-01 00:00"),
    ("0 0 13 * fri", "UTC", "2030-01-01 00:00"),
    ("0 0 */2 * 1", "UTC", "2030-01-01 00:00"),
    ("0 0 10 * */3", "UTC", "2030-01-01 00:00"),
    ("0 0 31 * *", "UTC", "2030-01-01 00:00"),
    ("0 0 29 2 *", "UTC", "2027-01-01 00:00"),
    ("0 0 29 2 mon", "UTC", "2028-02-01 00:00"),
    ("15,45 */6 1-7 jan,jul *", "UTC", "2030-01-01 00:00"),
    ("0 0 1 */3 *", "UTC", "2030-01-01 00:00"),
    ("30 2 * * *", "Europe/Berlin", "2030-03-25 00:00"),
    ("0 2 * * 0", "Europe/Berlin", "2030-03-01 00:00"),
    ("*/30 * * * *", "Europe/Berlin", "2030-03-31 00:00"),
    ("30 2 * * *", "Europe/Berlin", "2030-10-20 00:00"),
    ("30 1 * * *", "America/New_York", "2030-11-01 00:00"),
    ("30 2 * * *", "America/New_York", "2030-03-05 00:00"),
]
ITERATIONS = 12


def _systemd_times(specs: list[str], base: datetime) -> list[float]:
    """Every elapse systemd-analyze predicts for the given OnCalendar values, merged."""
    done = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            f"--base-time=@{int(base.timestamp())}",
            f"--iterations={ITERATIONS}",
            *specs,
        ],
        capture_output=True,
        text=True,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin", "SYSTEMD_COLORS": "0"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", done.stdout)
    stamps = {datetime.fromisoformat(t).replace(tzinfo=UTC).timestamp() for t in found}
    return sorted(stamps)[:ITERATIONS]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed here (apt-get install systemd provides it)",
)
@pytest.mark.parametrize(("expr", "zone", "start"), SYSTEMD_CASES)
def test_systemd_calendar_fires_when_cron_does(expr, zone, start):
    tz = cron.resolve_timezone(zone)
    base = datetime.fromisoformat(start).replace(tzinfo=tz)
    specs = cron.to_oncalendar(expr, zone)
    specs += [
        f"{g.strftime('%Y-%m-%d %H:%M:%S')} {zone}"
        for g in cron.dst_gap_fires(expr, tz, base, years=3)
    ]
    ours = [t.timestamp() for t in cron.next_fires(expr, tz, base, ITERATIONS)]
    assert _systemd_times(specs, base) == ours


def test_cli_timer_uses_the_checked_conversion(conf):
    """What export-systemd writes is exactly what the comparison above checked."""
    r = cli("--config-dir", str(conf), "export-systemd", "office")
    timer = _unit(r.stdout, "script-monitor-office.timer")
    lines = re.findall(r"^OnCalendar=(.*)$", timer, re.M)
    assert lines == cron.to_oncalendar("*/15 9-17 * * mon-fri", None)
    assert "AccuracySec=1s" in timer  # systemd's default would allow a minute late


def test_exports_quote_a_config_dir_with_spaces(tmp_path):
    conf = tmp_path / "my conf"
    write(conf, "scripts.yaml", "scripts:\n  - name: hello\n    command: echo hello\n")
    write(
        conf,
        "groups.yaml",
        'groups:\n  - name: g\n    schedule: "@daily"\n    scripts: [hello]\n',
    )
    r = cli("--config-dir", str(conf), "export-systemd", "g")
    service = _unit(r.stdout, "script-monitor-g.service")
    line = re.search(r"^ExecStart=(.*)$", service, re.M).group(1)
    assert f'"{conf}"' in line
    done = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Running hello... ✓" in done.stdout, done.stderr
    assert f"WorkingDirectory={conf}\n" in service
    r = cli("--config-dir", str(conf), "export-cron", "g")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("0 0 * * * "))
    done = subprocess.run(["/bin/sh", "-c", line[len("0 0 * * * ") :]], capture_output=True)
    assert done.returncode == 0 and b"Running hello" in done.stdout
