"""Retries and dependencies end to end: real processes, real history (docs/CONFIG.md)."""

from __future__ import annotations

import itertools
import json
import signal
import time
from pathlib import Path

import pytest

from helpers import assert_clean_error, cli, events, history, make_config, popen, probe, wait_for

# A script that fails until its Nth attempt, recording each attempt's start time.
FLAKY = (
    "n=$(cat {name}.count 2>/dev/null || echo 0); n=$((n+1)); echo $n > {name}.count; "
    'echo "{name} $n $(date +%s.%N)" >> attempts.log; [ $n -ge {ok_at} ] || exit {code}'
)


def flaky(name: str, ok_at: int, code: int = 1) -> str:
    return FLAKY.format(name=name, ok_at=ok_at, code=code)


def attempts(conf: Path, name: str) -> list[float]:
    path = conf / "attempts.log"
    if not path.exists():
        return []
    return [
        float(t)
        for n, _, t in (line.split() for line in path.read_text().splitlines())
        if n == name
    ]


def newest_last(conf: Path, name: str) -> list[dict]:
    return list(reversed(history(conf, name)))


def test_a_retried_script_records_every_attempt_with_backoff(config_dir):
    make_config(
        config_dir,
        {"f": {"command": flaky("f", 3), "retries": {"count": 3, "delay": 0.3, "backoff": 2}}},
    )
    r = cli("--config-dir", str(config_dir), "run", "f")
    assert r.returncode == 0, r.stderr
    assert "Running f... ✗ FAILED, retrying in 0.3s (attempt 2/4)" in r.stdout
    assert "Running f... ✗ FAILED, retrying in 0.6s (attempt 3/4)" in r.stdout
    runs = newest_last(config_dir, "f")
    assert [(x["attempt"], x["status"]) for x in runs] == [
        (1, "failed"),
        (2, "failed"),
        (3, "success"),
    ]
    # The delays measured from the scripts' own timestamps: 0.3 s, then 0.6 s.
    t = attempts(config_dir, "f")
    gaps = [b - a for a, b in itertools.pairwise(t)]
    assert 0.3 <= gaps[0] < 0.3 + 1.0
    assert 0.6 <= gaps[1] < 0.6 + 1.0
    assert gaps[1] > gaps[0]


def test_the_exit_code_follows_the_last_attempt_only(config_dir):
    make_config(
        config_dir,
        {
            "never": {"command": "exit 3", "retries": {"count": 2, "delay": 0}},
            "once": {"command": flaky("once", 2), "retries": {"count": 1, "delay": 0}},
        },
        [{"name": "g", "execution": "serial", "scripts": ["once", "never"]}],
    )
    r = cli("--config-dir", str(config_dir), "run", "once")
    assert r.returncode == 0
    r = cli("--config-dir", str(config_dir), "run-group", "g")
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "Running g...",
        "Running once... ✓",  # the count file says 2 already: it succeeds at once
        "Running never... ✗ FAILED, retrying in 0s (attempt 2/3)",
        "Running never... ✗ FAILED, retrying in 0s (attempt 3/3)",
        "Running never... ✗ FAILED",
    ]
    assert [x["attempt"] for x in newest_last(config_dir, "never")] == [1, 2, 3]


def test_exit_codes_limit_what_is_retried_and_interrupts_never_retry(config_dir):
    make_config(
        config_dir,
        {
            "tempfail": {
                "command": flaky("tempfail", 2, 75),
                "retries": {"count": 2, "delay": 0, "exit_codes": [75]},
            },
            "hardfail": {
                "command": "exit 1",
                "retries": {"count": 2, "delay": 0, "exit_codes": [75]},
            },
            "slow": {"command": "sleep 30", "retries": {"count": 3, "delay": 0}},
        },
    )
    assert cli("--config-dir", str(config_dir), "run", "tempfail").returncode == 0
    assert len(newest_last(config_dir, "tempfail")) == 2
    assert cli("--config-dir", str(config_dir), "run", "hardfail").returncode == 1
    assert len(newest_last(config_dir, "hardfail")) == 1
    p = popen("--config-dir", str(config_dir), "run", "slow")
    assert wait_for(lambda: any(x["status"] == "running" for x in newest_last(config_dir, "slow")))
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=30)
    assert p.returncode == 130
    assert [x["status"] for x in newest_last(config_dir, "slow")] == ["interrupted"]


def test_a_timed_out_attempt_is_retried(config_dir):
    make_config(
        config_dir,
        {"t": {"command": "sleep 30", "timeout": 0.3, "retries": {"count": 1, "delay": 0}}},
    )
    r = cli("--config-dir", str(config_dir), "run", "t")
    assert r.returncode == 1
    assert "✗ FAILED (timeout), retrying in 0s (attempt 2/2)" in r.stdout
    assert [x["status"] for x in newest_last(config_dir, "t")] == ["timeout", "timeout"]


