"""Output alerts (docs/NOTIFICATIONS.md): the line matcher on its own, then the real CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import MAIN, cli, cli_json, write
from script_monitor.alerts import KEEP, LINE_LIMIT, Matcher
from script_monitor.config import Alert
from test_notify import Receiver, setup


def run_matcher(patterns: list[str], chunks: list[bytes], **kw) -> Matcher:
    m = Matcher([Alert(pattern=p, **kw) for p in patterns])
    for c in chunks:
        m.feed(c)
    m.close()
    return m


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# ---------------------------------------------------------------- the matcher


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_lines_are_found_whatever_the_chunks(size):
    data = b"ok\nan ERROR here\n\nfine\nERROR again\nlast ERROR without newline"
    m = run_matcher(["ERROR"], split_every(data, size))
    assert [(n, t) for n, t, *_ in m.matches] == [
        (2, "an ERROR here"),
        (5, "ERROR again"),
        (6, "last ERROR without newline"),
    ]
    assert m.lines == 6


@pytest.mark.parametrize("size", [5, 4096])
def test_anchors_mean_a_line_start_and_end(size):
    data = b"x ERROR\nERROR x\nERROR\n  ERROR  \n"
    m = run_matcher(["^ERROR$", r"\AERROR", r"ERROR\Z"], split_every(data, size))
    assert sorted((n, p) for n, _, _, p, _ in m.matches) == [
        (3, "^ERROR$"),
        (2, r"\AERROR"),
        (3, r"\AERROR"),
        (1, r"ERROR\Z"),
        (3, r"ERROR\Z"),
    ] or sorted((n, p) for n, _, _, p, _ in m.matches) == sorted(
        [(3, "^ERROR$"), (2, r"\AERROR"), (3, r"\AERROR"), (1, r"ERROR\Z"), (3, r"ERROR\Z")]
    )


def test_a_pattern_never_matches_across_two_lines():
    m = run_matcher([r"a\s+b", "x[^y]*z"], [b"1 a\n  b 2\nx\nz\nno a b yes\n"])
    assert [(n, p) for n, _, _, p, _ in m.matches] == [(5, r"a\s+b")]


def test_undecodable_bytes_are_replaced_not_fatal():
    m = run_matcher(["ERR"], [b"\xff\xfe ERR \xc3\n", b"\xc3\xa9t\xc3", b"\xa9 ERR\n"])
    assert [(n, t) for n, t, *_ in m.matches] == [(1, "\ufffd\ufffd ERR \ufffd"), (2, "été ERR")]


def test_a_line_longer_than_the_limit_is_matched_on_its_first_64_kib():
    long_hit = b"ERROR" + b"x" * (3 * LINE_LIMIT) + b"\n"
    long_late = b"y" * (LINE_LIMIT + 10) + b"ERROR\n"
    data = long_hit + long_late + b"ERROR short\n"
    for size in (1000, 65536, len(data)):
        m = run_matcher(["ERROR"], split_every(data, size))
        assert [n for n, *_ in m.matches] == [1, 3], size
        assert len(m.matches[0][1]) <= 1000  # the recorded text is cut
        assert m.lines == 3


def test_at_most_keep_matches_are_recorded_the_rest_counted():
    data = b"ERROR\n" * (KEEP + 250)
    m = run_matcher(["ERROR"], split_every(data, 4096))
    assert len(m.matches) == KEEP and m.dropped == 250
    assert m.matches[-1][0] == KEEP


def test_several_patterns_each_record_their_severity_and_fail():
    m = Matcher(
        [
            Alert(pattern="WARN", severity="warning"),
            Alert(pattern="FATAL", severity="critical", fail=True),
        ]
    )
    m.feed(b"WARN one\nFATAL two\nWARN FATAL three\n")
    m.close()
    assert [(n, s, f) for n, _, s, _, f in m.matches] == [
        (1, "warning", False),
        (2, "critical", True),
        (3, "warning", False),
        (3, "critical", True),
    ]
    assert m.failed == (2, "FATAL")


# ---------------------------------------------------------------- the CLI


def test_alerts_are_recorded_and_fail_true_fails_a_run_that_exited_0(tmp_path):
    d = tmp_path / "c"
    write(
        d,
        "scripts.yaml",
        r"""
        scripts:
          - name: soft
            command: printf 'start\nWARNING low disk\nend\n'
            alerts:
              - pattern: WARNING
          - name: hard
            command: >-
              printf 'start\nCRITICAL: corrupted\n'; exit 0
            alerts:
              - pattern: '^CRITICAL'
                severity: critical
                fail: true
        """,
    )
    assert cli("--config-dir", str(d), "run", "soft").returncode == 0
    r = cli("--config-dir", str(d), "run", "hard")
    assert r.returncode == 1
    assert "✗ FAILED (exit 0" in r.stdout
    run = cli_json("--config-dir", str(d), "history", "hard", "--json")[0]
    assert run["status"] == "failed" and run["exit_code"] == 0
    assert "output alert '^CRITICAL' matched line 2 (fail: true)" in run["detail"]
    found = cli_json("--config-dir", str(d), "alerts", "--json")
    assert [(a["script"], a["line_number"], a["line"], a["severity"]) for a in found] == [
        ("hard", 2, "CRITICAL: corrupted", "critical"),
        ("soft", 2, "WARNING low disk", "warning"),
    ]
    assert found[0]["run"] == run["id"]
    only = cli_json("--config-dir", str(d), "alerts", "soft", "--json")
    assert [a["script"] for a in only] == ["soft"]
    plain = cli("--config-dir", str(d), "alerts")
    assert "CRITICAL: corrupted" in plain.stdout
    log = cli("--config-dir", str(d), "logs", "hard").stdout
    assert "CRITICAL: corrupted" in log and "finished: failed, exit code 0" in log


def test_patterns_see_masked_output(tmp_path):
    d = tmp_path / "c"
    write(
        d,
        "scripts.yaml",
        r"""
        scripts:
          - name: s
            command: echo "key=$KEY"
            env_file: s.env
            alerts:
              - pattern: 'key='
        """,
    )
    (d / "s.env").write_text("KEY=hunter2-secret\n")
    (d / "s.env").chmod(0o600)
    assert cli("--config-dir", str(d), "run", "s").returncode == 0
    [a] = cli_json("--config-dir", str(d), "alerts", "--json")
    assert a["line"] == "key=***"


def test_output_event_sends_once_with_at_most_ten_lines(tmp_path):
    receiver = Receiver()
    try:
        d = setup(
            tmp_path / "c",
            [receiver.url],
            """
            scripts:
              - name: noisy
                command: for i in $(seq 1 25); do echo "ERROR number $i"; done
                alerts:
                  - pattern: ERROR
            """,
            on="[failure, output]",
        )
        assert cli("--config-dir", str(d), "run", "noisy").returncode == 0
        assert len(receiver.posts) == 1
        post = receiver.posts[0]
        assert " noisy OUTPUT ALERT on " in post["title"]
        body = post["message"]
        assert "ERROR number 10" in body and "ERROR number 11" not in body
        assert "15 more matching lines" in body
    finally:
        receiver.close()


PEAK_RSS = """
import os, resource, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


@pytest.mark.slow
def test_150_mb_of_output_one_alert_and_flat_memory(tmp_path):
    """The peak RSS of the script-monitor process (ru_maxrss from wait4 in a small
    wrapper: the child's figure before exec is the wrapper's, ~10 MiB)."""
    d = tmp_path / "c"
    write(
        d,
        "scripts.yaml",
        """
        scripts:
          - name: big
            command: >-
              yes 'an ordinary line of output, nothing to see here' | head -c 75000000;
              echo 'ERROR: the one line that matters';
              yes 'another ordinary line of output, and more of it' | head -c 75000000
            timeout: 0
            log_limit: {type: count, value: 1}
            alerts:
              - pattern: 'ERROR|CRITICAL'
        """,
    )
    r = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(MAIN), "--config-dir", str(d), "run", "-q", "big"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    code, peak_kib = map(int, r.stdout.split()[-2:])
    assert code == 0, r.stderr
    found = cli_json("--config-dir", str(d), "alerts", "--json")
    assert len(found) == 1
    assert found[0]["line"] == "ERROR: the one line that matters"
    line = len("an ordinary line of output, nothing to see here\n")
    assert found[0]["line_number"] == 75_000_000 // line + 1
    print(f"peak RSS {peak_kib / 1024:.1f} MiB")
    assert peak_kib < 45 * 1024, peak_kib
    log = d / "logs" / "big"
    assert sum(p.stat().st_size for p in log.iterdir()) > 150_000_000