def test_a_waiting_retry_lets_another_script_use_its_slot(config_dir):
    """Cap 1 in a parallel group: while `f` waits 1.5 s for its retry, `other` runs."""
    make_config(
        config_dir,
        {
            "f": {"command": flaky("f", 2), "retries": {"count": 1, "delay": 1.5}},
            "other": probe("other", 0.3),
        },
        [
            {
                "name": "g",
                "execution": "parallel",
                "max_parallel_workers": 1,
                "scripts": ["f", "other"],
            }
        ],
    )
    r = cli("--config-dir", str(config_dir), "run-group", "g")
    assert r.returncode == 0, r.stdout + r.stderr
    first, second = attempts(config_dir, "f")
    start, end = events(config_dir)["other"]
    assert first < start and end < second, "other ran inside f's retry wait"
    assert second - first >= 1.5


def test_a_serial_group_waits_for_a_retry_and_keeps_its_order(config_dir):
    make_config(
        config_dir,
        {
            "f": {"command": flaky("f", 2), "retries": {"count": 1, "delay": 0.5}},
            "next": probe("next", 0),
        },
        [{"name": "g", "scripts": ["f", "next"]}],
    )
    assert cli("--config-dir", str(config_dir), "run-group", "g").returncode == 0
    assert events(config_dir)["next"][0] > attempts(config_dir, "f")[1]


RELEASE = {
    "name": "release",
    "execution": "parallel",
    "scripts": ["fetch_a", "fetch_b", "build", "unit_tests", "e2e_tests", "publish"],
    "depends_on": {
        "build": ["fetch_a", "fetch_b"],
        "unit_tests": ["build"],
        "e2e_tests": ["build"],
        "publish": ["unit_tests", "e2e_tests"],
    },
}


def release_scripts(build_code: int) -> dict[str, str]:
    scripts = {name: probe(name, 0.2) for name in RELEASE["scripts"]}
    scripts["build"] = probe("build", 0.1, build_code)
    return scripts


def test_dependencies_wait_for_what_they_need(config_dir):
    make_config(config_dir, release_scripts(0), [RELEASE])
    r = cli("--config-dir", str(config_dir), "run-group", "release")
    assert r.returncode == 0, r.stdout
    ev = events(config_dir)
    for name, needs in RELEASE["depends_on"].items():
        for dep in needs:
            assert ev[name][0] >= ev[dep][1], f"{name} started before {dep} ended"
    # independent scripts run side by side
    assert ev["fetch_b"][0] < ev["fetch_a"][1]
    assert ev["unit_tests"][0] < ev["e2e_tests"][1]


def test_a_failed_dependency_skips_everything_downstream(config_dir):
    """The README's example, word for word."""
    make_config(config_dir, release_scripts(1), [RELEASE])
    r = cli("--config-dir", str(config_dir), "run-group", "release")
    assert r.returncode == 1
    assert r.stdout.endswith(
        "Parallel execution summary:\n"
        "  Completed: 3/6\n"
        "  Successful: 2/6\n"
        "  Failed: build\n"
        "  Skipped: unit_tests, e2e_tests, publish\n"
    )
    assert "Skipping unit_tests (needs build)\n" in r.stdout
    assert "Skipping e2e_tests (needs build)\n" in r.stdout
    assert "Skipping publish (needs unit_tests)\n" in r.stdout
    publish, e2e = newest_last(config_dir, "publish")[-1], newest_last(config_dir, "e2e_tests")[-1]
    assert (publish["status"], publish["detail"]) == ("skipped", "needs unit_tests")
    assert (e2e["status"], e2e["detail"]) == ("skipped", "needs build")
    assert set(events(config_dir)) == {"fetch_a", "fetch_b", "build"}


def test_independent_scripts_go_on_after_a_failure(config_dir):
    make_config(
        config_dir,
        {"a": "exit 1", "b": probe("b", 0), "c": probe("c", 0), "d": probe("d", 0)},
        [
            {
                "name": "g",
                "execution": "serial",
                "scripts": ["a", "b", "c", "d"],
                "depends_on": {"c": ["a"], "d": ["b"]},
            }
        ],
    )
    r = cli("--config-dir", str(config_dir), "run-group", "g")
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "Running g...",
        "Running a... ✗ FAILED",
        "Running b... ✓",
        "Skipping c (needs a)",
        "Running d... ✓",
    ]


def test_stop_on_error_still_stops_a_group_with_dependencies(config_dir):
    make_config(
        config_dir,
        {"a": "exit 1", "b": "true", "c": "true"},
        [
            {
                "name": "g",
                "execution": "serial",
                "stop_on_error": True,
                "scripts": ["a", "b", "c"],
                "depends_on": {"c": ["a"]},
            }
        ],
    )
    r = cli("--config-dir", str(config_dir), "run-group", "g")
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "Running g...",
        "Running a... ✗ FAILED",
        "⚠️  Script a failed. Stopping group execution",
        "(b and c are skipped)",
    ]


def test_a_dependency_retried_to_success_releases_its_dependents(config_dir):
    make_config(
        config_dir,
        {
            "dep": {"command": flaky("dep", 2), "retries": {"count": 1, "delay": 0.2}},
            "after": probe("after", 0),
        },
        [
            {
                "name": "g",
                "execution": "parallel",
                "scripts": ["after", "dep"],
                "depends_on": {"after": ["dep"]},
            }
        ],
    )
    r = cli("--config-dir", str(config_dir), "run-group", "g")
    assert r.returncode == 0, r.stdout
    assert events(config_dir)["after"][0] > attempts(config_dir, "dep")[1]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (
            [
                {
                    "name": "g",
                    "execution": "parallel",
                    "scripts": ["a", "b"],
                    "depends_on": {"a": ["b"], "b": ["a"]},
                }
            ],
            "dependency cycle a -> b -> a",
        ),
        (
            [{"name": "g", "execution": "parallel", "scripts": ["a"], "depends_on": {"a": ["a"]}}],
            "dependency cycle a -> a",
        ),
        (
            [{"name": "g", "scripts": ["a", "b"], "depends_on": {"a": ["b"]}}],
            "'a' depends on 'b', which is listed after it",
        ),
        (
            [{"name": "g", "scripts": ["a"], "depends_on": {"a": ["zz"]}}],
            "depends_on names 'zz', which is not in the group",
        ),
        (
            [{"name": "g", "scripts": ["a"], "depends_on": {"b": ["a"]}}],
            "depends_on names 'b', which is not in the group",
        ),
    ],
)
def test_validate_reports_bad_dependencies_with_file_and_line(config_dir, groups, message):
    make_config(config_dir, {"a": "true", "b": "true"}, groups)
    r = cli("--config-dir", str(config_dir), "validate")
    assert_clean_error(r)
    line = next(x for x in r.stderr.splitlines() if message in x)
    assert line.startswith(f"{config_dir / 'groups.yaml'}:")
    assert int(line.split(":")[1]) >= 2
    assert not (config_dir / ".script-monitor").exists(), "nothing written"


def test_bad_retries_are_refused(config_dir):
    make_config(config_dir, {"a": {"command": "true", "retries": {"count": 1, "bogus": 2}}})
    r = cli("--config-dir", str(config_dir), "validate")
    assert_clean_error(r)
    assert "scripts.yaml:" in r.stderr and "bogus" in r.stderr


def test_graph_formats(config_dir):
    make_config(config_dir, release_scripts(0), [RELEASE])
    text = cli("--config-dir", str(config_dir), "graph", "release").stdout
    for a, b in [("fetch_a", "build"), ("build", "e2e_tests"), ("e2e_tests", "publish")]:
        assert f"  {a} -> {b}\n" in text
    dot = cli("--config-dir", str(config_dir), "graph", "release", "--format", "dot").stdout
    assert dot.startswith('digraph "release" {') and '"fetch_b" -> "build";' in dot
    mermaid = cli("--config-dir", str(config_dir), "graph", "release", "--format", "mermaid")
    assert mermaid.stdout.startswith("graph LR\n") and 'n2["build"]' in mermaid.stdout
    assert "n2 --> n3" in mermaid.stdout


def test_a_group_without_depends_on_keeps_todays_json(config_dir):
    make_config(config_dir, {"a": "true"}, [{"name": "g", "scripts": ["a"]}])
    cli("--config-dir", str(config_dir), "run-group", "g")
    run = newest_last(config_dir, "a")[0]
    assert run["attempt"] == 1 and run["host"]
    data = json.loads(cli("--config-dir", str(config_dir), "list-groups", "--json").stdout)
    assert data[0]["depends_on"] == {}


@pytest.mark.slow
def test_interrupting_a_parallel_group_waiting_for_a_retry(config_dir):
    make_config(
        config_dir,
        {"f": {"command": "exit 1", "retries": {"count": 1, "delay": 30}}, "g2": "sleep 30"},
        [{"name": "g", "execution": "parallel", "scripts": ["f", "g2"]}],
    )
    p = popen("--config-dir", str(config_dir), "run-group", "g")
    assert wait_for(
        lambda: (
            len(newest_last(config_dir, "f")) == 1
            and newest_last(config_dir, "f")[0]["status"] == "failed"
        )
    )
    started = time.monotonic()
    p.send_signal(signal.SIGTERM)
    _out, _ = p.communicate(timeout=30)
    assert p.returncode == 143
    assert time.monotonic() - started < 10, "did not wait out the 30 s retry delay"
    assert [x["status"] for x in newest_last(config_dir, "f")] == ["failed"]
    assert newest_last(config_dir, "g2")[-1]["status"] == "interrupted"
